"""Every server option, declared once: name, type, default, bounds, help.

The twistd options and their validation (chatd/tap.py), `--help`, the
ServerConfig dataclass (one field per option, `--max-line` -> `max_line`) and
the option list in the README are all derived from OPTIONS. To add an option,
add one Option(...) below, read `config.<field>` where it is used, and run
`python -m chatd.options --update-readme` to rewrite the README's list.
"""

import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path

from chatd import rules
from chatd.engines import DURABILITY_LEVELS, DatabaseURLError, engine_from_url
from chatd.natsbus import parse_bus_url

NODE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")


class OptionError(ValueError):
    """A value that an option does not accept; the message names the option."""


def _endpoint_string(value):
    """Only the shape: the endpoint itself is parsed at start, where its error is one line."""
    if ":" not in value:
        raise ValueError(f"use a Twisted endpoint string like tcp:7878, not {value!r}")


def _bus_url(value):
    parse_bus_url(value)


def _node_name(value):
    if not NODE_NAME.match(value):
        raise ValueError(f"a node name is 1 to 64 letters, digits, '-' or '_', not {value!r}")


def _database_url(value):
    try:
        engine_from_url(value)
    except DatabaseURLError as e:
        raise ValueError(str(e)) from None


def _keys_file(value):
    """A keys file others can write is refused here already (the manhole checks it at start)."""
    if os.path.exists(value):
        from chatd.manhole import check_keys_file_mode
        check_keys_file_mode(value)


