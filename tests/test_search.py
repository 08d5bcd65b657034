"""Search on both engines (SQLite FTS5, MariaDB FULLTEXT): every word, newest first, in
the relayed shape, never from a conversation the user may not read, never a deleted text."""

from twisted.internet import defer

from support import error, login, login_admin, ok


def texts(reply):
    return [m.get("channel_message", m.get("private_message")) for m in ok(reply)["messages"]]


@defer.inlineCallbacks
def test_search_finds_every_word_newest_first_only_where_you_may_read(server):
    alice = yield login(server, "alice")
    bob = yield login(server, "bob")
    carol = yield login(server, "carol")
    admin = yield login_admin(server, "dana")
    ok((yield admin.request({"create_channel": "secret", "private": True})))
    for client in (alice, bob):
        ok((yield client.request({"join": "general"})))
    first = ok((yield alice.request({"channel_message": "The release notes are out",
                                     "channel": "general"})))
    ok((yield alice.request({"channel_message": "notes from the meeting", "channel": "general"})))
    ok((yield admin.request({"channel_message": "release notes draft, private",
                             "channel": "secret"})))
    ok((yield bob.request({"private_message": "RELEASE notes for you", "other_user": "alice"})))
    ok((yield bob.request({"private_message": "release notes, not for alice",
                           "other_user": "carol"})))

    found = yield alice.request({"search": "release notes", "user": "alice"})
    assert texts(found) == ["RELEASE notes for you", "The release notes are out"]
    newest, oldest = found["messages"]
    assert set(newest) == {"private_message", "user", "other_user", "id", "time"}
    assert (oldest["channel"], oldest["id"], oldest["user"]) == ("general", first["id"], "alice")

    only_general = yield alice.request({"search": "notes", "channel": "#general"})
    assert texts(only_general) == ["notes from the meeting", "The release notes are out"]
    with_bob = yield alice.request({"search": "notes", "other_user": "bob"})
    assert texts(with_bob) == ["RELEASE notes for you"]
    older = yield alice.request({"search": "notes", "channel": "general", "before": first["id"] + 1,
                                 "limit": 5})
    assert texts(older) == ["The release notes are out"]
    assert texts((yield alice.request({"search": "notes", "limit": 1}))) == [
        "RELEASE notes for you"]

    # Carol is in no channel: only her private conversation; nobody sees the private channel.
    assert texts((yield carol.request({"search": "release notes"}))) == [
        "release notes, not for alice"]
    assert "private" in error((yield alice.request({"search": "notes", "channel": "secret"})))
    assert "not a member" in error((yield carol.request({"search": "notes",
                                                          "channel": "general"})))
    assert texts((yield admin.request({"search": "draft"}))) == ["release notes draft, private"]
    assert "one word" in error((yield alice.request({"search": " ?! "})))
    assert "3 letters" in error((yield alice.request({"search": "to be"})))
    assert texts((yield alice.request({"search": "out of notes"}))) == [
        "The release notes are out"]                    # "of" is left out
    assert "limit" in error((yield alice.request({"search": "notes", "limit": 0})))


@defer.inlineCallbacks
def test_search_follows_edits_and_never_shows_a_deleted_text(server):
    alice = yield login(server, "alice")
    ok((yield alice.request({"join": "general"})))
    sent = ok((yield alice.request({"channel_message": "launch codes 1234",
                                    "channel": "general"})))
    ok((yield alice.request({"edit_message": "launch party at noon", "id": sent["id"]})))
    assert texts((yield alice.request({"search": "codes"}))) == []
    (found,) = ok((yield alice.request({"search": "party"})))["messages"]
    assert found["channel_message"] == "launch party at noon" and "edited" in found
    ok((yield alice.request({"delete_message": sent["id"]})))
    assert texts((yield alice.request({"search": "launch"}))) == []
    # The admins' log still has it.
    admin = yield login_admin(server, "dana")
    log = ok((yield admin.request({"log": "", "sender": "alice"})))
    assert log["messages"][0]["channel_message"] == "launch party at noon"
