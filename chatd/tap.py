"""twistd integration: `twistd -n chatd [options]`."""

import os

from twisted.application import service
from twisted.python import usage

from chatd.engines import DatabaseURLError, engine_from_url
from chatd.manhole import check_keys_file_mode
from chatd.server import ChatServer, ServerConfig


def _positive_int(name, value, minimum=1, maximum=None):
    try:
        number = int(value)
    except ValueError:
        raise usage.UsageError(f"--{name} must be a whole number, not {value!r}") from None
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum else f"at least {minimum}"
        raise usage.UsageError(f"--{name} must be {bounds}, not {number}")
    return number


def _positive_number(name, value):
    try:
        number = float(value)
    except ValueError:
        raise usage.UsageError(f"--{name} must be a number, not {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise usage.UsageError(f"--{name} must be more than 0, not {value}")
    return number


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "Run the chatd chat server (JSON lines over TCP or TLS)."
    optParameters = [
        ["listen", "l", "tcp:7878",
         "Endpoint to listen on (Twisted endpoint string, e.g. tcp:7878 or ssl:7879:privateKey=key.pem:certKey=cert.pem)."],
        ["database", "d", "sqlite:chatd.sqlite",
         "sqlite:PATH or mysql://USER:PASS@HOST:PORT/DB"],
        ["bcrypt-rounds", None, "12", "bcrypt cost factor for new passwords (4-31)."],
        ["max-line", None, "16384", "Longest accepted protocol line, in bytes."],
        ["max-message", None, "4000", "Longest accepted message text, in characters."],
        ["presence-timeout", None, "15", "Seconds without a heartbeat before a user is offline."],
        ["max-connections-per-ip", None, "20",
         "Open connections allowed from one IP address (an IPv6 /64 counts as one);"
         " more are told why and closed."],
        ["max-connections", None, None,
         "Open connections allowed in all; more are told why and closed"
         " (default: the process's file-descriptor limit minus 64)."],
        ["login-timeout", None, "30",
         "Seconds a connection may take to log in before it is closed."],
        ["idle-timeout", None, None,
         "Seconds a logged-in connection may send nothing before it is closed"
         " (default: 4 x --presence-timeout)."],
        ["flood-burst", None, "20", "Requests a connection may send at once before flood control."],
        ["flood-rate", None, "5",
         "Requests per second a connection may send after the burst (a heartbeat counts 1/4)."],
        ["flood-strikes", None, "10",
         "Requests refused for flooding within 10 s after which the connection is closed."],
        ["login-failures", None, "5",
         "Failed logins in a row (per account and per IP) before logins back off."],
        ["login-backoff-max", None, "300",
         "Longest failed-login backoff in seconds (it starts at 1 s and doubles)."],
        ["bcrypt-concurrency", None, "2", "bcrypt computations allowed to run at once."],
        ["max-output-buffer", None, "1048576",
         "Bytes of output a client may leave unread before it is dropped."],
        ["drain-timeout", None, "10",
         "Seconds a client may take to read its unread output down below --max-output-buffer."],
        ["manhole", None, None,
         "Endpoint for the SSH admin manhole, e.g. tcp:2222 (loopback unless interface= names"
         " another address; off by default)."],
        ["manhole-keys", None, None,
         "authorized_keys file: the SSH public keys allowed into the manhole."],
        ["manhole-host-key", None, None,
         "The manhole's SSH host key file (generated at first start; default: next to the database)."],
        ["spool-file", None, None,
         "JSON-lines file for message-log rows while the database is unreachable"
         " (default: chatd-spool.jsonl next to the SQLite file; chatd-spool-DB.jsonl in the"
         " working directory for MySQL)."],
        ["spool-memory", None, "10000",
         "Message-log rows kept in memory while the database is unreachable;"
         " older ones go to the spool file."],
    ]

    def __init__(self):
        super().__init__()
        self["admins"] = []

    def opt_admin(self, name):
        """Make this user an admin (repeatable)."""
        self["admins"].append(name)

    def opt_listen(self, value):
        if ":" not in value:
            raise usage.UsageError(
                f"--listen takes a Twisted endpoint string like tcp:7878, not {value!r}")
        self["listen"] = value

    def opt_database(self, value):
        try:
            engine_from_url(value)
        except DatabaseURLError as e:
            raise usage.UsageError(f"--database: {e}") from None
        self["database"] = value

    def postOptions(self):
        self["bcrypt-rounds"] = _positive_int("bcrypt-rounds", self["bcrypt-rounds"], 4, 31)
        self["max-line"] = _positive_int("max-line", self["max-line"], 256)
        self["max-message"] = _positive_int("max-message", self["max-message"], 1)
        self["presence-timeout"] = _positive_int("presence-timeout", self["presence-timeout"], 1)
        self["spool-memory"] = _positive_int("spool-memory", self["spool-memory"], 1)
        for name in ("max-connections-per-ip", "flood-burst", "flood-strikes", "login-failures",
                     "bcrypt-concurrency"):
            self[name] = _positive_int(name, self[name], 1)
        self["flood-rate"] = _positive_number("flood-rate", self["flood-rate"])
        self["login-backoff-max"] = _positive_number("login-backoff-max", self["login-backoff-max"])
        self["max-output-buffer"] = _positive_int("max-output-buffer", self["max-output-buffer"],
                                                  65536)
        for name in ("login-timeout", "drain-timeout"):
            self[name] = _positive_number(name, self[name])
        if self["idle-timeout"] is not None:
            self["idle-timeout"] = _positive_number("idle-timeout", self["idle-timeout"])
        if self["max-connections"] is not None:
            self["max-connections"] = _positive_int("max-connections", self["max-connections"], 1)
        if self["manhole"] and not self["manhole-keys"]:
            raise usage.UsageError("--manhole needs --manhole-keys FILE (authorized_keys format)")
        if self["manhole-keys"] and os.path.exists(self["manhole-keys"]):
            try:
                check_keys_file_mode(self["manhole-keys"])
            except ValueError as e:
                raise usage.UsageError(str(e)) from None

    def config(self):
        return ServerConfig(
            listen=self["listen"], database=self["database"],
            bcrypt_rounds=self["bcrypt-rounds"], admins=list(self["admins"]),
            max_line=self["max-line"], max_message=self["max-message"],
            presence_timeout=float(self["presence-timeout"]),
            max_connections_per_ip=self["max-connections-per-ip"],
            max_connections=self["max-connections"], login_timeout=self["login-timeout"],
            idle_timeout=self["idle-timeout"], drain_timeout=self["drain-timeout"],
            flood_burst=self["flood-burst"], flood_rate=self["flood-rate"],
            flood_strikes=self["flood-strikes"], login_failures=self["login-failures"],
            login_backoff_max=self["login-backoff-max"],
            bcrypt_concurrency=self["bcrypt-concurrency"],
            max_output_buffer=self["max-output-buffer"],
            manhole=self["manhole"], manhole_keys=self["manhole-keys"],
            manhole_host_key=self["manhole-host-key"],
            spool_file=self["spool-file"], spool_memory=self["spool-memory"])


def makeService(options):
    top = service.MultiService()
    ChatServer(options.config()).setServiceParent(top)
    return top
