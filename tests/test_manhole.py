"""The SSH manhole, driven by the real OpenSSH client (`ssh`) against a real server."""

import os
import stat

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
import pytest
from twisted.internet import defer, protocol, reactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage

from chatd.manhole import AuthorizedKeys
from chatd.tap import Options
from support import login, start_server, stop_server


def write_key_pair(directory, name):
    """An ed25519 key pair in OpenSSH format; returns (private key path, public key line)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private_path = directory / name
    private_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))
    private_path.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    return private_path, public + f" {name}\n".encode()


class SSHSession(protocol.ProcessProtocol):
    """An `ssh` process: what it prints, and a Deferred firing when it hangs up.

    The test reactor runs without signal handlers, so no SIGCHLD tells Twisted
    when the process exits; its closing stdout and stderr say the session is over.
    """

    def __init__(self):
        self.output = b""
        self.errors = b""
        self.hung_up = defer.Deferred()
        self._open_pipes = {"stdout", "stderr"}
        self._waiters = []

    def outReceived(self, data):
        self.output += data
        for text, d in list(self._waiters):
            if text in self.output:
                self._waiters.remove((text, d))
                d.callback(None)

    def errReceived(self, data):
        self.errors += data

    def outConnectionLost(self):
        self._pipe_closed("stdout")

    def errConnectionLost(self):
        self._pipe_closed("stderr")

    def _pipe_closed(self, name):
        self._open_pipes.discard(name)
        if not self._open_pipes:
            self.hung_up.callback(None)

    def printed(self, text, timeout=15):
        """Deferred firing once `text` has appeared in the output."""
        d = defer.Deferred()
        if text in self.output:
            d.callback(None)
            return d
        self._waiters.append((text, d))

        def expire():
            if (text, d) in self._waiters:
                self._waiters.remove((text, d))
                d.errback(AssertionError(f"{text!r} not printed; output: {self.output!r}, "
                                         f"errors: {self.errors!r}"))
        call = reactor.callLater(timeout, expire)
        return d.addBoth(lambda r: (call.active() and call.cancel(), r)[1])


def start_ssh(port, key_path):
    session = SSHSession()
    args = ["ssh", "-tt", "-F", "/dev/null", "-i", str(key_path), "-p", str(port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
            "admin@127.0.0.1"]
    reactor.spawnProcess(session, "/usr/bin/ssh", args, env=dict(os.environ))
    return session


@defer.inlineCallbacks
def test_manhole_ban_over_ssh_disconnects_the_user_and_is_audited(database, tmp_path):
    key_path, public_line = write_key_pair(tmp_path, "admin_key")
    (tmp_path / "authorized_keys").write_bytes(public_line)
    host_key = tmp_path / "manhole_host_key"
    server = start_server(database, manhole="tcp:0:interface=127.0.0.1",
                          manhole_keys=str(tmp_path / "authorized_keys"),
                          manhole_host_key=str(host_key))
    try:
        bob = yield login(server, "bob")
        session = start_ssh(server.manhole_port.getHost().port, key_path)
        yield session.printed(b">>> ")
        session.transport.write(b"ban('bob', '1h', 'from the manhole')\r")
        notice = yield bob.event("disconnect")
        assert notice["kind"] == "banned" and notice["reason"].endswith(
            "Reason: from the manhole.")
        yield session.printed(b"Banned bob until ")
        session.transport.write(b"ban('nobody')\r")
        yield session.printed(b"Refused: There is no user named 'nobody'.")
        session.transport.write(b"bans()\r")
        yield session.printed(b"bob (last from 127.0.0.1) banned until ")
        session.transport.write(b"\x04")            # Ctrl-D ends the manhole session
        yield session.hung_up
        assert session.output.endswith(b"\x1bc") and session.errors == b""  # terminal reset
        rows = yield server.store.query("SELECT actor, action, target, reason FROM audit_log")
        assert [tuple(r) for r in rows] == [("manhole", "ban", "bob", "from the manhole")]
        assert stat.S_IMODE(host_key.stat().st_mode) == 0o600
    finally:
        stop_server(server)


@defer.inlineCallbacks
def test_manhole_refuses_a_key_not_in_the_keys_file(sqlite_database, tmp_path):
    _, public_line = write_key_pair(tmp_path, "admin_key")
    stranger_key, _ = write_key_pair(tmp_path, "stranger_key")
    (tmp_path / "authorized_keys").write_bytes(public_line)
    server = start_server(sqlite_database, manhole="tcp:0:interface=127.0.0.1",
                          manhole_keys=str(tmp_path / "authorized_keys"))
    try:
        session = start_ssh(server.manhole_port.getHost().port, stranger_key)
        yield session.hung_up
        assert b"Permission denied (publickey)" in session.errors
        assert b">>> " not in session.output
        # Without --manhole-host-key the host key is made next to the SQLite file.
        assert (tmp_path / "chatd-manhole-host-key").exists()
    finally:
        stop_server(server)


def test_manhole_options_need_a_keys_file():
    options = Options()
    with pytest.raises(usage.UsageError, match="--manhole needs --manhole-keys"):
        options.parseOptions(["--manhole", "tcp:2222:interface=127.0.0.1"])
    options = Options()
    options.parseOptions(["--manhole", "tcp:2222:interface=127.0.0.1",
                          "--manhole-keys", "keys", "--manhole-host-key", "host_key"])
    config = options.config()
    assert (config.manhole, config.manhole_keys, config.manhole_host_key) == (
        "tcp:2222:interface=127.0.0.1", "keys", "host_key")
    assert Options().config().manhole is None


@defer.inlineCallbacks
def test_manhole_listens_on_loopback_unless_an_interface_is_named(sqlite_database, tmp_path):
    _, public_line = write_key_pair(tmp_path, "admin_key")
    (tmp_path / "authorized_keys").write_bytes(public_line)
    server = start_server(sqlite_database, manhole="tcp:0",
                          manhole_keys=str(tmp_path / "authorized_keys"))
    try:
        assert server.manhole_port.getHost().host == "127.0.0.1"
    finally:
        stop_server(server)
    yield None


def test_manhole_refuses_a_keys_file_others_can_write(tmp_path):
    _, public_line = write_key_pair(tmp_path, "admin_key")
    keys = tmp_path / "authorized_keys"
    keys.write_bytes(public_line)
    for mode in (0o664, 0o646):
        keys.chmod(mode)
        message = rf"can be written by its group or by others \(mode 0{mode:o}\).*chmod go-w"
        with pytest.raises(usage.UsageError, match=message):
            Options().parseOptions(["--manhole", "tcp:2222", "--manhole-keys", str(keys)])
        with pytest.raises(ValueError, match=message):
            AuthorizedKeys(keys)
    keys.chmod(0o644)
    assert len(AuthorizedKeys(keys).keys) == 1


@defer.inlineCallbacks
def test_refused_manhole_keys_are_logged_as_warnings_at_most_once_a_minute(
        sqlite_database, tmp_path):
    _, public_line = write_key_pair(tmp_path, "admin_key")
    stranger_key, _ = write_key_pair(tmp_path, "stranger_key")
    (tmp_path / "authorized_keys").write_bytes(public_line)
    warnings = []

    def observe(event):
        if event.get("log_level") is not None and event["log_level"].name == "warn":
            warnings.append(formatEvent(event))
    globalLogPublisher.addObserver(observe)
    server = start_server(sqlite_database, manhole="tcp:0",
                          manhole_keys=str(tmp_path / "authorized_keys"))
    try:
        for _ in range(3):
            session = start_ssh(server.manhole_port.getHost().port, stranger_key)
            yield session.hung_up
            assert b"Permission denied (publickey)" in session.errors
        refused = [w for w in warnings if "manhole: refused an SSH login" in w]
        assert len(refused) == 1 and "as 'admin' with key SHA256:" in refused[0]
    finally:
        globalLogPublisher.removeObserver(observe)
        stop_server(server)
