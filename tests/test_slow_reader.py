"""A client that stops reading is dropped once its unread output passes
--max-output-buffer; the server's memory stops growing and nobody else loses
a message. Real sockets: the stalled client is a raw socket with a tiny
receive buffer that never reads after logging in.

Run with -s to see the server's resident memory (VmRSS of this process, which
runs the server) before the stall, at its peak, and after the drop.
"""

import gc
import json
import socket

import pytest
from twisted.internet import defer, reactor, task
from twisted.logger import formatEvent, globalLogPublisher

from support import PASSWORD, login, look_at, register, start_server, stop_server

TEXT = "x" * 3000       # each relayed line is about 3.1 kB
BATCH = 50
MOST_MESSAGES = 6000    # about 18 MB of relays: far past the limit if nothing drops the reader


def rss_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def pause(seconds=0.01):
    return task.deferLater(reactor, seconds, lambda: None)


class RawClient:
    """A blocking-free raw socket speaking the protocol, read only when asked to."""

    def __init__(self, port):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connect, so the window the server sees is small from the start.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.pending = b""

    def send(self, payload):
        self.sock.sendall(json.dumps(payload).encode() + b"\n")

    @defer.inlineCallbacks
    def read_until(self, predicate, timeout=10):
        deadline = reactor.seconds() + timeout
        while True:
            while b"\n" in self.pending:
                line, self.pending = self.pending.split(b"\n", 1)
                message = json.loads(line)
                if predicate(message):
                    return message
            assert reactor.seconds() < deadline, "no matching line from the server"
            try:
                self.pending += self.sock.recv(65536)
            except BlockingIOError:
                yield pause()

    @defer.inlineCallbacks
    def wait_closed(self, timeout=30):
        """Read (and discard) what is left until the server's close arrives."""
        deadline = reactor.seconds() + timeout
        while reactor.seconds() < deadline:
            try:
                if not self.sock.recv(1 << 20):
                    return True
            except BlockingIOError:
                yield pause()
            except ConnectionResetError:
                return True
        return False


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
@defer.inlineCallbacks
def test_a_client_that_stops_reading_is_dropped_and_others_get_everything(
        sqlite_database, drops):
    server = start_server(sqlite_database, flood_burst=10**6, flood_rate=10**6,
                          presence_timeout=600)
    limit = server.config.max_output_buffer
    stalled = None
    try:
        sender = yield login(server, "sender")
        reader = yield login(server, "reader")
        yield look_at(sender, "general")
        yield look_at(reader, "general")
        yield register(server, "stalled")
        stalled = RawClient(server.address.port)
        stalled.send({"user:pwd": f"stalled:{PASSWORD}"})
        assert (yield stalled.read_until(lambda m: m.get("reply_to") == "user:pwd"))["ok"]
        stalled.send({"join": "general"})
        stalled.send({"presence": "online", "channel": "general"})
        yield stalled.read_until(lambda m: m.get("event") == "members")
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
        assert (yield stalled.wait_closed())
        # A few more after the drop: still relayed to the others.
        for _ in range(BATCH):
            sent_ids.append(ok_id((yield sender.request(
                {"channel_message": TEXT, "channel": "general"}))))
        gc.collect()
        after = rss_kib()

        yield reader.barrier()
        yield sender.barrier()
        for client in (reader, sender):
            got = [m["id"] for m in client.take(lambda m: m.get("channel_message") == TEXT)]
            assert got == sent_ids, client.name
        assert len(drops) == 1 and "dropping stalled from 127.0.0.1" in drops[0]
        unsent = int(drops[0].split(": ")[1].split()[0])
        assert limit < unsent <= limit + len(TEXT) + 200   # the limit, plus at most one line
        print(f"\nslow reader: dropped after {len(sent_ids) - BATCH} messages "
              f"({unsent} bytes unsent at the drop, limit {limit}); server RSS "
              f"before {before / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
              f"after {after / 1024:.1f} MiB")
    finally:
        if stalled is not None:
            stalled.sock.close()
        stop_server(server)


def ok_id(reply):
    assert reply.get("ok") is True, reply
    return reply["id"]
