"""Conversations and read markers, end to end on both engines: list_conversations,
mark_read, the login reply's counts, and markers across a restart."""

from twisted.internet import defer

from support import error, login, look_at, ok, restart_server, stop_server


def by_place(conversations):
    return {c.get("channel") or "@" + c["other_user"]: c for c in conversations}


@defer.inlineCallbacks
def say(client, text, **place):
    reply = ok((yield client.request(dict(place, **{
        "channel_message" if "channel" in place else "private_message": text}))))
    return reply["id"]


@defer.inlineCallbacks
def say_many(client, count, **place):
    ids = []
    for i in range(count):
        ids.append((yield say(client, f"message {i}", **place)))
    return ids


@defer.inlineCallbacks
def test_conversations_list_channels_and_private_ones_with_unread_counts(server):
    alice = yield login(server, "alice")
    bob = yield login(server, "bob")
    carol = yield login(server, "carol")
    ok((yield alice.request({"join": "general"})))
    ok((yield bob.request({"join": "general"})))
    before_join = yield say(alice, "before carol joined", channel="general")
    ok((yield carol.request({"join": "general"})))
    first = yield say(alice, "one", channel="general")
    last = yield say(bob, "two", channel="general")
    to_carol = yield say(bob, "psst", other_user="carol")
    from_carol = yield say(carol, "hi alice", other_user="alice")

    listed = ok((yield carol.request({"list_conversations": "", "user": "carol"})))
    conversations = listed["conversations"]
    assert [c.get("channel") or c["other_user"] for c in conversations] == [
        "general", "alice", "bob"], conversations   # channels, then private newest first
    general, with_alice, with_bob = conversations
    # Joining marks what was said before as read; carol's own messages are never unread.
    assert general == {"channel": "general", "private": False, "last_id": last,
                       "last_time": general["last_time"], "read": before_join, "unread": 2,
                       "mentions": 0}
    assert general["last_time"].endswith("Z")
    assert (with_bob["last_id"], with_bob["read"], with_bob["unread"]) == (to_carol, 0, 1)
    assert (with_alice["last_id"], with_alice["unread"]) == (from_carol, 0)
    assert first < last

    alice_sees = by_place(ok((yield alice.request({"list_conversations": ""})))["conversations"])
    assert alice_sees["general"]["unread"] == 1 and alice_sees["general"]["read"] == 0
    assert alice_sees["@carol"]["unread"] == 1
    assert "@bob" not in alice_sees     # bob and alice never wrote to each other


@defer.inlineCallbacks
def test_mark_read_moves_forward_only_and_within_the_conversation(server):
    alice = yield login(server, "alice")
    bob = yield login(server, "bob")
    for client in (alice, bob):
        ok((yield client.request({"join": "general"})))
    ids = yield say_many(bob, 3, channel="general")
    private = yield say(bob, "psst", other_user="alice")

    marked = ok((yield alice.request({"mark_read": ids[1], "channel": "#general",
                                      "user": "alice"})))
    assert marked == {"reply_to": "mark_read", "ok": True, "ref": marked["ref"],
                      "channel": "general", "read": ids[1], "unread": 1, "mentions": 0}
    back = ok((yield alice.request({"mark_read": ids[0], "channel": "general"})))
    assert (back["read"], back["unread"]) == (ids[1], 1)       # never backwards
    # An id past the conversation's newest message stops at the newest one (here the
    # private message's id, which is not in the channel).
    ahead = ok((yield alice.request({"mark_read": private + 1000, "channel": "general"})))
    assert (ahead["read"], ahead["unread"]) == (ids[2], 0)
    peer = ok((yield alice.request({"mark_read": private, "other_user": "BOB"})))
    assert (peer["other_user"], peer["read"], peer["unread"]) == ("bob", private, 0)
    rows = yield server.store.query("SELECT user_name, channel_id, peer_key, last_read"
                                    " FROM read_markers WHERE user_name = 'alice'"
                                    " ORDER BY channel_id")
    assert [tuple(r) for r in rows] == [("alice", 0, "alice|bob", private),
                                        ("alice", server.hub.channels["general"].id, "",
                                         ids[2])]

    assert "one conversation" in error((yield alice.request({"mark_read": 1})))
    assert "one conversation" in error((yield alice.request(
        {"mark_read": 1, "channel": "general", "other_user": "bob"})))
    assert "whole number" in error((yield alice.request({"mark_read": 0, "channel": "general"})))
    assert "integer" in error((yield alice.request({"mark_read": "7", "channel": "general"})))
    assert "no user" in error((yield alice.request({"mark_read": 1, "other_user": "nobody"})))


