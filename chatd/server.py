"""ChatServer: the service that owns the store, the accounts, the hub and the listening port.

makeService only builds it from option values; everything asynchronous
(opening the database, upgrading the schema, loading the directory, then
listening) happens in startService, and stopService undoes it in order:
stop accepting, tell clients, write what is queued, close the database.
"""

import gc

from twisted.application import service
from twisted.internet import defer, endpoints, error
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.accounts import Accounts
from chatd.admission import AddressAwareThrottle, KnownLogins, RegistrationLimit
from chatd.auth import PasswordHasher
from chatd.cluster import Cluster
from chatd.conversations import Conversations
from chatd.revisions import Revisions
from chatd.engines import engine_from_url
from chatd.hub import Hub
from chatd.limits import (
    LISTEN_BACKLOG, SHUTDOWN_WAIT, ConnectionCount, LogThrottle, default_max_connections,
)
from chatd.manhole import listen_manhole
from chatd.moderation import Moderation
from chatd.natsbus import BusError
from chatd.options import ServerConfig  # noqa: F401  (re-exported: tests build one)
from chatd.protocol import ChatFactory
from chatd.proxyprotocol import HeaderFirstFactory
from chatd.reuseport import ReusingPort
from chatd.store import Store

log = Logger()
SHUTDOWN_REASON = "The server is restarting; reconnect in a moment."
IDLE_PRESENCE_TIMEOUTS = 4  # a logged-in connection silent this many presence timeouts is closed
# MySQL client error codes: the server is not there, or not answering.
MYSQL_UNREACHABLE = {2002, 2003, 2005, 2006, 2013}
MYSQL_UNKNOWN_DATABASE, MYSQL_ACCESS_DENIED = 1049, 1045


class StartError(Exception):
    """Why the server could not start, in one line for whoever started it."""


def database_problem(engine, exc):
    """The sentence for a database that cannot be opened at start."""
    if isinstance(exc, ImportError) and (exc.name or "").split(".")[0] == "MySQLdb":
        return ("a mysql:// database needs mysqlclient, which is not installed:"
                " pip install 'chatd[mysql]' (it builds against libmariadb-dev and pkg-config).")
    code = exc.args[0] if type(exc).__module__.startswith("MySQLdb") and exc.args else None
    if code is None:
        return f"cannot open the database {engine.describe()}: {exc}"
    where = f"{engine.host}:{engine.port}"
    if code in MYSQL_UNREACHABLE:
        return f"cannot reach the database server at {where}: {exc.args[-1]}"
    if code == MYSQL_UNKNOWN_DATABASE:
        return (f"the database {engine.database!r} does not exist on {where}; create it with"
                f" CREATE DATABASE {engine.database} CHARACTER SET utf8mb4.")
    if code == MYSQL_ACCESS_DENIED:
        return f"the database server at {where} refused the login: {exc.args[-1]}"
    return f"cannot open the database {engine.describe()}: {exc.args[-1]}"


@defer.inlineCallbacks
def listen(option, reactor, description, factory):
    """Listen on an endpoint string; StartError naming `option` if that is not possible.
    A tcp: or ssl: endpoint that names no backlog gets LISTEN_BACKLOG."""
    try:
        endpoint = endpoints.serverFromString(reactor, with_backlog(description))
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise StartError(f"{option} {description}: not a usable endpoint ({e}).") from e
    try:
        port = yield endpoint.listen(factory)
    except error.CannotListenError as e:
        reason = getattr(e.socketError, "strerror", None) or e.socketError
        raise StartError(f"{option} {description}: cannot listen there ({reason}).") from e
    return port


def with_backlog(description):
    if description.split(":", 1)[0] in ("tcp", "tcp6", "ssl") and \
            not any(part.startswith("backlog=") for part in description.split(":")):
        return f"{description}:backlog={LISTEN_BACKLOG}"
    return description


def settle_heap():
    """Take what start loaded (the directory, the state) out of the collector's passes.

    It lives as long as the process, and a full collection walks every object it
    tracks: with tens of thousands of accounts loaded that walk is a pause of tens of
    milliseconds on the reactor, in the middle of somebody's delivery."""
    gc.collect()
    gc.freeze()


