"""Presence: member lists, away/online/offline, delivery only to viewers.

End-to-end tests use real clients over TCP; the timer tests drive the hub's
clock with twisted.internet.task.Clock so nothing sleeps.
"""

import json

from twisted.internet import defer
from twisted.internet.task import Clock

from chatd.accounts import Accounts
from chatd.hub import Channel, Hub
from support import login, look_at, start_server, stop_server


def statuses(event):
    return {m["user"]: m["status"] for m in event["members"]}


@defer.inlineCallbacks
def test_member_list_on_arrival_and_live_updates(server):
    yield server.hub.create_channel("random", False, None)
    alice = yield login(server, "alice")
    members = yield look_at(alice, "general")
    assert statuses(members) == {"alice": "online"}
    bob = yield login(server, "bob")
    members = yield look_at(bob, "general")
    assert statuses(members) == {"alice": "online", "bob": "online"}
    arrived = yield alice.event("member", user="bob")
    assert arrived == {"event": "member", "channel": "general", "user": "bob", "status": "online"}

    bob.send({"presence": "away", "channel": "general", "user": "bob"})
    assert (yield alice.event("member", user="bob"))["status"] == "away"
    bob.send({"presence": "online", "channel": "general", "user": "bob"})
    assert (yield alice.event("member", user="bob"))["status"] == "online"

    yield bob.request({"join": "random"})
    bob.send({"presence": "online", "channel": "random"})
    assert (yield alice.event("member", user="bob"))["status"] == "left"
    assert statuses((yield bob.event("members", channel="random"))) == {"bob": "online"}

    bob.send({"presence": "online", "channel": "general"})
    assert (yield alice.event("member", user="bob"))["status"] == "online"
    bob.transport.loseConnection()
    assert (yield alice.event("member", user="bob"))["status"] == "offline"


@defer.inlineCallbacks
def test_silent_client_goes_offline_and_leaves_member_lists(database):
    server = start_server(database, presence_timeout=0.3)
    try:
        alice = yield login(server, "alice")
        yield look_at(alice, "general")
        bob = yield login(server, "bob")
        yield look_at(bob, "general")
        yield alice.event("member", user="bob", status="online")
        # alice keeps sending heartbeats; bob falls silent.
        for _ in range(4):
            alice.send({"presence": "online", "channel": "general"})
            yield alice.barrier()
            yield deferLater(0.1)
        gone = yield alice.event("member", user="bob")
        assert gone["status"] == "offline"
        listing = yield alice.request({"list_users": ""})
        assert {"user": "bob", "status": "offline"} in listing["users"]
        assert {"user": "alice", "status": "online"} in listing["users"]
    finally:
        stop_server(server)


def deferLater(seconds):
    from twisted.internet import reactor, task
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def test_live_delivery_to_viewers_unread_to_members_elsewhere(server):
    yield server.hub.create_channel("random", False, None)
    alice = yield login(server, "alice")
    yield look_at(alice, "general")
    bob = yield login(server, "bob")          # member, looking at another channel
    yield bob.request({"join": "general"})
    yield look_at(bob, "random")
    carol = yield login(server, "carol")      # member, looking at settings (nothing)
    yield carol.request({"join": "general"})
    carol.send({"presence": "online"})
    dave = yield login(server, "dave")        # not a member, looking at general: refused
    dave.send({"presence": "online", "channel": "general"})
    refused = yield dave.wait_for(lambda m: m.get("reply_to") == "presence")
    assert "not a member" in refused["error"]

    for text in ("one", "two"):
        yield alice.request({"channel_message": text, "channel": "general"})
    yield alice.wait_for(lambda m: m.get("channel_message") == "one")
    first = yield bob.event("unread", channel="general")
    second = yield bob.event("unread", channel="general")
    assert (first["count"], second["count"]) == (1, 2)
    for client in (bob, carol, dave):
        yield client.barrier()
        assert not client.take(lambda m: "channel_message" in m), client.name
    # Looking at nothing: no messages, but unread counts (docs/protocol.md, presence).
    assert [m["count"] for m in carol.take(lambda m: m.get("event") == "unread")] == [1, 2]
    assert not dave.take(lambda m: m.get("event") == "unread")

    # Looking at the channel clears the count; history shows what was missed.
    page = yield bob.request({"get_channel": "general"})
    assert [m["channel_message"] for m in page["messages"]] == ["one", "two"]
    yield alice.request({"channel_message": "three", "channel": "general"})
    assert (yield bob.wait_for(lambda m: "channel_message" in m))["channel_message"] == "three"


@defer.inlineCallbacks
def test_private_conversation_shows_the_other_persons_status(server):
    alice = yield login(server, "alice")
    alice.send({"presence": "online", "other_user": "bob"})
    # bob has no account yet: an error, and nothing delivered
    assert "no user" in (yield alice.wait_for(lambda m: m.get("reply_to") == "presence"))["error"]
    bob = yield login(server, "bob")
    alice.send({"presence": "online", "other_user": "bob"})
    assert (yield alice.event("peer", other_user="bob"))["status"] == "online"
    bob.send({"presence": "away", "user": "bob"})
    assert (yield alice.event("peer", other_user="bob"))["status"] == "away"
    bob.transport.loseConnection()
    assert (yield alice.event("peer", other_user="bob"))["status"] == "offline"
    # private messages reach an online recipient whatever it looks at
    bob = yield login(server, "bob", register_first=False)
    bob.send({"presence": "online"})
    yield alice.request({"private_message": "hi", "other_user": "bob"})
    assert (yield bob.wait_for(lambda m: "private_message" in m))["private_message"] == "hi"


