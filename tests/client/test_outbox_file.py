"""The outbox file on its own (no Qt, no server): what is saved is read back, in order."""

import dataclasses
import json

from qtclient.entities import Conversation
from qtclient.outbox import Outbox

GENERAL = Conversation.channel("general")
BOB = Conversation.private("bob")


def test_what_is_typed_refused_and_removed_is_read_back_in_order(tmp_path):
    outbox = Outbox.for_account(str(tmp_path), "localhost:7878", "alice")
    first = outbox.add(GENERAL, "first")
    second = outbox.add(BOB, "second, with ünïcode 🎉")
    third = outbox.add(GENERAL, "third")
    assert len({first.nonce, second.nonce, third.nonce}) == 3
    assert all(len(m.nonce) == 32 for m in (first, second, third)), "uuid4 hex, within 64"
    assert not any(m.sent for m in (first, second, third))
    outbox.mark_sent(second.nonce)
    assert outbox.get(second.nonce).sent and not outbox.get(third.nonce).sent
    outbox.replace(dataclasses.replace(second, error="bob is banned."))
    outbox.remove(first.nonce)

    again = Outbox.for_account(str(tmp_path), "localhost:7878", "alice")
    assert [(m.nonce, m.text, m.conversation, m.error) for m in again.all()] == [
        (second.nonce, second.text, BOB, "bob is banned."), (third.nonce, "third", GENERAL, None)]
    assert again.all()[1].typed == third.typed
    assert all(m.sent for m in again.all()), "read back, each may have gone out already"
    assert [m.text for m in again.to_send()] == ["third"], "a refused one waits for Retry"
    assert [m.text for m in again.of(GENERAL)] == ["third"]


def test_each_server_and_user_has_its_own_outbox(tmp_path):
    Outbox.for_account(str(tmp_path), "localhost:7878", "alice").add(GENERAL, "hi")
    assert Outbox.for_account(str(tmp_path), "localhost:7878", "bob").all() == []
    assert Outbox.for_account(str(tmp_path), "tls://localhost:7879", "alice").all() == []
    assert len(Outbox.for_account(str(tmp_path), "localhost:7878", "alice")) == 1


def test_an_unreadable_file_is_kept_aside_not_overwritten(tmp_path):
    outbox = Outbox.for_account(str(tmp_path), "localhost:7878", "alice")
    outbox.add(GENERAL, "hi")
    with open(outbox.path, "w") as file:
        file.write('{"messages": [{"nonce": "x"')
    fresh = Outbox.for_account(str(tmp_path), "localhost:7878", "alice")
    assert fresh.all() == []
    fresh.add(GENERAL, "new")
    with open(f"{outbox.path}.unreadable") as file:
        assert file.read() == '{"messages": [{"nonce": "x"'
    with open(outbox.path) as file:
        assert [m["text"] for m in json.load(file)["messages"]] == ["new"]
