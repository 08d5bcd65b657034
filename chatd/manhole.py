"""The SSH manhole: a Python prompt inside the running server, for whoever holds a key.

Off unless `--manhole ENDPOINT` is given. Logins are by SSH public key only,
checked against `--manhole-keys` (authorized_keys format, read once at start;
any user name at the ssh prompt). The prompt's namespace holds the functions of
`AdminAPI`, one per admin command declared in chatd/registry.py: they run the
same chatd.moderation code as the chat commands, with actor 'manhole' in the
audit log, and print their readable result when it arrives (Twisted's manhole
shows what a Deferred fires with).
"""

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch import manhole, manhole_ssh
from twisted.conch.checkers import IAuthorizedKeysDB, SSHPublicKeyChecker, readAuthorizedKeyFile
from twisted.conch.insults import insults
from twisted.conch.ssh import keys
from twisted.cred import portal
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer, endpoints
from twisted.logger import Logger
from zope.interface import implementer

from chatd.auth import ChatError
from chatd.engines import SqliteEngine, engine_from_url
from chatd.limits import LogThrottle
from chatd.moderation import MANHOLE
from chatd.registry import ACTIONS, COMMAND_LIST, manhole_help

log = Logger()

HOST_KEY_NAME = "chatd-manhole-host-key"
LOOPBACK = {"tcp": "127.0.0.1", "tcp6": "\\:\\:1"}     # the default interface, per endpoint type


class Report(str):
    """A result that the manhole prompt shows as plain lines, not as a quoted repr."""

    def __repr__(self):
        return str(self).replace("\n", "\r\n")


class AdminAPI:
    """The manhole's namespace: one function per admin command of chatd/registry.py.

    Each binds its arguments like a Python call (positionally in the declared
    order, or by name), checks them as the protocol does, and runs the same
    chatd.moderation code with the actor 'manhole'.
    """

    def __init__(self, moderation):
        self.moderation = moderation

    def namespace(self):
        namespace = {c.key: self._function(c) for c in COMMAND_LIST if c.key is not None}
        namespace.update(help=self.help, server=self.moderation.server)
        return namespace

    @staticmethod
    def help():
        return Report(manhole_help() + "\n" + "server".ljust(48) + "the running ChatServer")

    def _function(self, command):
        def function(*args, **kwargs):
            try:
                arguments = bind(command, args, kwargs)
            except ChatError as e:
                return Report(f"Refused: {e}")
            return self._show(self.moderation.run, MANHOLE, command, arguments)
        function.__name__ = command.key
        function.__doc__ = f"{command.signature()}: {command.help}"
        return function

    @staticmethod
    def _show(function, *args, **kwargs):
        """The result's text, at once if ready, else a Deferred the prompt prints when it fires."""
        d = defer.maybeDeferred(function, *args, **kwargs)

        def refused(failure):
            failure.trap(ChatError)
            return Report(f"Refused: {failure.getErrorMessage()}")
        d.addCallbacks(lambda result: Report(result["result"]), refused)
        done = []
        d.addBoth(lambda result: done.append(result) or result)
        return done[0] if done and isinstance(done[0], Report) else d


def bind(command, args, kwargs):
    """A manhole call's arguments, checked by the command's structured action."""
    names = [p.name for p in command.parameters]
    if len(args) > len(names):
        raise ChatError(f"{command.signature()} takes at most {len(names)} arguments.")
    given = dict(zip(names, args))
    twice = sorted(set(given) & set(kwargs))
    if twice:
        raise ChatError(f"{twice[0]!r} is given twice: {command.signature()}.")
    given.update(kwargs)
    value = ""
    if command.value.name:
        if command.value.name not in given:
            raise ChatError(f"Missing argument {command.value.name!r}: {command.signature()}.")
        value = given.pop(command.value.name)
    return command.own(ACTIONS[command.key].bind(value, given))


