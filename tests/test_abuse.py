"""What one connection, logged in or not, can still do to everyone (issue 11, connection level).

Real servers on loopback and real sockets; the line splitter's cost is also
measured on a StringTransport, where the reactor is not in the way.
"""

import gc
import json
import resource
import time

import pytest
from twisted.internet import defer, reactor, task, threads
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher

import support
from chatd.addresses import address_group, parse_network, plain_address
from chatd.limits import FD_HEADROOM, default_max_connections
from chatd.moderation import MANHOLE
from chatd.protocol import ChatFactory
from support import (LIMITS_LIFTED, connect, error, login, login_admin, look_at, ok,
                     register, start_server, stop_server)
from test_slow_reader import Transport, stalled_client, wait_closed


@pytest.fixture
def warnings():
    """Formatted log events at warning level or above during the test."""
    seen = []

    def observe(event):
        level = event.get("log_level")
        if level is not None and level.name in ("warn", "error", "critical"):
            seen.append(formatEvent(event))
    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


@defer.inlineCallbacks
def until(condition, timeout=15):
    deadline = reactor.seconds() + timeout
    while not condition():
        assert reactor.seconds() < deadline, "condition never held"
        yield task.deferLater(reactor, 0.02, lambda: None)


# -- blank lines and the line splitter ------------------------------------------

@defer.inlineCallbacks
def test_a_blank_line_flood_is_cut_off_like_any_other_flood(sqlite_database):
    server = start_server(sqlite_database)
    try:
        alice = yield login(server, "alice")
        flooder = yield connect(server)
        flooder.send_raw(b"\n" * 100_000)
        notice = yield flooder.event("disconnect")
        assert notice["kind"] == "abuse" and "too fast" in notice["reason"]
        refused = flooder.take(lambda m: m.get("error") == "You are sending too fast; wait a moment.")
        assert 0 < len(refused) < 20       # a strike per refused line, then the goodbye
        yield flooder.closed
        spaces = yield connect(server)
        spaces.send_raw(b" \r\n" * 100_000)
        assert (yield spaces.event("disconnect"))["kind"] == "abuse"
        ok((yield alice.request({"list_users": ""})))
    finally:
        stop_server(server)


def _seconds_to_split(server, lines):
    connection = ChatFactory(server).buildProtocol(None)
    connection.makeConnection(StringTransport())
    gc.disable()
    try:
        # CPU time of this thread, not wall time: other processes on a busy
        # machine do not count, only the work of splitting.
        started = time.thread_time()
        connection.dataReceived(b"\n" * lines)
        spent = time.thread_time() - started
    finally:
        gc.enable()
    connection.connectionLost(None)
    return spent


def test_one_read_is_split_in_linear_time(sqlite_database):
    """Four times the lines in one read cost about four times the CPU (LineReceiver: sixteen)."""
    server = start_server(sqlite_database, **LIMITS_LIFTED)
    try:
        _seconds_to_split(server, 1000)     # warm up
        small = min(_seconds_to_split(server, 50_000) for _ in range(5))
        large = min(_seconds_to_split(server, 200_000) for _ in range(5))
        print(f"split 50k lines: {small:.3f} s, 200k: {large:.3f} s")
        assert large < 8 * small, (small, large)
    finally:
        stop_server(server)


def test_a_paused_connection_keeps_its_lines_and_answers_them_in_order(sqlite_server):
    """Lines after a request with a Deferred reply wait, in the buffer, until it is answered."""
    connection = ChatFactory(sqlite_server).buildProtocol(None)
    transport = StringTransport()
    connection.makeConnection(transport)
    connection.dataReceived(b'{"user:pwd": "alice:whatever pass", "ref": 1}\n'
                            b'{"list_channels": "", "ref": 2}\r\n{"list_')
    # The login waits for SQL (a thread), so nothing after it is handled yet; reading
    # goes on until more comes (a client that waits for its answer costs no epoll change).
    assert connection.paused and transport.value() == b""
    assert transport.producerState == "producing"
    connection.dataReceived(b'users": "", "ref": 3}\n')
    assert transport.producerState == "paused"     # more came: now reading waits too
    support.wait(until(lambda: transport.value().count(b"\n") == 3))
    replies = [json.loads(line) for line in transport.value().splitlines()]
    assert [r["ref"] for r in replies] == [1, 2, 3] and all("error" in r for r in replies)
    assert not connection.paused and transport.producerState == "producing"
    connection.connectionLost(None)


