"""ChatServer: the service that owns the store, the hub and the listening port.

makeService only builds it from option values; everything asynchronous
(opening the database, upgrading the schema, loading the directory, then
listening) happens in startService, and stopService undoes it in order:
stop accepting, tell clients, write what is queued, close the database.
"""

from dataclasses import dataclass, field

from twisted.application import service
from twisted.internet import defer, endpoints
from twisted.logger import Logger

from chatd.auth import ChatError, PasswordHasher
from chatd.bus import user_topic
from chatd.engines import engine_from_url
from chatd.hub import Hub
from chatd.limits import LoginThrottle
from chatd.manhole import listen_manhole
from chatd.moderation import Moderation
from chatd.protocol import ChatFactory
from chatd.store import Store

log = Logger()
SHUTDOWN_REASON = "The server is restarting; reconnect in a moment."


@dataclass
class ServerConfig:
    listen: str = "tcp:7878"
    database: str = "sqlite:chatd.sqlite"
    bcrypt_rounds: int = 12
    admins: list = field(default_factory=list)
    max_line: int = 16384
    max_message: int = 4000
    presence_timeout: float = 15.0
    max_connections_per_ip: int = 20
    flood_burst: int = 20                   # requests a connection may send at once
    flood_rate: float = 5.0                 # requests per second after the burst
    flood_strikes: int = 10                 # refused requests within 10 s that end the connection
    login_failures: int = 5                 # failed logins (per account, per IP) before backoff
    login_backoff_max: float = 300.0        # longest backoff, seconds (it doubles up to this)
    bcrypt_concurrency: int = 2             # bcrypt computations running at once
    max_output_buffer: int = 1024 * 1024    # unread output bytes before a client is dropped
    manhole: str | None = None              # SSH manhole endpoint; off unless given
    manhole_keys: str | None = None         # authorized_keys file for the manhole
    manhole_host_key: str | None = None     # default: next to the SQLite file, or ./
    spool_file: str | None = None           # default: next to the SQLite file, or ./
    spool_memory: int = 10000               # log rows kept in memory while the DB is away


class ChatServer(service.Service):
    name = "chatd"

    def __init__(self, config, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.reactor = reactor
        engine = engine_from_url(config.database)
        self.store = Store(engine, clock=reactor,
                           spool_path=config.spool_file or engine.default_spool_path(),
                           spool_memory=config.spool_memory)
        self.hub = Hub(self.store, clock=reactor, max_message=config.max_message,
                       presence_timeout=config.presence_timeout)
        self.hasher = PasswordHasher(rounds=config.bcrypt_rounds,
                                     concurrency=config.bcrypt_concurrency)
        self.login_throttle = LoginThrottle(reactor, threshold=config.login_failures,
                                            cap=config.login_backoff_max)
        self.moderation = self.hub.moderation = Moderation(self)
        self.manhole_port = None
        self.port = None
        self.ready = defer.Deferred()
        # --admin names without an account yet: they become admin when registered.
        self.pending_admins = set()

    def startService(self):
        super().startService()
        d = self._start()
        d.addErrback(self._failed_to_start)

    @defer.inlineCallbacks
    def _start(self):
        yield self.store.start()
        yield self.hub.load()
        yield self.moderation.load()
        for name in self.config.admins:
            yield self.make_admin(name, by=None, must_exist=False)
        endpoint = endpoints.serverFromString(self.reactor, self.config.listen)
        self.port = yield endpoint.listen(ChatFactory(self))
        address = self.port.getHost()
        log.info("chatd listening on {host}:{port}", host=address.host, port=address.port)
        if self.config.manhole:
            self.manhole_port = yield listen_manhole(self)
        self.ready.callback(self)

    def _failed_to_start(self, failure):
        log.failure("chatd could not start", failure)
        if not self.ready.called:
            self.ready.errback(failure)
        if self.reactor.running:
            self.reactor.stop()

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
        yield self.store.stop()
        spool = self.store.spool
        if spool is not None and spool.unread:
            log.warn("chatd stopped: {clients} clients told, {count} message-log rows kept in"
                     " {path} for the next start", clients=len(clients), count=spool.unread,
                     path=str(spool.path))
        else:
            log.info("chatd stopped: {clients} clients told, message log written",
                     clients=len(clients))

    # -- admin roles -------------------------------------------------------

    @defer.inlineCallbacks
    def make_admin(self, name, by=None, admin=True, must_exist=True):
        """Give or take the admin role; `--admin` names may not exist yet."""
        registered = self.hub.account_name(name, must_exist=must_exist)
        role = "admin" if admin else "user"
        if registered.casefold() in self.hub.accounts:
            yield self.store.set_role(registered, role)
            self.hub.roles[registered] = role
        else:
            log.warn("--admin {name}: no such account yet; it will be admin once registered",
                     name=registered)
            self.pending_admins.add(registered.casefold())
        self.hub.bus.control(user_topic(registered), "role", {"role": role})
        return registered

    def role_for_new_account(self, name):
        return "admin" if name.casefold() in self.pending_admins else "user"

    # -- moderation hooks (chatd/moderation.py) --------------------------------

    def refuse_connection(self, connection):
        """(kind, reason) if this connection must be closed at once, else None."""
        refusal = self.moderation.refuse_connection(connection)
        limit = self.config.max_connections_per_ip
        if refusal is None and self.hub.connections_per_ip[connection.ip] > limit:
            log.warn("refused a connection from {ip}: already {limit} open "
                     "(--max-connections-per-ip)", ip=connection.ip, limit=limit)
            refusal = ("limit", f"Too many connections from your address {connection.ip} "
                                f"(at most {limit}); close one and try again.")
        return refusal

    def check_login_allowed(self, connection, name):
        """Raise ChatError if `name` may not log in from this connection."""
        self.moderation.check_login_allowed(connection, name)

    def check_login_throttle(self, connection, name):
        """Raise ChatError during a failed-login backoff; log the refused attempt."""
        try:
            self.login_throttle.check(name, connection.ip)
        except ChatError:
            log.warn("login for {name!r} from {ip} refused: failed-login backoff",
                     name=name, ip=connection.ip)
            self.store.log_auth(name, "login_throttled", connection.ip)
            raise

    def login_failed(self, connection, name):
        """After a wrong password or unknown name: count it towards the backoff."""
        backoff = self.login_throttle.failed(name, connection.ip)
        log.info("failed login for {name!r} from {ip}{backoff}", name=name, ip=connection.ip,
                 backoff=f"; backoff {backoff:g} s" if backoff else "")

    def login_succeeded(self, connection, name):
        self.login_throttle.succeeded(name, connection.ip)

    def join_request_states(self, name):
        return self.moderation.join_request_states(name)

    def run_command(self, session, line):
        return self.moderation.run_command(session, line)

    def my_requests(self, session):
        return self.moderation.my_requests(session)