@dataclass(frozen=True)
class Option:
    name: str                   # on the command line, without the "--"
    type: type                  # int, float, str, bool for a flag, or list for a repeatable option
    default: object             # None: unset unless given
    help: str                   # one sentence; bounds and the default are added to it
    metavar: str = "VALUE"
    short: str | None = None
    at_least: float | None = None
    at_most: float | None = None
    above: float | None = None  # exclusive lower bound (for float options)
    choices: tuple[str, ...] | None = None  # for str options: the accepted values
    check: Callable[[str], None] | None = None  # str options: ValueError(sentence) if wrong
    requires: str | None = None  # another option that must be given with this one
    field: str | None = None    # ServerConfig field, if not the name with '_' for '-'

    @property
    def attribute(self):
        return self.field or self.name.replace("-", "_")

    @property
    def bounds(self):
        if self.at_least is not None and self.at_most is not None:
            return f"between {self.at_least} and {self.at_most}"
        if self.at_least is not None:
            return f"at least {self.at_least}"
        if self.above is not None:
            return f"more than {self.above}"
        if self.choices:
            return "one of " + ", ".join(self.choices)
        return None

    def describe(self):
        """The help sentence with its bounds, as --help and the README show it."""
        bounds = f" Must be {self.bounds}." if self.bounds else ""
        return self.help + bounds

    def parse(self, text):
        """The typed value of `text`, or OptionError with a one-sentence reason."""
        if self.type is str:
            if self.choices and text not in self.choices:
                raise OptionError(f"--{self.name} must be {self.bounds}, not {text!r}")
            if self.check is not None:
                try:
                    self.check(text)
                except ValueError as e:
                    raise OptionError(f"--{self.name}: {e}") from None
            return text
        kind = "a whole number" if self.type is int else "a number"
        try:
            value = self.type(text)
        except ValueError:
            raise OptionError(f"--{self.name} must be {kind}, not {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise OptionError(f"--{self.name} must be {kind}, not {text!r}")
        if ((self.at_least is not None and value < self.at_least)
                or (self.at_most is not None and value > self.at_most)
                or (self.above is not None and not value > self.above)):
            raise OptionError(f"--{self.name} must be {self.bounds}, not {text}")
        return value


OPTIONS = (
    Option("listen", str, "tcp:7878", metavar="ENDPOINT", short="l", check=_endpoint_string,
           help="Where to listen, as a Twisted endpoint string; tcp:7878 is every network"
                " interface, tcp:7878:interface=127.0.0.1 this machine only,"
                " ssl:7879:privateKey=key.pem:certKey=cert.pem TLS."),
    Option("database", str, "sqlite:chatd.sqlite", metavar="URL", short="d",
           check=_database_url, help="sqlite:PATH or mysql://USER:PASS@HOST:PORT/DB."),
    Option("admin", list, (), metavar="NAME", field="admins",
           help="Make this user an admin (repeatable; applied at registration if the"
                " account does not exist yet)."),
    Option("bcrypt-rounds", int, 12, metavar="N", at_least=4, at_most=31,
           help="bcrypt cost factor for new passwords."),
    Option("bcrypt-concurrency", int, 2, metavar="N", at_least=1,
           help="bcrypt computations allowed to run at once."),
    Option("bcrypt-queue", int, 16, metavar="N", at_least=1,
           help="bcrypt computations allowed to wait for a free slot; past it a login or"
                " registration is told the server is busy (the logins of accounts from an"
                " address they logged in from before go first)."),
    Option("registrations-per-hour", int, 10, metavar="N", at_least=1,
           help="Accounts that one address (an IPv4 address, or an IPv6 /64) may create"
                " in any hour."),
    Option("known-logins", int, 100000, metavar="N", at_least=1,
           help="(account, address) pairs of successful logins remembered, in memory, to"
                " put those logins first and exempt them from the account's failed-login"
                " backoff; the oldest are forgotten past it."),
    Option("max-reply", int, 65536, metavar="BYTES", at_least=4096,
           help="Largest reply to one request: history pages hold fewer messages, and the"
                " user and channel lists are paged, to stay under it."),
    Option("max-line", int, 16384, metavar="BYTES", at_least=256,
           help="Longest accepted protocol line, in bytes."),
    Option("max-message", int, rules.MAX_MESSAGE, metavar="CHARS", at_least=1,
           help="Longest accepted message text, in characters."),
    Option("presence-timeout", int, 15, metavar="SECONDS", at_least=1,
           help="Seconds without a heartbeat before a user is offline."),
    Option("max-connections-per-ip", int, 20, metavar="N", at_least=1,
           help="Open connections allowed from one IP address (an IPv6 /64 counts as one);"
                " more are told why and closed."),
    Option("max-connections", int, None, metavar="N", at_least=1,
           help="Open connections allowed in all; more are told why and closed"
                " (default: the process's file-descriptor limit minus 64)."),
    Option("login-timeout", float, 30.0, metavar="SECONDS", above=0,
           help="Seconds a connection may take to log in before it is closed."),
    Option("idle-timeout", float, None, metavar="SECONDS", above=0,
           help="Seconds a logged-in connection may send nothing before it is closed"
                " (default: 4 x --presence-timeout)."),
    Option("flood-burst", int, 20, metavar="N", at_least=1,
           help="Requests a connection may send at once before flood control."),
    Option("flood-rate", float, 5.0, metavar="PER_SECOND", above=0,
           help="Requests per second a connection may send after the burst"
                " (a heartbeat counts 1/4)."),
    Option("flood-strikes", int, 10, metavar="N", at_least=1,
           help="Requests refused for flooding within 10 s after which the connection"
                " is closed."),
    Option("login-failures", int, 5, metavar="N", at_least=1,
           help="Failed logins in a row (per account and per IP) before logins back off."),
    Option("login-backoff-max", float, 300.0, metavar="SECONDS", above=0,
           help="Longest failed-login backoff in seconds (it starts at 1 s and doubles)."),
    Option("max-output-buffer", int, 1024 * 1024, metavar="BYTES", at_least=65536,
           help="Bytes of output a client may leave unread before it is dropped."),
    Option("drain-timeout", float, 10.0, metavar="SECONDS", above=0,
           help="Seconds a client may take to read its output down below --max-output-buffer"
                " after a large reply before it is dropped."),
    Option("spool-file", str, None, metavar="PATH",
           help="JSON-lines file for message-log rows while the database is unreachable"
                " (default: chatd-spool.jsonl next to the SQLite file; chatd-spool-DB.jsonl"
                " in the working directory for MySQL)."),
    Option("spool-memory", int, 10000, metavar="N", at_least=1,
           help="Messages that may wait for their commit (or spool write) at once;"
                " more are refused as busy until the writer catches up."),
    Option("durability", str, "crash", metavar="LEVEL", choices=DURABILITY_LEVELS,
           help="crash: an acknowledged message survives a crash of chatd (kill -9);"
                " power: also a power loss (SQLite synchronous=FULL; MariaDB needs"
                " innodb_flush_log_at_trx_commit=1, see docs/security.md)."),
    Option("bus", str, None, metavar="URL", requires="node-name", check=_bus_url,
           help="Run as one node of a cluster: nats://HOST:PORT[/CLUSTER], a NATS server with"
                " JetStream shared by every node (needs a mysql:// database, the asyncio"
                " reactor: twistd --reactor=asyncio, and pip install 'chatd[cluster]';"
                " see docs/cluster.md)."),
    Option("node-name", str, None, metavar="NAME", check=_node_name,
           help="This node's name in the cluster, different on every node"
                " (letters, digits, '-', '_')."),
    Option("reuse-port", bool, False, requires="bus",
           help="Share the --listen port (tcp: or ssl:) with the other nodes on this host"
                " that use it too (SO_REUSEPORT): the kernel spreads new connections over"
                " them. Needs --bus: servers that are not one cluster would each get some"
                " of the clients."),
    Option("proxy-protocol", bool, False,
           help="Every connection starts with HAProxy's PROXY header (send-proxy), which gives"
                " the client's own address for the IP dictionary, IP bans and per-address"
                " limits (tcp: endpoints only; let nothing but HAProxy reach --listen then:"
                " anyone else could claim any address; see docs/cluster.md)."),
    Option("manhole", str, None, metavar="ENDPOINT", requires="manhole-keys",
           check=_endpoint_string,
           help="Endpoint for the SSH admin manhole, e.g. tcp:2222 (loopback unless"
                " interface= names another address; off by default)."),
    Option("manhole-keys", str, None, metavar="FILE", check=_keys_file,
           help="authorized_keys file: the SSH public keys allowed into the manhole"
                " (writable by its owner only)."),
    Option("manhole-host-key", str, None, metavar="FILE",
           help="The manhole's SSH host key file (generated at first start;"
                " default: next to the database)."),
)

BY_NAME = {option.name: option for option in OPTIONS}


def _config_field(option):
    if option.type is list:
        return option.attribute, list, field(default_factory=lambda: list(option.default))
    kind = option.type if option.default is not None else option.type | None
    return option.attribute, kind, field(default=option.default)


ServerConfig = make_dataclass("ServerConfig", [_config_field(o) for o in OPTIONS])
ServerConfig.__module__ = __name__
ServerConfig.__doc__ = "The server's settings, one field per entry of chatd.options.OPTIONS."


def config_from(values):
    """ServerConfig from {option name: text, or a list for a repeatable option}, as twistd
    parsed them; a missing or None value is the default. OptionError if one is wrong."""
    settings = {}
    for option in OPTIONS:
        given = values.get(option.name)
        if option.type is list:
            settings[option.attribute] = list(option.default if given is None else given)
            continue
        if option.type is bool:     # a flag: twistd gives 0 or 1
            given = True if given else None
        if option.requires and given is not None and values.get(option.requires) is None:
            raise OptionError(f"--{option.name} needs --{option.requires}"
                              f" {BY_NAME[option.requires].metavar}")
        settings[option.attribute] = (option.default if given is None
                                      else given if option.type is bool else option.parse(given))
    return ServerConfig(**settings)


README_START, README_END = "<!-- options -->\n", "<!-- /options -->"


def markdown():
    """The README's option list: one line per option with its default."""
    lines = []
    for option in OPTIONS:
        default = "" if option.default in (None, (), False) else f" [{option.default}]"
        usage = option.name if option.type is bool else f"{option.name} {option.metavar}"
        lines.append(f"- `--{usage}`{default}: {option.describe()}")
    return "\n".join(lines) + "\n"


def update_readme(path):
    """Rewrite the list between the README's `<!-- options -->` markers; True if it changed."""
    text = path.read_text("utf-8")
    start = text.index(README_START) + len(README_START)
    end = text.index(README_END)
    updated = text[:start] + markdown() + text[end:]
    path.write_text(updated, "utf-8")
    return updated != text


if __name__ == "__main__":
    if sys.argv[1:2] == ["--update-readme"]:
        readme = Path(sys.argv[2] if len(sys.argv) > 2 else "README.md")
        print(f"{readme}: {'updated' if update_readme(readme) else 'already current'}")
    else:
        sys.stdout.write(markdown())
