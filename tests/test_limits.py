"""Flood and abuse limits: flood control, connections per IP, login backoff, bcrypt bound.

Timing rules (token bucket, backoff) are unit-tested on a task.Clock; the
limits themselves are also exercised end to end over real sockets. The slow
reader is in test_slow_reader.py.
"""

import json

import pytest
from twisted.internet import defer, task
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.usage import UsageError

from chatd.auth import ChatError
from chatd.limits import FLOOD_WINDOW, TOO_FAST, LoginThrottle, TokenBucket
from chatd.protocol import ChatFactory
from chatd.tap import Options
from support import (PASSWORD, connect, error, login, look_at, ok, register, start_server, until,
                     stop_server)

THROTTLED = "Too many failed logins; try again in"


@pytest.fixture
def log_events():
    """Every twisted.logger event emitted during the test, formatted."""
    from twisted.logger import formatEvent
    events = []

    def observe(event):
        events.append(formatEvent(event))
    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


# -- the token bucket and flood control (task.Clock) ---------------------------

def test_token_bucket_allows_a_burst_then_the_steady_rate():
    clock = task.Clock()
    bucket = TokenBucket(clock, rate=5, burst=20)
    assert all(bucket.take() for _ in range(20))
    assert not bucket.take()
    clock.advance(0.2)                      # one token back
    assert bucket.take() and not bucket.take()
    clock.advance(3600)                     # refills, but never above the burst
    assert sum(bucket.take() for _ in range(30)) == 20


@pytest.fixture
def flood_connection(sqlite_server):
    """One connection on a StringTransport whose flood control runs on a task.Clock."""
    clock = task.Clock()
    protocol = ChatFactory(sqlite_server, clock=clock).buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    yield protocol, transport, clock
    protocol.connectionLost(None)


def send_lines(protocol, transport, payloads):
    protocol.dataReceived(b"".join(json.dumps(p).encode() + b"\n" for p in payloads))
    replies = [json.loads(line) for line in transport.value().splitlines()]
    transport.clear()
    return replies


def test_past_the_burst_requests_are_refused_and_nothing_happens(flood_connection, sqlite_server):
    protocol, transport, clock = flood_connection
    burst = sqlite_server.config.flood_burst
    replies = send_lines(protocol, transport, [{"my_requests": "", "ref": n} for n in range(burst)])
    assert all("Log in first" in r["error"] for r in replies)
    refused = send_lines(protocol, transport, [
        {"register": "mallory", "password": PASSWORD, "email": "m@example.org", "ref": "r"}])
    assert refused == [{"reply_to": "register", "ref": "r", "error": TOO_FAST}]
    assert not protocol.paused      # a register being handled would wait for bcrypt
    clock.advance(1 / sqlite_server.config.flood_rate)     # one request's worth
    again = send_lines(protocol, transport, [{"my_requests": ""}, {"my_requests": ""}])
    assert "Log in first" in again[0]["error"] and again[1]["error"] == TOO_FAST
    assert not transport.disconnecting


def test_heartbeats_cost_a_quarter_of_a_request(flood_connection, sqlite_server):
    protocol, transport, clock = flood_connection
    send_lines(protocol, transport, [{"my_requests": ""}] * sqlite_server.config.flood_burst)
    clock.advance(1 / sqlite_server.config.flood_rate)
    replies = send_lines(protocol, transport, [{"presence": "online"}] * 5)
    assert [r["error"] == TOO_FAST for r in replies] == [False] * 4 + [True]


def test_an_honest_clients_heartbeats_and_clicks_never_trip_flood_control(
        flood_connection, sqlite_server):
    protocol, transport, clock = flood_connection
    for _ in range(120):    # ten minutes: a heartbeat every 5 s, and clicking through 12 channels
        clock.advance(5)
        replies = send_lines(protocol, transport, [{"presence": "online"}] + [
            {"get_channel": "general"}, {"presence": "online", "channel": "general"}] * 12)
        assert not any(r.get("error") == TOO_FAST for r in replies)


