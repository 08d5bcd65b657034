"""Edits and deletions end to end on both engines: only by the author (deletions also by
an admin), viewers told, history with the current text or a tombstone, and the admins'
message log with every version and who deleted what."""

from twisted.internet import defer

from support import error, login, login_admin, look_at, ok


@defer.inlineCallbacks
def setup(server):
    """alice and bob looking at general, carol a member looking elsewhere, and alice's
    message there."""
    alice = yield login(server, "alice")
    bob = yield login(server, "bob")
    carol = yield login(server, "carol")
    yield look_at(alice, "general")
    yield look_at(bob, "general")
    ok((yield carol.request({"join": "general"})))
    sent = ok((yield alice.request({"channel_message": "relase notes", "channel": "general"})))
    return alice, bob, carol, sent["id"]


@defer.inlineCallbacks
def test_the_author_edits_viewers_are_told_and_history_shows_the_current_text(server):
    alice, bob, carol, id = yield setup(server)
    yield carol.event("unread", channel="general")      # for the message itself
    edited = ok((yield alice.request({"edit_message": "release notes", "id": id,
                                      "user": "alice"})))
    assert edited["id"] == id and edited["edited"].endswith("Z")
    for viewer in (alice, bob):
        event = yield viewer.event("message_edited", id=id)
        assert event == {"event": "message_edited", "id": id, "user": "alice",
                         "channel": "general", "text": "release notes",
                         "edited": edited["edited"]}
    yield carol.barrier()
    assert not carol.take(lambda m: m.get("event") == "message_edited")   # not looking
    assert not carol.take(lambda m: m.get("event") == "unread")           # no new message

    again = ok((yield alice.request({"edit_message": "release notes (v2)", "id": id})))
    page = ok((yield carol.request({"get_channel": "general"})))
    (message,) = page["messages"]
    assert (message["channel_message"], message["edited"]) == ("release notes (v2)",
                                                               again["edited"])

    assert "own messages" in error((yield bob.request({"edit_message": "hijack", "id": id})))
    assert "empty" in error((yield alice.request({"edit_message": "  ", "id": id})))
    assert "no message 999999" in error((yield alice.request(
        {"edit_message": "x", "id": 999999})))
    assert "integer" in error((yield alice.request({"edit_message": "x", "id": "7"})))
    page = ok((yield bob.request({"get_channel": "general"})))
    assert page["messages"][0]["channel_message"] == "release notes (v2)"


@defer.inlineCallbacks
def test_delete_by_author_or_admin_leaves_a_tombstone_and_the_log_keeps_everything(server):
    alice, bob, carol, id = yield setup(server)
    ok((yield alice.request({"edit_message": "release notes", "id": id})))
    assert "own messages" in error((yield bob.request({"delete_message": id})))
    admin = yield login_admin(server, "dana")
    ok((yield admin.request({"join": "general"})))
    second = ok((yield bob.request({"channel_message": "secret plan", "channel": "general"})))
    deleted = ok((yield alice.request({"delete_message": id, "user": "alice"})))
    event = yield bob.event("message_deleted", id=id)
    assert event == {"event": "message_deleted", "id": id, "user": "alice", "channel": "general",
                     "deleted": deleted["deleted"], "by": "alice"}
    ok((yield admin.request({"delete_message": second["id"]})))     # an admin: anyone's
    assert "deleted already" in error((yield alice.request({"delete_message": id})))
    assert "deleted" in error((yield alice.request({"edit_message": "back", "id": id})))

    page = ok((yield carol.request({"get_channel": "general"})))
    assert [(m["id"], m["channel_message"], m["user"], "deleted" in m) for m in page["messages"]] \
        == [(id, "", "alice", True), (second["id"], "", "bob", True)]
    assert "edited" not in page["messages"][0]

    log = ok((yield admin.request({"log": "", "channel": "general"})))
    first, last = log["messages"]
    assert (first["channel_message"], first["versions"][0]["text"]) == (
        "release notes", "relase notes")
    assert (first["deleted_by"], last["deleted_by"], last["channel_message"]) == (
        "alice", "dana", "secret plan")
    assert "before: 'relase notes'" in log["result"] and "deleted by dana" in log["result"]


@defer.inlineCallbacks
def test_private_messages_are_edited_for_both_and_hidden_from_others(server):
    alice = yield login(server, "alice")
    bob = yield login(server, "bob")
    mallory = yield login(server, "mallory")
    sent = ok((yield alice.request({"private_message": "psst", "other_user": "bob"})))
    refused = error((yield mallory.request({"delete_message": sent["id"]})))
    assert refused == f"There is no message {sent['id']} that you can see."
    assert "own messages" in error((yield bob.request({"delete_message": sent["id"]})))
    ok((yield alice.request({"edit_message": "psst!", "id": sent["id"]})))
    for client in (alice, bob):
        event = yield client.event("message_edited", id=sent["id"])
        assert (event["other_user"], event["text"]) == ("bob", "psst!")
    page = ok((yield bob.request({"get_private": "alice"})))
    assert [m["private_message"] for m in page["messages"]] == ["psst!"]
    yield mallory.barrier()
    assert not mallory.take(lambda m: m.get("event") == "message_edited")
