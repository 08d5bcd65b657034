"""list_members on both engines: every member of a channel, not only those looking, with
status and `looking`, paged by name under --max-reply; a private channel's only for its
members and the admins."""

import pytest
from twisted.internet import defer

from chatd import conversations
from chatd.protocol import encode
from support import PASSWORD, error, login, login_admin, look_at, ok, start_server, stop_server

SMALL_REPLY = 4096


def listed(reply):
    return [(m["user"], m["status"], m["looking"]) for m in ok(reply)["members"]]


@defer.inlineCallbacks
def test_members_are_everyone_in_the_channel_with_status_and_looking(server):
    alice = yield login(server, "alice")
    bob = yield login(server, "Bob")
    carol = yield login(server, "carol")
    dave = yield login(server, "dave")          # logged in, in no channel
    yield look_at(alice, "general")
    ok((yield bob.request({"join": "general"})))
    bob.send({"presence": "away"})              # a member, away, looking at nothing
    ok((yield carol.request({"join": "general"})))
    carol.transport.loseConnection()            # a member, offline
    yield carol.closed
    yield bob.request({"my_requests": ""})      # (after bob's heartbeat)

    reply = yield dave.request({"list_members": "#general", "user": "dave"})
    assert ok(reply)["channel"] == "general" and reply["next"] is None
    assert listed(reply) == [("alice", "online", True), ("Bob", "away", False),
                             ("carol", "offline", False)]
    assert set(reply["members"][0]) == {"user", "status", "looking"}

    after = yield dave.request({"list_members": "general", "after": "bob"})
    assert listed(after) == [("carol", "offline", False)]
    one = yield dave.request({"list_members": "general", "limit": 1})
    assert listed(one) == [("alice", "online", True)] and one["next"] == "alice"

    ok((yield bob.request({"leave": "general"})))
    assert [m for m, _, _ in listed((yield dave.request({"list_members": "general"})))] == [
        "alice", "carol"]
    # (alice asks: dave's flood budget is spent, a page costs four requests)
    assert "no channel" in error((yield alice.request({"list_members": "nowhere"})))
    assert "limit" in error((yield alice.request({"list_members": "general", "limit": 0})))


@defer.inlineCallbacks
def test_a_private_channels_members_only_for_its_members_and_the_admins(server):
    admin = yield login_admin(server, "dana")
    ok((yield admin.request({"create_channel": "secret", "private": True})))
    erin = yield login(server, "erin")
    outsider = yield login(server, "frank")
    channel = server.hub.channel("secret")
    yield server.store.add_member(channel.id, "erin")      # (an accepted request's path)
    server.hub.add_member(channel, "erin")

    refused = error((yield outsider.request({"list_members": "secret"})))
    assert refused == "#secret is private; only its members see who is in it."
    assert "erin" not in refused
    assert [m for m, _, _ in listed((yield erin.request({"list_members": "secret"})))] == [
        "dana", "erin"]
    ok((yield admin.request({"remove": "dana", "channel": "secret"})))
    assert [m for m, _, _ in listed((yield admin.request({"list_members": "secret"})))] == [
        "erin"], "an admin who is not a member still sees them"


@pytest.fixture
def small_reply_server(database):
    running = start_server(database, max_reply=SMALL_REPLY)
    yield running
    stop_server(running)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sorted_members", [10**6, 10], ids=["sorted", "walked"])
@defer.inlineCallbacks
def test_members_are_paged_under_the_byte_cap_and_the_cursor_walks_all(
        small_reply_server, monkeypatch, sorted_members):
    """Both ways of listing: a small channel sorted per page, a large one in the
    directory's order."""
    monkeypatch.setattr(conversations, "SORTED_MEMBERS", sorted_members)
    server = small_reply_server
    alice = yield login(server, "alice")
    yield look_at(alice, "general")
    channel = server.hub.channel("general")
    names = [f"member{n:03}" for n in range(150)] + ["Zoe", "anna"]
    for n, name in enumerate(names):
        yield server.accounts.register(name, PASSWORD, f"{name}@example.org", "127.0.0.1")
        if n % 10 != 3:     # some accounts are not members
            yield server.store.add_member(channel.id, name)
            server.hub.add_member(channel, name)
    names = [name for n, name in enumerate(names) if n % 10 != 3]

    seen, cursor, pages = [], None, 0
    while True:
        request = {"list_members": "general"}
        if cursor is not None:
            request["after"] = cursor
        reply = ok((yield alice.request(request)))
        assert len(encode(reply)) <= SMALL_REPLY
        seen += reply["members"]
        pages, cursor = pages + 1, reply["next"]
        if cursor is None:
            break
    assert pages > 1
    assert [m["user"] for m in seen] == sorted(names + ["alice"], key=str.casefold)
    assert [m["user"] for m in seen if m["looking"]] == ["alice"]
    assert {m["status"] for m in seen if not m["looking"]} == {"offline"}