def test_a_client_that_keeps_flooding_is_disconnected(flood_connection, sqlite_server, log_events):
    protocol, transport, clock = flood_connection
    config = sqlite_server.config
    # Refusals older than the window are forgiven...
    just_under = [{"my_requests": ""}] * (config.flood_burst + config.flood_strikes - 1)
    send_lines(protocol, transport, just_under)
    clock.advance(FLOOD_WINDOW + 0.1)
    replies = send_lines(protocol, transport, just_under)
    assert not transport.disconnecting and replies[-1]["error"] == TOO_FAST
    # ...but the strikes'th refusal within it ends the connection, with a reason.
    replies = send_lines(protocol, transport, [{"my_requests": ""}] * 3)
    assert replies == [{"event": "disconnect", "kind": "abuse", "reason":
                        "You kept sending too fast after being asked to wait; "
                        "this connection is closed."}]
    assert transport.disconnecting
    assert any("still sending too fast" in line for line in log_events)


def test_a_disconnected_client_that_never_reads_is_aborted_after_the_close_timeout(
        flood_connection, sqlite_server):
    protocol, transport, clock = flood_connection
    protocol.disconnect("abuse", "bye")
    assert transport.disconnecting and not protocol.aborted
    clock.advance(10)
    assert protocol.aborted


# -- login backoff (task.Clock) ---------------------------------------------------

def test_login_backoff_starts_after_the_threshold_doubles_and_is_capped():
    clock = task.Clock()
    throttle = LoginThrottle(clock, threshold=3, cap=10)
    assert [throttle.failed("alice", "192.0.2.1") for _ in range(3)] == [0, 0, 1]
    with pytest.raises(ChatError, match=r"^Too many failed logins; try again in 1 s\.$"):
        throttle.check("ALICE", "198.51.100.7")       # the account, from anywhere
    clock.advance(1)
    throttle.check("alice", "192.0.2.1")
    assert [throttle.failed("alice", "192.0.2.1") for _ in range(4)] == [2, 4, 8, 10]
    clock.advance(8.5)
    with pytest.raises(ChatError, match=r"try again in 2 s\."):
        throttle.check("alice", "192.0.2.1")
    throttle.succeeded("alice", "192.0.2.1")
    throttle.check("alice", "192.0.2.1")
    assert throttle.failed("alice", "192.0.2.1") == 0  # counting starts over


def test_login_backoff_per_ip_covers_every_name_from_it():
    clock = task.Clock()
    throttle = LoginThrottle(clock, threshold=3, cap=10)
    for name in ["bob", "carol", "dave"]:
        throttle.failed(name, "192.0.2.1")
    with pytest.raises(ChatError, match="try again in 1 s"):
        throttle.check("erin", "192.0.2.1")
    throttle.check("erin", "192.0.2.2")
    throttle.check("bob", "192.0.2.2")


# -- options ----------------------------------------------------------------------

def test_limit_options_have_documented_defaults_and_are_validated():
    options = Options()
    options.parseOptions([])
    config = options.config()
    assert (config.max_connections_per_ip, config.flood_burst, config.flood_rate,
            config.flood_strikes, config.login_failures, config.login_backoff_max,
            config.bcrypt_concurrency, config.max_output_buffer) == (
        20, 20, 5.0, 10, 5, 300.0, 2, 1048576)
    options = Options()
    options.parseOptions(["--flood-rate", "0.5", "--max-output-buffer", "65536"])
    assert options.config().flood_rate == 0.5
    for argv, message in [(["--flood-rate", "0"], "more than 0"),
                          (["--flood-rate", "fast"], "must be a number"),
                          (["--flood-burst", "0"], "at least 1"),
                          (["--max-connections-per-ip", "x"], "whole number"),
                          (["--max-output-buffer", "1000"], "at least 65536"),
                          (["--login-backoff-max", "-1"], "more than 0")]:
        with pytest.raises(UsageError, match=message):
            Options().parseOptions(argv)


# -- end to end -------------------------------------------------------------------

@defer.inlineCallbacks
def test_connections_past_the_per_ip_limit_get_one_line_and_are_closed(sqlite_database):
    server = start_server(sqlite_database, max_connections_per_ip=3)
    try:
        clients = yield defer.gatherResults([connect(server) for _ in range(3)])
        extra = yield connect(server)
        notice = yield extra.event("disconnect")
        assert notice == {"event": "disconnect", "kind": "limit", "reason":
                          "Too many connections from your address 127.0.0.1 (at most 3); "
                          "close one and try again."}
        yield extra.closed
        assert extra.inbox == []
        for client in clients:
            assert "Log in first" in error((yield client.request({"list_users": ""})))
        clients[0].transport.loseConnection()
        yield clients[0].closed
        yield until(lambda: server.connections.per_group == {"127.0.0.1": 2})
        replacement = yield connect(server)
        assert "Log in first" in error((yield replacement.request({"list_users": ""})))
        assert server.connections.per_group == {"127.0.0.1": 3}
    finally:
        stop_server(server)