def check_keys_file_mode(path):
    """Raise ValueError if group or others may write the keys file: they could add a key."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ValueError(
            f"{path} can be written by its group or by others (mode "
            f"{mode:04o}), and whoever adds a key there runs code in the server; "
            f"make it writable by its owner only (chmod go-w {path}).")


@implementer(IAuthorizedKeysDB)
class AuthorizedKeys:
    """The keys of one authorized_keys file, valid for any user name."""

    def __init__(self, path):
        check_keys_file_mode(path)
        with open(path, "rb") as lines:
            self.keys = list(readAuthorizedKeyFile(lines))
        if not self.keys:
            raise ValueError(f"{path} holds no SSH public key; the manhole would admit nobody")

    def getAuthorizedKeys(self, username):
        return self.keys


class LoggedKeyChecker(SSHPublicKeyChecker):
    """The public-key checker, logging refused keys at warning level (one line a minute)."""

    def __init__(self, keydb, clock):
        super().__init__(keydb)
        self.refusals = LogThrottle(clock)

    def requestAvatarId(self, credentials):
        d = super().requestAvatarId(credentials)

        def refused(failure):
            failure.trap(UnauthorizedLogin)
            allowed, held = self.refusals.allow("manhole")
            if allowed:
                try:
                    fingerprint = keys.Key.fromString(credentials.blob).fingerprint(
                        keys.FingerprintFormats.SHA256_BASE64)
                except keys.BadKeyError:
                    fingerprint = "an unreadable key"
                log.warn("manhole: refused an SSH login as {user!r} with key SHA256:{fingerprint}, "
                         "which is not in --manhole-keys{held}",
                         user=credentials.username.decode("utf-8", "replace"),
                         fingerprint=fingerprint,
                         held=f" ({held} more refused since the last such line)" if held else "")
            return failure
        return d.addErrback(refused)


def loopback_by_default(description):
    """A tcp:/tcp6: endpoint without `interface=` listens on loopback, not on every address."""
    kind = description.split(":", 1)[0]
    if kind in LOOPBACK and "interface=" not in description:
        return f"{description}:interface={LOOPBACK[kind]}"
    return description


def host_key_path(config):
    """--manhole-host-key, else a file next to the SQLite database (or in the working directory)."""
    if config.manhole_host_key:
        return Path(config.manhole_host_key)
    engine = engine_from_url(config.database)
    if isinstance(engine, SqliteEngine):
        return Path(engine.path).resolve().parent / HOST_KEY_NAME
    return Path.cwd() / HOST_KEY_NAME


def load_or_create_host_key(path):
    """The server's SSH host key; an ed25519 key is generated (mode 0600) at first start."""
    if not path.exists():
        private = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(private)
        log.info("generated the manhole's SSH host key in {path}", path=str(path))
    return keys.Key.fromFile(str(path))


def listen_manhole(server):
    """Start the SSH manhole on config.manhole; Deferred firing with the listening port."""
    config = server.config
    if not config.manhole_keys:
        raise ValueError("--manhole needs --manhole-keys FILE (authorized_keys format)")
    api = AdminAPI(server.moderation)
    realm = manhole_ssh.TerminalRealm()
    realm.chainedProtocolFactory = lambda: insults.ServerProtocol(
        manhole.ColoredManhole, api.namespace())
    checker = LoggedKeyChecker(AuthorizedKeys(config.manhole_keys), server.reactor)
    factory = manhole_ssh.ConchFactory(portal.Portal(realm, [checker]))
    host_key = load_or_create_host_key(host_key_path(config))
    # Instance dicts: ConchFactory's class-level ones would be shared by every factory.
    factory.publicKeys = {host_key.sshType(): host_key.public()}
    factory.privateKeys = {host_key.sshType(): host_key}
    description = loopback_by_default(config.manhole)
    d = endpoints.serverFromString(server.reactor, description).listen(factory)

    def listening(port):
        address = port.getHost()
        log.info("manhole (SSH) listening on {host}:{port}", host=address.host, port=address.port)
        return port
    return d.addCallback(listening)