# -- timers on a Clock -------------------------------------------------------

class RecordingConnection:
    """Collects what the hub writes to one session: the unit under test is the hub."""

    login_pending = False   # as a ChatProtocol whose login reply is written

    def __init__(self):
        self.lines = []

    def write_line(self, line):
        self.lines.append(line)

    def write_lines(self, lines, chunk):
        self.lines.append(chunk)

    def disconnect(self, kind, reason):
        self.lines.append(("disconnect", kind))

    def events(self):
        """Every line written, decoded (one write may hold several: Hub.relay)."""
        return [json.loads(one) for line in self.lines if isinstance(line, bytes)
                for one in line.splitlines()]

    def bytes_written(self):
        return sum(len(line) for line in self.lines if isinstance(line, bytes))


def clock_hub(timeout=15.0):
    clock = Clock()
    hub = Hub(store=None, accounts=Accounts(None, None, None), clock=clock,
              max_message=4000, presence_timeout=timeout)
    hub.channels["general"] = Channel(1, "general", False)
    return clock, hub


def join(hub, name):
    hub.accounts.add(name)
    hub.channels["general"].members.add(name)
    connection = RecordingConnection()
    session = hub.start_session(connection, name, "127.0.0.1")
    return session, connection


def test_offline_after_timeout_and_back_on_heartbeat():
    clock, hub = clock_hub(timeout=15)
    alice, alice_out = join(hub, "alice")
    bob, _ = join(hub, "bob")
    hub.presence.heartbeat(alice, "online", channel="general")
    hub.presence.heartbeat(bob, "online", channel="general")
    for _ in range(5):                  # heartbeats every 5 s keep bob online
        clock.advance(5)
        hub.presence.heartbeat(alice, "online", channel="general")
        hub.presence.heartbeat(bob, "online", channel="general")
    assert bob.status == "online"
    alice_out.lines.clear()
    for _ in range(3):                  # bob falls silent; alice keeps going
        clock.advance(5)
        hub.presence.heartbeat(alice, "online", channel="general")
    assert bob.status == "offline" and bob.viewing is None
    assert alice_out.events() == [
        {"event": "member", "channel": "general", "user": "bob", "status": "offline"}]
    assert "bob" not in hub.presence.viewers("general")
    hub.presence.heartbeat(bob, "online", channel="general")
    assert bob.status == "online"
    assert alice_out.events()[-1]["status"] == "online"


def test_away_and_back_reach_channel_viewers_and_peers():
    clock, hub = clock_hub()
    alice, alice_out = join(hub, "alice")
    bob, _ = join(hub, "bob")
    carol, carol_out = join(hub, "carol")
    hub.presence.heartbeat(alice, "online", channel="general")
    hub.presence.heartbeat(bob, "online", channel="general")
    hub.presence.heartbeat(carol, "online", other_user="bob")
    alice_out.lines.clear()
    carol_out.lines.clear()
    for _ in range(12):                 # the client says "away" after 60 s idle
        clock.advance(5)
        hub.presence.heartbeat(alice, "online", channel="general")
        hub.presence.heartbeat(bob, "online", channel="general")
        hub.presence.heartbeat(carol, "online", other_user="bob")
    hub.presence.heartbeat(bob, "away", channel="general")
    assert alice_out.events() == [
        {"event": "member", "channel": "general", "user": "bob", "status": "away"}]
    assert carol_out.events() == [{"event": "peer", "other_user": "bob", "status": "away"}]
    hub.presence.heartbeat(bob, "online", channel="general")
    assert alice_out.events()[-1]["status"] == "online"
    assert carol_out.events()[-1] == {"event": "peer", "other_user": "bob", "status": "online"}


def test_a_heartbeat_that_changes_nothing_sends_nothing():
    clock, hub = clock_hub()
    sessions = [join(hub, f"user{n}") for n in range(50)]
    for session, _ in sessions:
        hub.presence.heartbeat(session, "online", channel="general")
    before = sum(out.bytes_written() for _, out in sessions)
    for session, _ in sessions:
        clock.advance(0.1)
        hub.presence.heartbeat(session, "online", channel="general")
    assert sum(out.bytes_written() for _, out in sessions) == before
    assert all(session.status == "online" for session, _ in sessions)


def test_a_presence_update_reaches_only_the_same_place():
    clock, hub = clock_hub()
    hub.channels["random"] = Channel(2, "random", False)
    alice, alice_out = join(hub, "alice")
    bob, bob_out = join(hub, "bob")
    hub.channels["random"].members.add("bob")
    hub.presence.heartbeat(alice, "online", channel="general")
    hub.presence.heartbeat(bob, "online", channel="random")
    alice_out.lines.clear()
    hub.presence.heartbeat(bob, "away", channel="random")
    assert alice_out.lines == []


def test_one_timer_serves_every_session_and_heartbeats_make_no_new_ones():
    """A DelayedCall per session cost about 1 kB each and heap work at every heartbeat."""
    clock, hub = clock_hub(timeout=15)
    sessions = [join(hub, f"user{n}")[0] for n in range(200)]
    for _ in range(3):
        for session in sessions:
            hub.presence.heartbeat(session, "online", channel="general")
        clock.advance(5)
    assert len(clock.getDelayedCalls()) == 1
    assert all(session.status == "online" for session in sessions)
    clock.advance(20)           # all silent: offline within 1 1/3 timeouts
    assert all(session.status == "offline" for session in sessions)