# -- the line limit, duplicate keys, invisible messages -------------------------------

def _exactly(size, action="list_channels"):
    start = f'{{"{action}": ""'.encode()
    return start + b" " * (size - len(start) - 1) + b"}"


@defer.inlineCallbacks
def test_the_line_limit_counts_the_content_not_the_crlf(sqlite_server):
    limit = sqlite_server.config.max_line
    crlf = yield connect(sqlite_server)
    crlf.send_raw(_exactly(limit) + b"\r\n")
    assert "Log in first" in error((yield crlf.wait_for(lambda m: "reply_to" in m)))
    crlf.send_raw(_exactly(limit + 1) + b"\r\n")
    assert (yield crlf.event("disconnect"))["kind"] == "abuse"
    lf = yield connect(sqlite_server)
    lf.send_raw(_exactly(limit) + b"\n")
    assert "Log in first" in error((yield lf.wait_for(lambda m: "reply_to" in m)))
    lf.send_raw(b"{" + b" " * limit)            # no end of line, and already too long
    assert (yield lf.event("disconnect"))["kind"] == "abuse"


@defer.inlineCallbacks
def test_duplicate_keys_are_refused(sqlite_server):
    alice = yield login(sqlite_server, "alice")
    yield look_at(alice, "general")
    alice.send_raw(b'{"channel_message": "hi", "channel": "secret", "channel": "general",'
                   b' "ref": 7}\n')
    # Like a line that is not JSON, it has no `ref` the server could trust.
    reply = yield alice.wait_for(lambda m: "reply_to" in m)
    assert reply["reply_to"] is None and error(reply) == "That line has the key 'channel' twice; send each field once."
    alice.send_raw(b'{"list_users": "", "ref": 8, "x": {"a": 1, "a": 2}}\n')
    assert "'a' twice" in error((yield alice.wait_for(lambda m: "reply_to" in m)))
    yield alice.barrier()
    assert alice.take(lambda m: "channel_message" in m) == []


@defer.inlineCallbacks
def test_a_message_of_only_invisible_characters_is_empty(sqlite_server):
    alice = yield login(sqlite_server, "alice")
    bob = yield login(sqlite_server, "bob")
    yield look_at(alice, "general")
    for text in ["\u200b", "\u2060\ufeff", " \u200b\u200c\u200d \n", "\u3164", "\u00ad\u2800"]:
        reply = yield alice.request({"channel_message": text, "channel": "general"})
        assert error(reply) == "The message is empty.", repr(text)
        reply = yield alice.request({"private_message": text, "other_user": "bob"})
        assert error(reply) == "The message is empty.", repr(text)
    ok((yield alice.request({"channel_message": "a\u200bb", "channel": "general"})))
    yield bob.barrier()
    assert bob.take(lambda m: "private_message" in m) == []


# -- deadlines and connection caps ------------------------------------------------------

@defer.inlineCallbacks
def test_a_connection_that_does_not_log_in_is_closed_at_the_deadline(sqlite_database):
    server = start_server(sqlite_database, login_timeout=1)
    try:
        yield register(server, "alice")
        silent, chatty, half = yield defer.gatherResults([connect(server) for _ in range(3)])
        alice = yield login(server, "alice", register_first=False)
        half.send_raw(b'{"list_')
        started = reactor.seconds()
        for _ in range(3):
            chatty.send({"list_users": ""})
            yield task.deferLater(reactor, 0.4, lambda: None)
        for client in (silent, chatty, half):
            notice = yield client.event("disconnect")
            assert notice == {"event": "disconnect", "kind": "timeout", "reason":
                              "You did not log in within 1 s; this connection is closed."}
            yield client.closed
        assert reactor.seconds() - started < 3
        ok((yield alice.request({"list_users": ""})))        # logged in in time: stays
    finally:
        stop_server(server)


