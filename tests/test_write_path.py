"""The write path (chatd/output.py) over real sockets: the lines of one reactor
turn go out in one send, whole and in order; what the kernel does not take waits
in Twisted's buffer and comes first; the goodbye is the last thing sent.

The slow reader is a raw blocking socket in a thread (a tiny receive buffer,
small reads with pauses) and the server's side of it gets a tiny SO_SNDBUF, so
the kernel takes only part of most writes.
"""

import json
import socket
import time

import pytest
from twisted.internet import defer, reactor, task, threads

from chatd.bus import encode
from chatd.hub import unread_line
from chatd.limits import unsent_bytes
from support import login, look_at, register, start_server, stop_server
from test_slow_reader import Transport, stalled_client

TEXT = "y" * 2000
MESSAGES = 200


def read_slowly(sock, count):
    """Blocking: read in small pieces with pauses until `count` relayed messages came;
    returns every line, parsed (a line cut in two would not parse)."""
    sock.settimeout(60)
    buffer, lines, relayed = b"", [], 0
    while relayed < count:
        data = sock.recv(700)
        assert data, f"closed after {relayed} messages"
        buffer += data
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            message = json.loads(line)
            lines.append(message)
            relayed += message.get("channel_message") == TEXT
        time.sleep(0.001)
    return lines


def server_socket(connection):
    """The kernel socket under a server-side connection (below TLS if there is TLS)."""
    transport = connection.transport
    return getattr(transport, "socket", None) or transport.transport.socket


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["tcp", "tls"])
@defer.inlineCallbacks
def test_a_slow_reader_behind_a_small_send_buffer_gets_every_line_whole_and_in_order(
        kind, sqlite_database, tmp_path):
    via = Transport(kind, tmp_path)
    server = start_server(sqlite_database, listen=via.listen, flood_burst=10**6,
                          flood_rate=10**6, presence_timeout=600, max_output_buffer=10**7)
    slow = None
    try:
        sender = yield via.login(server, "sender")
        yield look_at(sender, "general")
        (yield via.login(server, "slow")).transport.loseConnection()
        slow = yield threads.deferToThread(
            stalled_client, server.address.port, "slow", "general", via.tls_context)
        connection = server.hub.sessions["slow"].connection
        server_socket(connection).setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        buffered = []   # what Twisted held for the slow reader, sampled
        sampler = task.LoopingCall(lambda: buffered.append(unsent_bytes(connection.transport)))
        sampler.start(0.005)
        reading = threads.deferToThread(read_slowly, slow, MESSAGES)

        sent_ids = []
        for _ in range(MESSAGES // 50):
            for _ in range(50):
                sender.send({"channel_message": TEXT, "channel": "general"})
            for _ in range(50):
                reply = yield sender.wait_for(lambda m: m.get("reply_to") == "channel_message")
                sent_ids.append(reply["id"])
        lines = yield reading
        sampler.stop()

        relayed = [m for m in lines if m.get("channel_message") == TEXT]
        assert [m["id"] for m in relayed] == sent_ids
        assert all(m["channel"] == "general" and m["user"] == "sender" for m in relayed)
        assert max(buffered) > 100_000, "the kernel took everything: nothing was partial"
        assert "slow" in server.hub.sessions   # not dropped: under --max-output-buffer
    finally:
        if slow is not None:
            slow.close()
        stop_server(server)


class CountingSocket:
    """A kernel socket that counts its `send` calls with data (everything else passes through)."""

    def __init__(self, sock):
        self._sock = sock
        self.sends = 0

    def send(self, data, *flags):
        self.sends += bool(len(data))  # Twisted's close sends b"" once (loseWriteConnection)
        return self._sock.send(data, *flags)

    def __getattr__(self, name):
        return getattr(self._sock, name)


@pytest.mark.timeout(60)
@defer.inlineCallbacks
def test_the_lines_of_one_turn_go_out_in_one_send_and_the_goodbye_comes_last(sqlite_database):
    server = start_server(sqlite_database)
    try:
        bob = yield login(server, "bob")
        connection = server.hub.sessions["bob"].connection
        counting = connection.transport.socket = CountingSocket(connection.transport.socket)

        for n in range(100):
            connection.write_line(encode({"event": "test", "n": n}))
        assert counting.sends == 0      # nothing is sent before the turn ends
        for n in range(100):
            assert (yield bob.wait_for(lambda m: m.get("event") == "test"))["n"] == n
        assert counting.sends == 1
        assert connection.transport.dataBuffer == b"" and not connection.transport._tempDataLen

        for n in range(10):
            connection.write_line(encode({"event": "test", "n": n}))
        connection.disconnect("test", "Goodbye.")
        connection.write_line(encode({"event": "test", "n": "after the goodbye"}))
        yield bob.closed
        assert [m.get("n") for m in bob.inbox[:10]] == list(range(10))
        assert bob.inbox[10] == {"event": "disconnect", "kind": "test", "reason": "Goodbye."}
        assert len(bob.inbox) == 11
        assert counting.sends == 2
    finally:
        stop_server(server)


@pytest.mark.timeout(60)
@defer.inlineCallbacks
def test_lines_queued_for_a_connection_that_is_aborted_are_not_sent(sqlite_database):
    server = start_server(sqlite_database)
    try:
        yield register(server, "carol")
        carol = yield login(server, "carol", register_first=False)
        connection = server.hub.sessions["carol"].connection
        counting = connection.transport.socket = CountingSocket(connection.transport.socket)
        connection.write_line(encode({"event": "test", "n": 1}))
        connection._abort()
        yield carol.closed
        yield task.deferLater(reactor, 0.05, lambda: None)
        assert counting.sends == 0 and carol.inbox == []
    finally:
        stop_server(server)


@pytest.mark.parametrize("channel", ["general", 'quo"te\\back', "日本語", "ünïcode"])
def test_the_shared_unread_line_is_the_same_bytes_as_its_event(channel):
    for count in (1, 9, 10, 123456):
        assert unread_line(channel, count) == encode(
            {"event": "unread", "channel": channel, "count": count})
