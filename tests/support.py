"""Helpers for tests: real servers on free ports, real TCP clients, MariaDB databases."""

import contextlib
import datetime
import ipaddress
import json
import os
import uuid

import pytest
from twisted.internet import defer, endpoints, protocol, task
from twisted.protocols import portforward
from twisted.protocols.basic import LineReceiver

from chatd.server import ChatServer, ServerConfig

MYSQL_URL = os.environ.get("CHATD_TEST_MYSQL", "")
REQUIRE_MYSQL = os.environ.get("CHATD_REQUIRE_MYSQL") == "1"
PASSWORD = "correct horse battery"


def wait(d, timeout=30):
    """Spin Qt's event loop (which drives the reactor) until `d` fires; return its result."""
    from PyQt6.QtCore import QEventLoop, QTimer
    from twisted.python.failure import Failure
    outcome = []
    loop = QEventLoop()

    def done(result):
        outcome.append(result)
        loop.quit()
    d.addBoth(done)
    if not outcome:
        timer = QTimer()
        timer.setSingleShot(True)
        timer.timeout.connect(loop.quit)
        timer.start(int(timeout * 1000))
        loop.exec()
        timer.stop()
    if not outcome:
        raise TimeoutError(f"nothing happened within {timeout} s")
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


def ok(reply):
    """The reply, after checking it is a success."""
    assert reply.get("ok") is True, reply
    return reply


def error(reply):
    """The error sentence of a reply that must be a refusal."""
    assert "error" in reply and "ok" not in reply, reply
    return reply["error"]


@contextlib.contextmanager
def mysql_database():
    """Create a throw-away database on the test MariaDB; yield its chatd URL."""
    if not MYSQL_URL:
        if REQUIRE_MYSQL:
            pytest.fail("CHATD_REQUIRE_MYSQL=1 but CHATD_TEST_MYSQL is not set")
        pytest.skip("set CHATD_TEST_MYSQL=mysql://root:@127.0.0.1:3306 to run MariaDB tests")
    from chatd.engines import engine_from_url
    import MySQLdb
    base = engine_from_url(MYSQL_URL.rstrip("/") + "/test")
    name = "chatd_test_" + uuid.uuid4().hex[:12]
    admin = MySQLdb.connect(host=base.host, port=base.port, user=base.user, passwd=base.password)
    try:
        admin.cursor().execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        yield MYSQL_URL.rstrip("/") + "/" + name
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


# For tests about something else that send quickly from one address or fail
# logins on purpose; the limits themselves are tested in test_limits.py.
LIMITS_LIFTED = dict(flood_burst=10**6, flood_rate=10**6, login_failures=10**6,
                     max_connections_per_ip=10**4)


def start_server(database, listen="tcp:0:interface=127.0.0.1", **overrides):
    """Start a ChatServer on the test reactor and wait until it listens."""
    overrides.setdefault("bcrypt_rounds", 4)
    # Tests register many accounts from 127.0.0.1; test_admission.py tests the limit.
    overrides.setdefault("registrations_per_hour", 10**4)
    config = ServerConfig(listen=listen, database=database, **overrides)
    server = ChatServer(config)
    server.startService()
    wait(server.ready)
    server.address = server.port.getHost()
    return server


def stop_server(server):
    if server.running:
        wait(defer.maybeDeferred(server.stopService))


def restart_server(server):
    """Stop `server` and start a new one on the same port and database."""
    stop_server(server)
    return start_server(server.config.database,
                        listen=f"tcp:{server.address.port}:interface=127.0.0.1",
                        admins=server.config.admins)


class TestClient(LineReceiver):
    """A real protocol client: every line it receives lands in `inbox`."""

    delimiter = b"\n"
    MAX_LENGTH = 10_000_000

    def __init__(self):
        self.inbox = []
        self._waiters = []
        self._refs = 0
        self.closed = defer.Deferred()
        self.lost_reason = None
        self.name = None

    def connectionLost(self, reason):
        self.lost_reason = reason
        self.closed.callback(None)

    def lineReceived(self, line):
        self.inbox.append(json.loads(line))
        for waiter in list(self._waiters):
            self._try(waiter)

    def _try(self, waiter):
        predicate, d = waiter
        for index, message in enumerate(self.inbox):
            if predicate(message):
                del self.inbox[index]
                self._waiters.remove(waiter)
                d.callback(message)
                return

    def send(self, payload):
        self.transport.write(json.dumps(payload).encode() + b"\n")

    def send_raw(self, data):
        self.transport.write(data)

    def wait_for(self, predicate, timeout=10):
        """Deferred firing with (and taking from the inbox) the first message matching."""
        d = defer.Deferred()
        waiter = (predicate, d)
        self._waiters.append(waiter)
        self._try(waiter)
        if not d.called:
            def expire():
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                    d.errback(AssertionError(f"timed out; inbox: {self.inbox!r}"))
            from twisted.internet import reactor
            call = reactor.callLater(timeout, expire)
            d.addBoth(lambda r: (call.active() and call.cancel(), r)[1])
        return d

    def event(self, kind, **fields):
        return self.wait_for(lambda m: m.get("event") == kind
                             and all(m.get(k) == v for k, v in fields.items()))

    def request(self, payload):
        """Send with a fresh `ref`; Deferred firing with the reply to it."""
        self._refs += 1
        ref = self._refs
        self.send(dict(payload, ref=ref))
        return self.wait_for(lambda m: m.get("ref") == ref and "reply_to" in m)

    @defer.inlineCallbacks
    def barrier(self):
        """Once this returns, every line the server wrote to us earlier is in the inbox."""
        yield self.request({"my_requests": ""})

    def take(self, predicate):
        """Remove and return every message in the inbox matching `predicate`."""
        found = [m for m in self.inbox if predicate(m)]
        self.inbox = [m for m in self.inbox if not predicate(m)]
        return found