class ChatServer(service.Service):
    name = "chatd"

    def __init__(self, config, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.reactor = reactor
        engine = engine_from_url(config.database, config.durability)
        self.store = Store(engine, clock=reactor,
                           spool_path=config.spool_file or engine.default_spool_path(),
                           max_queued=config.spool_memory, node=config.node_name)
        self.hasher = PasswordHasher(rounds=config.bcrypt_rounds,
                                     concurrency=config.bcrypt_concurrency,
                                     queue_limit=config.bcrypt_queue)
        self.known_logins = KnownLogins(config.known_logins)
        self.login_throttle = AddressAwareThrottle(reactor, threshold=config.login_failures,
                                                   cap=config.login_backoff_max,
                                                   known=self.known_logins)
        self.accounts = Accounts(self.store, self.hasher, self.login_throttle,
                                 admins=config.admins,
                                 registrations=RegistrationLimit(
                                     reactor, config.registrations_per_hour),
                                 known=self.known_logins)
        self.cluster = None if config.bus is None else Cluster(self)
        self.hub = Hub(self.store, self.accounts, clock=reactor,
                       max_message=config.max_message, presence_timeout=config.presence_timeout,
                       bus=None if self.cluster is None else self.cluster.bus)
        if self.cluster is not None:
            self.hub.moved_here.append(self.cluster.moved)
        self.moderation = self.hub.moderation = Moderation(self)
        self.conversations = Conversations(self.hub, self.store)
        self.revisions = Revisions(self.hub, self.store)
        self.accounts.login_checks.append(self.moderation.check_login_allowed)
        self.connections = ConnectionCount(reactor)
        self.max_connections = config.max_connections or default_max_connections()
        self.idle_timeout = config.idle_timeout or IDLE_PRESENCE_TIMEOUTS * config.presence_timeout
        self.refusal_log = LogThrottle(reactor)
        self.manhole_port = None
        self.port = None
        self.ready = defer.Deferred()

    def startService(self):
        super().startService()
        d = self._start()
        d.addErrback(self._failed_to_start)

    @defer.inlineCallbacks
    def _start(self):
        try:
            if self.cluster is not None:
                self.cluster.check_setup()
        except BusError as e:
            raise StartError(str(e)) from e
        try:
            yield self.store.start()
        except Exception as e:
            raise StartError(database_problem(self.store.engine, e)) from e
        if self.cluster is not None:
            try:
                yield self.cluster.connect()
            except BusError as e:
                raise StartError(str(e)) from e
        yield self.accounts.load()
        yield self.hub.load()
        yield self.moderation.load()
        if self.cluster is not None:
            yield self.cluster.catch_up()
        settle_heap()
        reactor = ReusingPort(self.reactor) if self.config.reuse_port else self.reactor
        factory = ChatFactory(self)
        if self.config.proxy_protocol:
            if not self.config.listen.startswith(("tcp:", "tcp6:")):
                raise StartError(f"--proxy-protocol works with tcp: endpoints only, not"
                                 f" --listen {self.config.listen} (HAProxy sends its header"
                                 f" before any TLS).")
            factory = HeaderFirstFactory(factory, self.reactor)
        self.port = yield listen("--listen", reactor, self.config.listen, factory)
        address = self.port.getHost()
        log.info("chatd listening on {host}:{port}{shared}", host=address.host, port=address.port,
                 shared=" (shared with the other nodes here)" if self.config.reuse_port else "")
        if self.config.manhole:
            try:
                self.manhole_port = yield listen_manhole(self)
            except Exception as e:
                raise StartError(f"--manhole {self.config.manhole}: {e}") from e
        self.ready.callback(self)

    def _failed_to_start(self, failure):
        """Log the detail; `ready` fails with a StartError whose message is one line."""
        log.failure("chatd could not start", failure)
        if not failure.check(StartError):
            failure = Failure(StartError(f"{failure.type.__name__}: {failure.getErrorMessage()}"))
        if not self.ready.called:
            self.ready.errback(failure)

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        if self.port is not None:
            yield self.port.stopListening()
            self.port = None
        if self.manhole_port is not None:
            yield self.manhole_port.stopListening()
            self.manhole_port = None
        clients = list(self.hub.connections)
        for connection in clients:
            connection.disconnect("shutdown", SHUTDOWN_REASON)
        # Wait (bounded) for the clients to take the goodbye and close: once stopService
        # returns, the reactor stops and drops unsent output.
        closed = self.connections.until_empty(SHUTDOWN_WAIT)
        self.hub.presence.stop()
        self.hasher.stop()
        if self.cluster is not None:
            yield self.cluster.stop()
        yield self.store.stop()
        if not (yield closed):
            log.warn("chatd stopping: {count} clients did not close within {wait:g} s of the"
                     " goodbye", count=self.connections.total, wait=SHUTDOWN_WAIT)
        spooled = len(self.store.messages.spooled)
        if spooled:
            log.warn("chatd stopped: {clients} clients told, {count} messages kept in"
                     " {path} for the next start", clients=len(clients), count=spooled,
                     path=str(self.store.spool.path))
        else:
            log.info("chatd stopped: {clients} clients told, message log written",
                     clients=len(clients))

    # -- connection hooks (chatd/moderation/) -----------------------------------

    def refuse_connection(self, connection):
        """(kind, reason) if this connection must be closed at once, else None.

        The connection is already counted; the log line about a limit is
        throttled (one a minute per limit and address), as a flood of refused
        connections would otherwise be a flood of log lines.
        """
        refusal = self.moderation.refuse_connection(connection)
        if refusal is not None:
            return refusal
        if self.connections.total > self.max_connections:
            self._log_refusal("all", "refused a connection from {ip}: already {limit} open in"
                              " all (--max-connections)", connection.ip, self.max_connections)
            return ("limit", "The server is full right now; try again in a minute.")
        limit = self.config.max_connections_per_ip
        if self.connections.per_group[connection.group] > limit:
            self._log_refusal(connection.group, "refused a connection from {ip}: already {limit}"
                              " open (--max-connections-per-ip)", connection.ip, limit)
            return ("limit", f"Too many connections from your address {connection.ip} "
                             f"(at most {limit}); close one and try again.")
        return None

    def _log_refusal(self, key, text, ip, limit):
        allowed, held = self.refusal_log.allow(key)
        if allowed:
            log.warn(text + "{held}", ip=ip, limit=limit,
                     held=f"; {held} more refused since the last such line" if held else "")