@defer.inlineCallbacks
def test_a_logged_in_connection_that_goes_silent_is_closed(sqlite_database):
    server = start_server(sqlite_database, presence_timeout=1)
    assert server.idle_timeout == 4
    try:
        quiet = yield login(server, "quiet")
        alive = yield login(server, "alive")
        started = reactor.seconds()
        while not quiet.closed.called:
            assert reactor.seconds() - started < 8
            alive.send({"presence": "online"})
            yield task.deferLater(reactor, 0.5, lambda: None)
        notice = quiet.take(lambda m: m.get("event") == "disconnect")
        assert notice and notice[0]["kind"] == "timeout" and "4 s" in notice[0]["reason"]
        assert 4 <= reactor.seconds() - started < 6
        ok((yield alive.request({"list_users": ""})))
    finally:
        stop_server(server)


def test_the_connection_cap_is_derived_from_the_descriptor_limit(sqlite_server):
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert default_max_connections() == soft - FD_HEADROOM
    assert sqlite_server.max_connections == soft - FD_HEADROOM


@defer.inlineCallbacks
def test_past_the_connection_cap_newcomers_get_a_limit_line(sqlite_database, warnings):
    server = start_server(sqlite_database, max_connections=3)
    try:
        first = yield login(server, "alice")
        others = yield defer.gatherResults([connect(server) for _ in range(2)])
        extras = yield defer.gatherResults([connect(server) for _ in range(5)])
        for extra in extras:
            notice = yield extra.event("disconnect")
            assert notice == {"event": "disconnect", "kind": "limit",
                              "reason": "The server is full right now; try again in a minute."}
            yield extra.closed
        assert len([w for w in warnings if "--max-connections)" in w]) == 1     # throttled
        ok((yield first.request({"list_users": ""})))
        others[0].transport.loseConnection()
        yield until(lambda: server.connections.total == 2)
        replacement = yield connect(server)
        assert "Log in first" in error((yield replacement.request({"list_users": ""})))
    finally:
        stop_server(server)


def test_an_ipv6_slash_64_counts_as_one_address():
    assert address_group("2001:db8:1:2::1") == address_group("2001:db8:1:2:ffff::9") \
        == "2001:db8:1:2::/64"
    assert address_group("2001:db8:1:3::1") != address_group("2001:db8:1:2::1")
    assert address_group("203.0.113.7") == "203.0.113.7"
    assert address_group("::ffff:203.0.113.7") == "203.0.113.7"


# -- output that is never read --------------------------------------------------------

@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["tcp", "tls"])
@defer.inlineCallbacks
def test_one_big_page_that_is_never_read_is_dropped_after_the_drain_timeout(
        kind, sqlite_database, tmp_path, warnings):
    via = Transport(kind, tmp_path)
    # --max-reply lifted: with the default 64 KiB the page would be cut to fit.
    server = start_server(sqlite_database, listen=via.listen, max_output_buffer=65536, max_line=65536,
                          drain_timeout=1, presence_timeout=600, max_reply=4 * 1024 * 1024,
                          **LIMITS_LIFTED)
    stalled = None
    try:
        writer = yield via.login(server, "writer")
        yield look_at(writer, "general")
        # 200 messages of 4000 four-byte characters: a 3.2 MB page, more than the
        # kernel's socket buffers take.
        for i in range(200):
            ok((yield writer.request({"channel_message": f"{i:03} " + "\U0001F600" * 3990,
                                      "channel": "general"})))
        (yield via.login(server, "stalled")).transport.loseConnection()
        stalled = yield threads.deferToThread(
            stalled_client, server.address.port, "stalled", "general", via.tls_context)
        # One request, then never another read: the reply is far over the limit.
        stalled.sendall(b'{"get_channel": "general", "limit": 200}\n')
        started = reactor.seconds()
        yield until(lambda: "stalled" not in server.hub.sessions, timeout=10)
        assert reactor.seconds() - started < 5
        assert (yield threads.deferToThread(wait_closed, stalled))
        [drop] = [w for w in warnings if "dropping stalled" in w]
        assert "dropping stalled from 127.0.0.1: " in drop and "held after --drain-timeout 1 s" \
            in drop
        # A client that reads gets the same page and stays.
        page = yield writer.request({"get_channel": "general", "limit": 200})
        assert len(ok(page)["messages"]) == 200
        yield task.deferLater(reactor, 1.5, lambda: None)
        ok((yield writer.request({"list_users": ""})))
    finally:
        if stalled is not None:
            stalled.close()
        stop_server(server)


