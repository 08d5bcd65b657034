"""A client that stops reading is dropped once its unread output passes
--max-output-buffer; the server's memory stops growing and nobody else loses
a message. Real sockets, over TCP and over TLS: the stalled client is a raw
socket with a tiny receive buffer that never reads after logging in (set up
in a thread, as blocking sockets would stall the reactor the server runs on).

Run with -s to see the server's resident memory (VmRSS of this process, which
runs the server) before the stall, at its peak, and after the drop.
"""

import gc
import json
import socket
import ssl
from pathlib import Path

import pytest
from twisted.internet import defer, endpoints, protocol, reactor, threads
from twisted.internet import ssl as twisted_ssl
from twisted.logger import formatEvent, globalLogPublisher

from chatd.bus import encode
import support
from support import PASSWORD, look_at, make_self_signed_cert, register, start_server, stop_server

TEXT = "x" * 3000       # each relayed line is about 3.1 kB
BATCH = 50
MOST_MESSAGES = 6000    # about 18 MB of relays: far past the limit if nothing drops the reader


def rss_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def stalled_client(port, name, channel, tls_context=None):
    """Blocking (run it in a thread): log in, look at `channel`, and return the
    socket, which then is never read again. Its receive buffer is tiny."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Before connect, so the window the server sees is small from the start.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(20)
    sock.connect(("127.0.0.1", port))
    if tls_context is not None:
        sock = tls_context.wrap_socket(sock, server_hostname="localhost")
    lines = sock.makefile("rb")
    for request, answered in [
            ({"user:pwd": f"{name}:{PASSWORD}"}, lambda m: m.get("reply_to") == "user:pwd"),
            ({"join": channel}, lambda m: m.get("reply_to") == "join"),
            ({"presence": "online", "channel": channel}, lambda m: m.get("event") == "members")]:
        sock.sendall(json.dumps(request).encode() + b"\n")
        while True:
            message = json.loads(lines.readline())
            assert "error" not in message, message
            if answered(message):
                break
    return sock


def wait_closed(sock, timeout=30):
    """Blocking: read (and discard) what is left until the server's close arrives."""
    sock.settimeout(timeout)
    try:
        while sock.recv(1 << 20):
            pass
    except (ConnectionResetError, ssl.SSLError):
        pass
    return True


class Transport:
    """How the test reaches the server: plain TCP, or TLS with a self-signed certificate."""

    def __init__(self, kind, directory):
        self.kind = kind
        self.listen = "tcp:0:interface=127.0.0.1"
        self.tls_context = None
        if kind == "tls":
            key_path, cert_path = make_self_signed_cert(directory)
            self.listen = (f"ssl:0:interface=127.0.0.1:privateKey={key_path}"
                           f":certKey={cert_path}")
            self.tls_context = ssl.create_default_context(cafile=str(cert_path))
            self.trust = twisted_ssl.Certificate.loadPEM(Path(cert_path).read_bytes())

    @defer.inlineCallbacks
    def login(self, server, name):
        """A TestClient logged in as `name` (registered first), over this transport."""
        yield register(server, name) if self.kind == "tcp" else self._register(server, name)
        client = yield self.connect(server)
        reply = yield client.request({"user:pwd": f"{name}:{PASSWORD}"})
        assert reply.get("ok"), reply
        client.name = name
        return client

    @defer.inlineCallbacks
    def _register(self, server, name):
        client = yield self.connect(server)
        reply = yield client.request({"register": name, "password": PASSWORD,
                                      "email": f"{name}@example.org"})
        assert reply.get("ok"), reply
        client.transport.loseConnection()
        yield client.closed

    def connect(self, server):
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", server.address.port)
        if self.kind == "tls":
            endpoint = endpoints.wrapClientTLS(
                twisted_ssl.optionsForClientTLS("localhost", trustRoot=self.trust), endpoint)
        return endpoint.connect(protocol.Factory.forProtocol(support.TestClient))


@pytest.fixture
def drops():
    """Log lines about dropped slow readers."""
    seen = []

    def observe(event):
        text = formatEvent(event)
        if "bytes of output not read" in text:
            seen.append(text)
    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["tcp", "tls"])
@defer.inlineCallbacks
def test_a_client_that_stops_reading_is_dropped_and_others_get_everything(
        kind, sqlite_database, tmp_path, drops):
    via = Transport(kind, tmp_path)
    server = start_server(sqlite_database, listen=via.listen, flood_burst=10**6,
                          flood_rate=10**6, presence_timeout=600)
    limit = server.config.max_output_buffer
    stalled = None
    try:
        sender = yield via.login(server, "sender")
        reader = yield via.login(server, "reader")
        yield look_at(sender, "general")
        yield look_at(reader, "general")
        (yield via.login(server, "stalled")).transport.loseConnection()
        stalled = yield threads.deferToThread(
            stalled_client, server.address.port, "stalled", "general", via.tls_context)
        # From here on the stalled client never reads.

        gc.collect()
        before = peak = rss_kib()
        sent_ids = []
        while "stalled" in server.hub.sessions and len(sent_ids) < MOST_MESSAGES:
            for _ in range(BATCH):
                sender.send({"channel_message": TEXT, "channel": "general"})
            for _ in range(BATCH):
                reply = yield sender.wait_for(lambda m: m.get("reply_to") == "channel_message")
                sent_ids.append(reply["id"])
            peak = max(peak, rss_kib())
        assert "stalled" not in server.hub.sessions, \
            f"still connected after {len(sent_ids)} messages"
        assert (yield threads.deferToThread(wait_closed, stalled))
        # A few more after the drop: still relayed to the others.
        for _ in range(BATCH):
            sent_ids.append(ok_id((yield sender.request(
                {"channel_message": TEXT, "channel": "general"}))))
        gc.collect()
        after = rss_kib()

        yield reader.barrier()
        yield sender.barrier()
        for client in (reader, sender):
            relayed = client.take(lambda m: m.get("channel_message") == TEXT)
            assert [m["id"] for m in relayed] == sent_ids, client.name
        assert len(drops) == 1 and "dropping stalled from 127.0.0.1" in drops[0]
        unsent = int(drops[0].split(": ")[1].split()[0])
        # The limit, plus at most one line (plus TLS record headers, some bytes per 16 kB).
        assert limit < unsent <= limit + len(encode(relayed[-1])) + 1024
        print(f"\nslow reader over {kind}: dropped after {len(sent_ids) - BATCH} messages "
              f"({unsent} bytes unsent at the drop, limit {limit}); server RSS "
              f"before {before / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
              f"after {after / 1024:.1f} MiB")
    finally:
        if stalled is not None:
            stalled.close()
        stop_server(server)


def ok_id(reply):
    assert reply.get("ok") is True, reply
    return reply["id"]