@defer.inlineCallbacks
def connect(server, source=None):
    """A TestClient connected to `server`, from the loopback address `source` if given
    (127.0.0.2, 127.0.0.3, ...: several addresses on one machine)."""
    from twisted.internet import reactor
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", server.address.port,
                                            bindAddress=None if source is None else (source, 0))
    client = yield endpoint.connect(protocol.Factory.forProtocol(TestClient))
    return client


def make_self_signed_cert(directory, hostname="localhost"):
    """Write HOSTNAME.key and HOSTNAME.pem (self-signed, valid for `hostname` and 127.0.0.1).

    Returns (key_path, cert_path) as strings. The certificate is its own CA
    (basicConstraints CA:TRUE), so a client can use it as the only trust root.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True,
            content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256()))
    key_path = os.path.join(str(directory), f"{hostname}.key")
    cert_path = os.path.join(str(directory), f"{hostname}.pem")
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption()))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def tls_listen(key_path, cert_path, port=0):
    """The --listen endpoint string for TLS with these files, on the loopback interface."""
    quote = endpoints.quoteStringArgument
    return (f"ssl:{port}:privateKey={quote(key_path)}:certKey={quote(cert_path)}"
            ":interface=127.0.0.1")


@defer.inlineCallbacks
def connect_tls(server, trust_pem_path=None, hostname="localhost"):
    """A TestClient over TLS that verifies the server's certificate.

    It trusts only the certificate in `trust_pem_path` (or the platform's
    roots when None) and checks that the certificate names `hostname`.
    """
    from twisted.internet import reactor, ssl
    if trust_pem_path is None:
        trust = ssl.platformTrust()
    else:
        with open(trust_pem_path, "rb") as f:
            trust = ssl.Certificate.loadPEM(f.read())
    options = ssl.optionsForClientTLS(hostname, trustRoot=trust)
    endpoint = endpoints.wrapClientTLS(
        options, endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", server.address.port))
    client = yield endpoint.connect(protocol.Factory.forProtocol(TestClient))
    return client


@defer.inlineCallbacks
def register(server, name, password=PASSWORD, source=None):
    client = yield connect(server, source)
    reply = yield client.request({"register": name, "password": password,
                                  "email": f"{name}@example.org"})
    assert reply.get("ok"), reply
    client.transport.loseConnection()
    yield client.closed


@defer.inlineCallbacks
def login(server, name, password=PASSWORD, register_first=True, source=None):
    """A connected client logged in as `name` (registered first unless told not to)."""
    if register_first:
        yield register(server, name, password, source)
    client = yield connect(server, source)
    reply = yield client.request({"user:pwd": f"{name}:{password}", "user": name})
    assert reply.get("ok"), reply
    client.name = name
    return client


@defer.inlineCallbacks
def login_admin(server, name):
    """Register `name`, give it the admin role, and log it in."""
    yield register(server, name)
    yield server.accounts.set_role(name, "admin")
    client = yield login(server, name, register_first=False)
    return client


@defer.inlineCallbacks
def look_at(client, channel):
    """Join `channel` and look at it; returns the member list the server pushed."""
    reply = yield client.request({"join": channel})
    assert reply.get("ok"), reply
    client.send({"presence": "online", "channel": channel})
    members = yield client.event("members", channel=channel)
    return members


@defer.inlineCallbacks
def until(condition, timeout=30):
    """Wait (polling the real reactor) until `condition()` holds; fail after `timeout` s."""
    from twisted.internet import reactor
    deadline = reactor.seconds() + timeout
    while not condition():
        assert reactor.seconds() < deadline, "condition never held"
        yield task.deferLater(reactor, 0.01, lambda: None)


class ProxiedConnection(portforward.ProxyServer):
    """One connection through a LoopbackProxy; what its client sends is dropped while
    the proxy is blackholed."""

    def connectionMade(self):
        self.factory.connections.add(self)
        super().connectionMade()

    def connectionLost(self, reason):
        self.factory.connections.discard(self)
        super().connectionLost(reason)

    def dataReceived(self, data):
        if not self.factory.blackholed:
            super().dataReceived(data)


class LoopbackProxy:
    """A TCP forwarder to host:port on a free loopback port, to cut or to blackhole.

    Cut: every forwarded connection is aborted and new ones are refused (the port is
    closed), which is what a client sees when the server's host goes away. Blackhole:
    the connections stay open but what the clients send is dropped, as on a path that
    silently loses packets: a client notices only when its own pings go unanswered.
    """

    def __init__(self, host, port):
        self.factory = portforward.ProxyFactory(host, port)
        self.factory.protocol = ProxiedConnection
        self.factory.connections = set()
        self.factory.blackholed = False
        self.listening = None
        self.port = 0

    def start(self):
        from twisted.internet import reactor
        self.listening = reactor.listenTCP(self.port, self.factory, interface="127.0.0.1")
        self.port = self.listening.getHost().port

    @defer.inlineCallbacks
    def cut(self):
        yield self.listening.stopListening()
        for connection in list(self.factory.connections):
            connection.transport.abortConnection()
        yield until(lambda: not self.factory.connections)

    restore = start

    def blackhole(self):
        self.factory.blackholed = True

    def end_blackhole(self):
        """What the clients send goes through again (what was dropped stays lost)."""
        self.factory.blackholed = False
