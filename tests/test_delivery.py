"""End-to-end: every delivery that goes through the bus, on a real server
with real TCP clients (SQLite and MariaDB): unread counts for members looking
elsewhere or nowhere, notices to every admin, the newest login closing the
older session, kicks and bans by name and by address closing exactly the
right connections, and membership changes taking effect on live sessions.
"""

from twisted.internet import defer

from support import error, login, login_admin, look_at, ok, register, start_server, stop_server
from test_moderation import command, connect_from, login_from


def unread_counts(client, channel):
    return [m["count"] for m in client.take(
        lambda m: m.get("event") == "unread" and m.get("channel") == channel)]


@defer.inlineCallbacks
def test_a_fresh_login_that_looked_nowhere_gets_unread_events(server):
    """Regression: a session whose `viewing` is None got no `unread` at all."""
    alice = yield login(server, "alice")
    yield look_at(alice, "general")
    bob = yield login(server, "bob")
    ok((yield bob.request({"join": "general"})))     # joined, but no presence line yet
    for text in ("one", "two"):
        ok((yield alice.request({"channel_message": text, "channel": "general"})))
    yield bob.event("unread", channel="general", count=2)
    yield bob.barrier()
    assert not bob.take(lambda m: "channel_message" in m)
    yield look_at(bob, "general")       # looking clears the count and delivers live
    ok((yield alice.request({"channel_message": "three", "channel": "general"})))
    assert (yield bob.wait_for(lambda m: "channel_message" in m))["channel_message"] == "three"
    ok((yield alice.request({"private_message": "x", "other_user": "bob"})))
    bob.send({"presence": "online"})                # now looking at nothing again
    ok((yield alice.request({"channel_message": "four", "channel": "general"})))
    assert (yield bob.event("unread", channel="general"))["count"] == 1


@defer.inlineCallbacks
def test_a_member_logged_in_before_joining_and_one_who_left(server):
    """Membership changes reach live sessions: join starts unread, leave stops it."""
    alice = yield login(server, "alice")
    yield look_at(alice, "general")
    bob = yield login(server, "bob")
    ok((yield bob.request({"join": "general"})))
    ok((yield alice.request({"channel_message": "one", "channel": "general"})))
    yield bob.event("unread", channel="general", count=1)
    ok((yield bob.request({"leave": "general"})))
    ok((yield alice.request({"channel_message": "two", "channel": "general"})))
    yield bob.barrier()
    assert unread_counts(bob, "general") == [] and not bob.take(lambda m: "channel_message" in m)


@defer.inlineCallbacks
def test_a_join_request_reaches_every_admin_session_and_only_admins(server):
    alice = yield login_admin(server, "alice")
    ok((yield command(alice, "create secret private")))
    carol = yield login_admin(server, "carol")
    dave = yield login(server, "dave")          # made admin while logged in
    erin = yield login(server, "erin")          # not an admin
    ok((yield command(alice, "admin dave")))
    bob = yield login(server, "bob")
    assert ok((yield bob.request({"join": "secret"})))["status"] == "pending"
    for admin in (alice, carol, dave):
        notice = yield admin.event("join_request", channel="secret", user="bob")
        assert isinstance(notice["id"], int)
    ok((yield command(alice, "unadmin dave")))
    frank = yield login(server, "frank")
    ok((yield frank.request({"join": "secret"})))
    yield alice.event("join_request", user="frank")
    yield carol.event("join_request", user="frank")
    for client in (dave, erin, bob):
        yield client.barrier()
    assert not dave.take(lambda m: m.get("event") == "join_request" and m["user"] == "frank")
    assert not erin.take(lambda m: m.get("event") == "join_request")
    assert not bob.take(lambda m: m.get("event") == "join_request")

    # Accepting makes bob a member of his live session at once: unread, then removal.
    ok((yield command(alice, "accept bob secret")))
    yield bob.event("request_decided", channel="secret", status="accepted")
    yield look_at(alice, "secret")
    ok((yield alice.request({"channel_message": "welcome", "channel": "secret"})))
    yield bob.event("unread", channel="secret", count=1)
    ok((yield command(alice, "remove bob secret")))
    yield bob.event("removed_from_channel", channel="secret")
    ok((yield alice.request({"channel_message": "gone", "channel": "secret"})))
    yield bob.barrier()
    assert unread_counts(bob, "secret") == []


@defer.inlineCallbacks
def test_newest_login_closes_the_older_session_with_its_reason(server):
    bob = yield login(server, "bob")
    yield look_at(bob, "general")
    first = yield login(server, "alice")
    yield look_at(first, "general")
    yield bob.event("member", user="alice", status="online")
    second = yield login(server, "alice", register_first=False)
    notice = yield first.event("disconnect")
    assert notice == {"event": "disconnect", "kind": "replaced",
                      "reason": "You logged in again from 127.0.0.1; this connection is closed."}
    yield first.closed
    assert (yield bob.event("member", user="alice"))["status"] == "offline"
    # Only the new session receives what is sent to alice.
    ok((yield bob.request({"private_message": "which one?", "other_user": "alice"})))
    assert (yield second.wait_for(lambda m: "private_message" in m))["private_message"] == \
        "which one?"
    assert [m for m in first.inbox if "private_message" in m] == []


@defer.inlineCallbacks
def test_kick_and_ban_by_name_close_only_that_user(server):
    alice = yield login_admin(server, "alice")
    bob = yield login(server, "bob")
    carol = yield login(server, "carol")    # same address, another user: stays
    assert ok((yield command(alice, "kick bob enough")))["kicked"] == ["bob"]
    assert (yield bob.event("disconnect"))["kind"] == "kicked"
    yield bob.closed
    bob = yield login(server, "bob", register_first=False)
    assert ok((yield command(alice, "ban bob 1h spam")))["result"].endswith(
        "(1 connection(s) closed).")
    assert (yield bob.event("disconnect"))["reason"].endswith("Reason: spam.")
    yield bob.closed
    ok((yield carol.request({"list_users": ""})))
    assert not carol.take(lambda m: m.get("event") == "disconnect")
    ok((yield alice.request({"list_users": ""})))


@defer.inlineCallbacks
def test_kick_by_address_closes_every_connection_from_it_and_no_other(database):
    """The admin comes from ::1; everyone else from 127.0.0.1."""
    server = start_server(database, listen=r"tcp6:0:interface=\:\:")
    try:
        for name in ("alice", "bob", "carol", "dave"):
            yield register(server, name)
        yield server.accounts.set_role("alice", "admin")
        alice = yield login_from(server, "alice", "::1")
        dave = yield login_from(server, "dave", "::1")
        bob = yield login_from(server, "bob", "127.0.0.1")
        carol = yield login_from(server, "carol", "127.0.0.1")
        stranger = yield connect_from(server, "127.0.0.1")       # not logged in
        kicked = ok((yield command(alice, "kick 127.0.0.1 go away")))
        assert kicked["kicked"] == ["bob", "carol"]
        assert kicked["result"] == "Kicked 127.0.0.1 (3 connection(s) closed)."
        for client in (bob, carol, stranger):
            notice = yield client.event("disconnect")
            assert notice["kind"] == "kicked" and "go away" in notice["reason"]
            yield client.closed
        ok((yield dave.request({"list_users": ""})))
        assert not dave.take(lambda m: m.get("event") == "disconnect")
        assert "Nobody is connected" in error((yield command(alice, "kick 127.0.0.1")))
        bob = yield login_from(server, "bob", "127.0.0.1")      # a kick is not a ban
    finally:
        stop_server(server)