@defer.inlineCallbacks
def test_failed_logins_back_off_without_bcrypt_and_are_logged(database, log_events):
    server = start_server(database, login_failures=3)
    try:
        checks = []
        real_check = server.hasher.check
        server.hasher.check = lambda *args, **kw: checks.append(args[0]) or real_check(*args, **kw)
        for name in ["alice", "bob"]:
            yield register(server, name)
        client = yield connect(server)
        for _ in range(3):
            reply = yield client.request({"user:pwd": "alice:wrong password"})
            assert error(reply) == "Wrong name or password."
        refused = yield client.request({"user:pwd": f"alice:{PASSWORD}"})
        assert error(refused) == f"{THROTTLED} 1 s."
        assert len(checks) == 3                 # the refused attempt ran no bcrypt
        # Per IP too: bob's account has no failures, but this address has.
        assert error((yield client.request({"user:pwd": f"bob:{PASSWORD}"}))).startswith(THROTTLED)
        yield task.deferLater(server.reactor, 1.2, lambda: None)
        ok((yield client.request({"user:pwd": f"alice:{PASSWORD}"})))   # and resets the count
        ok((yield client.request({"logout": ""})))
        again = yield client.request({"user:pwd": "alice:wrong password"})
        assert error(again) == "Wrong name or password."
        yield server.store.auth_events.drained()
        rows = yield server.store.query(
            "SELECT user_name, event FROM auth_log WHERE event LIKE ? ORDER BY id", ("login%",))
        assert [tuple(r) for r in rows] == (
            [("alice", "login_failed")] * 3 + [("alice", "login_throttled"),
                                               ("bob", "login_throttled"), ("alice", "login"),
                                               ("alice", "login_failed")])
        assert any("failed login for 'alice' from 127.0.0.1; backoff 1 s" in e for e in log_events)
        assert any("login for 'bob' from 127.0.0.1 refused" in e for e in log_events)
        assert not any("wrong password" in e or PASSWORD in e for e in log_events)
    finally:
        stop_server(server)


@pytest.mark.timeout(120)
@defer.inlineCallbacks
def test_a_login_storm_waits_for_bcrypt_while_messages_still_flow(sqlite_database):
    """30 logins at bcrypt cost 12: at most `bcrypt_concurrency` hash at once, and
    a message between two logged-in users is relayed while the rest still queue."""
    server = start_server(sqlite_database, bcrypt_rounds=12, max_connections_per_ip=100,
                          bcrypt_queue=100)
    try:
        alice = yield login(server, "alice")
        bob = yield login(server, "bob")
        yield register(server, "storm")
        yield look_at(alice, "general")
        yield look_at(bob, "general")
        stormers = yield defer.gatherResults([connect(server) for _ in range(30)])
        for stormer in stormers:
            stormer.send({"user:pwd": f"storm:{PASSWORD}"})
        replies = [s.wait_for(lambda m: m.get("reply_to") == "user:pwd", timeout=100)
                   for s in stormers]
        yield until(lambda: server.hasher.queued >= 20)
        sent = ok((yield alice.request({"channel_message": "still here", "channel": "general"})))
        relayed = yield bob.wait_for(lambda m: m.get("channel_message") == "still here")
        assert relayed["id"] == sent["id"]
        assert server.hasher.queued > 0 and server.hasher.running <= 2
        assert sum(d.called for d in replies) < 30
        answers = yield defer.gatherResults(replies)
        assert all(a.get("ok") for a in answers), answers
    finally:
        stop_server(server)


@defer.inlineCallbacks
def test_an_overlong_message_is_refused_and_not_relayed(sqlite_database):
    server = start_server(sqlite_database, max_message=10)
    try:
        alice = yield login(server, "alice")
        bob = yield login(server, "bob")
        yield look_at(alice, "general")
        yield look_at(bob, "general")
        refused = yield alice.request({"channel_message": "x" * 11, "channel": "general"})
        assert error(refused) == "A message is at most 10 characters; this one has 11."
        ok((yield alice.request({"channel_message": "x" * 10, "channel": "general"})))
        relayed = yield bob.wait_for(lambda m: "channel_message" in m)
        assert relayed["channel_message"] == "x" * 10
    finally:
        stop_server(server)