@defer.inlineCallbacks
def test_mark_read_refuses_a_channel_you_are_not_in(server):
    alice = yield login(server, "alice")
    bob = yield login(server, "bob")
    ok((yield bob.request({"join": "general"})))
    yield say(bob, "members only", channel="general")
    refused = error((yield alice.request({"mark_read": 1, "channel": "general"})))
    assert "not a member" in refused
    listed = ok((yield alice.request({"list_conversations": ""})))["conversations"]
    assert listed == []


@defer.inlineCallbacks
def test_unread_events_count_on_from_the_marker_and_other_sessions_hear_of_marks(server):
    alice = yield login(server, "alice")
    bob = yield login(server, "bob")
    for client in (alice, bob):
        ok((yield client.request({"join": "general"})))
    first = yield say(bob, "one", channel="general")
    yield say(bob, "two", channel="general")
    assert (yield alice.event("unread", channel="general"))["count"] == 1
    assert (yield alice.event("unread", channel="general"))["count"] == 2
    ok((yield alice.request({"mark_read": first, "channel": "general"})))
    yield say(bob, "three", channel="general")
    assert (yield alice.event("unread", channel="general"))["count"] == 2   # two and three

    ok((yield alice.request({"mark_read": first + 100, "channel": "general"})))
    yield alice.barrier()
    assert not alice.take(lambda m: m.get("event") == "read")   # not to the session that marked


@defer.inlineCallbacks
def test_a_second_session_of_the_user_gets_the_read_event(server):
    """Sessions of one user on two nodes share a bus: the one that did not mark is told."""
    alice = yield login(server, "alice")
    bob = yield login(server, "bob")
    for client in (alice, bob):
        ok((yield client.request({"join": "general"})))
    newest = yield say(bob, "hello", channel="general")
    session = server.hub.sessions["alice"]
    # Stand in for alice's session on another node: deliveries to it are written to
    # alice's connection, as that node's session would write to its own.
    from chatd.hub import Session
    other = Session(server.hub, "alice", "127.0.0.1", session.connection, server.accounts)
    other.listen(("user", "alice"))
    try:
        ok((yield alice.request({"mark_read": newest, "channel": "general"})))
        event = yield alice.event("read", channel="general")
        assert (event["read"], event["unread"]) == (newest, 0)
        assert other.unread["general"] == 0
    finally:
        other.stop_listening_to_all()


@defer.inlineCallbacks
def test_login_reply_carries_counts_and_markers_survive_a_restart(server):
    alice = yield login(server, "alice")
    bob = yield login(server, "bob")
    for client in (alice, bob):
        ok((yield client.request({"join": "general"})))
    ids = yield say_many(bob, 4, channel="general")
    yield say(bob, "psst 1", other_user="alice")
    yield say(bob, "psst 2", other_user="alice")
    ok((yield alice.request({"mark_read": ids[1], "channel": "general"})))
    server = restart_server(server)
    try:
        yield alice.closed
        alice = yield login(server, "alice", register_first=False)
        # The login reply came first: the helper checked it; ask for it again here.
        yield alice.request({"logout": "alice"})
        reply = ok((yield alice.request({"user:pwd": "alice:correct horse battery"})))
        counts = by_place(reply["conversations"])
        assert (counts["general"]["read"], counts["general"]["unread"]) == (ids[1], 2)
        assert counts["@bob"]["unread"] == 2
        # The session's unread events count on from the stored count.
        bob = yield login(server, "bob", register_first=False)
        yield say(bob, "after the restart", channel="general")
        assert (yield alice.event("unread", channel="general"))["count"] == 3
    finally:
        stop_server(server)