# -- IPv4-mapped addresses --------------------------------------------------------------

def test_mapped_addresses_and_ranges_are_written_as_ipv4():
    assert plain_address("::ffff:127.0.0.2") == "127.0.0.2"
    assert plain_address("2001:db8::1") == "2001:db8::1"
    assert str(parse_network("::ffff:127.0.0.0/104")) == "127.0.0.0/8"
    assert str(parse_network(" ::FFFF:10.1.2.3 ")) == "10.1.2.3/32"
    assert str(parse_network("::/0")) == "::/0"


@defer.inlineCallbacks
def test_on_a_dual_stack_listener_users_have_ipv4_addresses_for_bans_and_kicks(
        sqlite_database):
    # An IPv6 socket bound to the mapped loopback address: IPv4 clients reach it mapped.
    server = start_server(sqlite_database, listen=r"tcp6:0:interface=\:\:ffff\:127.0.0.1",
                          **LIMITS_LIFTED)
    try:
        admin = yield login_admin(server, "root")
        victim = yield login(server, "victim")
        assert server.hub.sessions["victim"].ip == "127.0.0.1"
        assert server.hub.ips["victim"] == "127.0.0.1"
        reply = yield admin.request({"command": "/ban ::ffff:127.0.0.0/104"})
        assert "you cannot ban yourself" in error(reply)
        reply = yield admin.request({"command": "/kick ::ffff:127.0.0.0/104"})
        assert "you cannot kick yourself" in error(reply)
        # The manhole (no address of its own) kicks by the mapped form...
        result = yield server.moderation.kick(MANHOLE, "::ffff:127.0.0.1", "test")
        assert "2 connection(s) closed" in result["result"]
        assert (yield victim.event("disconnect"))["kind"] == "kicked"
        # ... and a ban on the IPv4 range covers clients that arrive mapped.
        yield server.moderation.ban(MANHOLE, "127.0.0.0/8", "1h", "")
        newcomer = yield connect(server)
        notice = yield newcomer.event("disconnect")
        assert notice["kind"] == "banned" and "127.0.0.0/8" in notice["reason"]
    finally:
        stop_server(server)


# -- --admin for a name nobody has registered ---------------------------------------------

@defer.inlineCallbacks
def test_an_unclaimed_admin_name_is_warned_about_at_every_start(sqlite_database, warnings):
    server = start_server(sqlite_database, admins=["boss"])
    stop_server(server)
    server = start_server(sqlite_database, admins=["boss"])
    try:
        unclaimed = [w for w in warnings if "--admin boss: no such account yet" in w]
        assert len(unclaimed) == 2 and "whoever registers boss first becomes admin" \
            in unclaimed[0]
        boss = yield login(server, "boss")
        assert server.accounts.roles["boss"] == "admin"
        boss.transport.loseConnection()
        yield boss.closed
    finally:
        stop_server(server)
    warnings.clear()
    server = start_server(sqlite_database, admins=["boss"])
    stop_server(server)
    assert not [w for w in warnings if "--admin" in w]