@defer.inlineCallbacks
def test_the_upgrade_counts_what_was_stored_before_it_as_read(database):
    """Schema 004 on a database written by the previous version: every member's and
    every correspondent's marker starts at the newest message there."""
    from chatd.engines import engine_from_url
    from chatd.store import Store
    store = Store(engine_from_url(database), max_queued=1000)
    store.pool = store.engine.make_pool()
    try:
        migrations = store.engine.migrations()
        assert (yield store.upgrade_schema([m for m in migrations if m[0] <= 3])) == 3
        now = "2026-11-24 13:20:00.000"
        rows = yield store.query("SELECT id FROM channels WHERE name = 'general'")
        general = rows[0][0]
        yield store.execute("INSERT INTO memberships (channel_id, user_name, joined_at)"
                            " VALUES (?, 'alice', ?)", (general, now))
        for id, sender, channel_id, recipient, key in [
                (1, "alice", general, None, None), (2, "bob", None, "alice", "alice|bob"),
                (3, "bob", general, None, None), (4, "alice", None, "bob", "alice|bob"),
                (5, "carol", None, "bob", "bob|carol")]:
            yield store.execute("INSERT INTO messages (id, sender, channel_id, recipient,"
                                " peer_key, body, sent_at) VALUES (?, ?, ?, ?, ?, 'x', ?)",
                                (id, sender, channel_id, recipient, key, now))
        assert (yield store.upgrade_schema(migrations)) == migrations[-1][0]
        markers = yield store.query("SELECT user_name, channel_id, peer_key, last_read"
                                    " FROM read_markers ORDER BY user_name, channel_id, peer_key")
        assert [tuple(r) for r in markers] == [
            ("alice", 0, "alice|bob", 4), ("alice", general, "", 3),
            ("bob", 0, "alice|bob", 4), ("bob", 0, "bob|carol", 5), ("carol", 0, "bob|carol", 5)]
        summaries = yield store.conversations("alice", [general])
        assert [(c, k, last, read, unread) for c, k, last, _, read, unread, _ in summaries] == [
            (general, "", 3, 3, 0), (0, "alice|bob", 4, 4, 0)]
    finally:
        store.pool.close()


def typing_events(client):
    return client.take(lambda m: m.get("event") == "typing")


@defer.inlineCallbacks
def test_typing_reaches_only_those_looking_at_the_channel_at_most_every_3_s(server):
    alice = yield login(server, "alice")
    bob = yield login(server, "bob")
    carol = yield login(server, "carol")
    yield look_at(alice, "general")
    yield look_at(bob, "general")
    ok((yield carol.request({"join": "general"})))      # a member looking elsewhere
    alice.send({"typing": True, "channel": "general", "user": "alice"})
    event = yield bob.event("typing")
    assert event == {"event": "typing", "user": "alice", "channel": "general", "typing": True}
    alice.send({"typing": True, "channel": "general"})  # within 3 s: not told again
    yield alice.barrier()
    yield bob.barrier()
    yield carol.barrier()
    assert typing_events(bob) == [] and typing_events(carol) == []
    assert typing_events(alice) == []                   # not echoed
    assert [r for r in alice.inbox if r.get("reply_to") == "typing"] == []   # no reply

    server.hub.sessions["alice"].typing[("channel", "general")] -= 3.0   # 3 s later
    alice.send({"typing": True, "channel": "general"})
    yield bob.event("typing", user="alice")
    alice.send({"typing": False, "channel": "general"})
    assert (yield bob.event("typing", user="alice"))["typing"] is False
    alice.send({"typing": False, "channel": "general"})  # nothing to take back
    yield bob.barrier()
    assert typing_events(bob) == []

    refused = yield alice.request({"typing": True})
    assert "one conversation" in error(refused)
    assert "true or false" in error((yield alice.request({"typing": "yes", "channel": "general"})))
    dave = yield login(server, "dave")
    assert "not a member" in error((yield dave.request({"typing": True, "channel": "general"})))


@defer.inlineCallbacks
def test_typing_costs_nothing_when_nobody_else_looks(server):
    alice = yield login(server, "alice")
    bob = yield login(server, "bob")
    yield look_at(alice, "general")
    ok((yield bob.request({"join": "general"})))
    published = []
    bus = server.hub.bus
    original = bus.publish
    bus.publish = lambda topic, payload, exclude=None: (
        published.append(topic), original(topic, payload, exclude))[1]
    try:
        alice.send({"typing": True, "channel": "general"})
        yield alice.barrier()
        assert published == []
    finally:
        bus.publish = original
    yield bob.barrier()
    assert typing_events(bob) == []


@defer.inlineCallbacks
def test_private_typing_reaches_the_other_only_while_looking_at_the_conversation(server):
    alice = yield login(server, "alice")
    bob = yield login(server, "bob")
    carol = yield login(server, "carol")
    carol.send({"presence": "online", "other_user": "alice"})   # carol looks at alice too
    yield carol.event("peer", other_user="alice")
    alice.send({"typing": True, "other_user": "bob"})            # bob looks at nothing yet
    yield bob.barrier()
    assert typing_events(bob) == []
    bob.send({"presence": "online", "other_user": "alice"})
    yield bob.event("peer", other_user="alice")
    server.hub.sessions["alice"].typing.clear()                  # as if 3 s had passed
    alice.send({"typing": True, "other_user": "bob"})
    assert (yield bob.event("typing")) == {"event": "typing", "user": "alice", "typing": True}
    yield carol.barrier()
    assert typing_events(carol) == []       # alice types to bob, not to carol


@defer.inlineCallbacks
def test_mentions_are_marked_in_unread_events_and_counted_apart(server):
    alice = yield login(server, "alice")
    bob = yield login(server, "bob")
    al = yield login(server, "al_b")
    for client in (alice, bob, al):
        ok((yield client.request({"join": "general"})))
    yield say(alice, "hello all", channel="general")
    mention = yield say(alice, "@BOB can you look? cc @al_bert", channel="general")
    yield say(alice, "mail bob@example.org, @bobby", channel="general")   # not mentions of bob
    events = []
    for _ in range(3):
        events.append((yield bob.event("unread", channel="general")))
    assert [(e["count"], e.get("mention")) for e in events] == [
        (1, None), (2, True), (3, None)]
    counts = by_place(ok((yield bob.request({"list_conversations": ""})))["conversations"])
    assert (counts["general"]["unread"], counts["general"]["mentions"]) == (3, 1)
    theirs = by_place(ok((yield al.request({"list_conversations": ""})))["conversations"])
    assert theirs["general"]["mentions"] == 0     # @al_bert is not @al_b
    marked = ok((yield bob.request({"mark_read": mention, "channel": "general"})))
    assert (marked["unread"], marked["mentions"]) == (1, 0)
    # A deleted message is no longer unread.
    last = counts["general"]["last_id"]
    ok((yield alice.request({"delete_message": last})))
    again = by_place(ok((yield bob.request({"list_conversations": ""})))["conversations"])
    assert again["general"]["unread"] == 0


@defer.inlineCallbacks
def test_unread_counts_stop_at_the_newest_few_so_a_login_never_walks_a_whole_channel(
        server, monkeypatch):
    import chatd.store
    monkeypatch.setattr(chatd.store, "UNREAD_COUNTED", 3)
    alice = yield login(server, "alice")
    bob = yield login(server, "bob")
    for client in (alice, bob):
        ok((yield client.request({"join": "general"})))
    yield say(alice, "@bob first", channel="general")
    plain = yield say_many(alice, 4, channel="general")
    yield say_many(alice, 5, other_user="bob")
    counts = by_place(ok((yield bob.request({"list_conversations": ""})))["conversations"])
    # Five unread, counted as three; the mention is older than those three.
    assert (counts["general"]["unread"], counts["general"]["mentions"]) == (3, 0)
    assert counts["@alice"]["unread"] == 3
    yield say(alice, "now @bob", channel="general")
    counts = by_place(ok((yield bob.request({"list_conversations": ""})))["conversations"])
    assert (counts["general"]["unread"], counts["general"]["mentions"]) == (3, 1)
    marked = ok((yield bob.request({"mark_read": plain[2], "channel": "general"})))
    assert (marked["unread"], marked["mentions"]) == (2, 1)
