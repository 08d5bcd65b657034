"""The registry of actions and commands, and what is derived from it.

Dispatch and field checks, the text and structured forms of the admin
commands, the manhole's functions and the docs' lists all come from
chatd/registry.py; these tests hold them to it.
"""

import importlib.util
import inspect
import json
from pathlib import Path

import pytest
from twisted.internet import defer, reactor, task
from twisted.internet.testing import StringTransport

import chatd.protocol
from chatd.auth import ChatError
from chatd.manhole import AdminAPI
from chatd.moderation import MANHOLE, Moderation
from chatd.registry import ACTIONS, COMMAND_LIST, COMMANDS, GENERATED, render
from support import PASSWORD, error, login, login_admin, ok, register

ROOT = Path(__file__).resolve().parent.parent


def test_docs_list_every_action_and_command():
    """docs/protocol.md and docs/admin.md hold the lists generated from the registry.

    After adding an action or a command, run `python -m chatd.registry` to update them.
    """
    for path, blocks in GENERATED.items():
        text = (ROOT / path).read_text()
        assert render(text, blocks) == text, f"{path} is out of date: python -m chatd.registry"
    protocol_md = (ROOT / "docs/protocol.md").read_text()
    for key, action in ACTIONS.items():
        if action.command is None:
            assert f"### `{key}`" in protocol_md, key


def test_every_command_runs_a_moderation_method_taking_its_arguments():
    for command in COMMAND_LIST:
        method = getattr(Moderation, command.key or command.text)
        names = list(inspect.signature(method).parameters)[2:]
        assert names == [p.name for p in command.parameters], command.text


def test_text_form_is_parsed_by_the_declaration():
    ban = COMMANDS["ban"]
    assert ban.parse("bob 2h spamming  links") == {
        "target": "bob", "duration": "2h", "reason": "spamming  links"}
    assert ban.parse("bob spamming") == {"target": "bob", "duration": None, "reason": "spamming"}
    assert COMMANDS["create"].parse("#lobby PRIVATE") == {"name": "lobby", "private": True}
    assert COMMANDS["accept"].parse("bob #secret") == {"user": "bob", "channel": "secret"}
    assert COMMANDS["log"].parse("user bob limit 5 since 2026-11-24") == {
        "sender": "bob", "channel": None, "since": "2026-11-24", "until": None, "limit": 5}
    assert COMMANDS["audit"].parse("") == {"limit": 20}
    for name, args in [("ban", ""), ("admin", "a b"), ("bans", "x"), ("log", "bob"),
                       ("log", "user a user b"), ("create", "x public")]:
        with pytest.raises(ChatError, match="Usage: " + name):
            COMMANDS[name].parse(args)
    with pytest.raises(ChatError, match="The limit is a whole number, not 'many'"):
        COMMANDS["audit"].parse("limit many")


def test_manhole_functions_are_the_commands_and_check_their_arguments(sqlite_server):
    namespace = AdminAPI(sqlite_server.moderation).namespace()
    assert set(namespace) == {c.key for c in COMMAND_LIST if c.key is not None} | {
        "help", "server"}
    help_text = namespace["help"]()
    for command in COMMAND_LIST:
        if command.key is not None:
            assert command.signature() in help_text
    ban = namespace["ban"]
    assert ban("bob", 3, "x", "extra").startswith("Refused: ban(target")
    assert ban("bob", colour="red") == "Refused: Unexpected field 'colour' for 'ban'."
    assert ban(42) == "Refused: 'ban' must be a string."
    assert ban("bob", target="bob") == \
        "Refused: 'target' is given twice: ban(target, duration=None, reason='')."
    assert namespace["accept"]() == "Refused: Missing argument 'user': accept(user, channel)."
    assert namespace["accept"]("bob") == "Refused: Missing field 'channel'."


FUTURE = "from __future__ import annotations\n"


@pytest.fixture
def protocol_with_future_annotations():
    """chatd/protocol.py loaded again with `from __future__ import annotations` on top."""
    source = Path(chatd.protocol.__file__).read_text()
    spec = importlib.util.spec_from_loader("chatd_protocol_future", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(FUTURE + source, chatd.protocol.__file__, "exec"), module.__dict__)
    return module


@defer.inlineCallbacks
def test_field_checks_do_not_rely_on_runtime_annotations(sqlite_server,
                                                         protocol_with_future_annotations):
    """Regression: the checks read the registry, not handler annotations (strings here)."""
    protocol = protocol_with_future_annotations.ChatFactory(sqlite_server).buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)

    @defer.inlineCallbacks
    def send(request):
        """The one reply to `request`, once it has been written."""
        transport.clear()
        protocol.dataReceived(json.dumps(request).encode() + b"\n")
        for _ in range(500):
            replies = [json.loads(line) for line in transport.value().splitlines()]
            replies = [line for line in replies if "reply_to" in line]
            if replies:
                (reply,) = replies
                return reply
            yield task.deferLater(reactor, 0.01, lambda: None)
        raise AssertionError(f"no reply to {request}")
    try:
        yield register(sqlite_server, "alice")
        assert (yield send({"list_users": 5})) == {
            "reply_to": "list_users", "error": "Log in first (send user:pwd), or register an "
                                               "account."}
        reply = yield send({"user:pwd": "alice:" + PASSWORD, "user": "alice"})
        assert reply["ok"] is True and reply["role"] == "user"
        assert (yield send({"get_channel": "general", "limit": "ten"})) == {
            "reply_to": "get_channel", "error": "'limit' must be an integer."}
        assert (yield send({"join": "general"}))["ok"] is True
        reply = yield send({"get_channel": "general", "before": None, "limit": 5})
        assert reply.get("ok") is True and reply["messages"] == [], reply
        reply = yield send({"channel_message": "hi", "channel": "general", "colour": "red"})
        assert reply["error"] == "Unexpected field 'colour' for 'channel_message'."
        assert (yield send({"channel_message": "hi", "channel": "general"}))["ok"] is True
    finally:
        protocol.connectionLost(None)


# -- the structured admin actions, end to end ----------------------------------------


@defer.inlineCallbacks
def test_structured_admin_actions(server):
    alice = yield login_admin(server, "alice")
    bob = yield login(server, "bob")
    created = ok((yield alice.request({"create_channel": "#secret", "private": True,
                                       "user": "alice"})))
    assert (created["reply_to"], created["command"], created["private"]) == (
        "create_channel", "create", True)
    ok((yield bob.request({"join": "secret"})))
    pending = ok((yield alice.request({"requests": ""})))
    assert [(r["user"], r["channel"]) for r in pending["requests"]] == [("bob", "secret")]
    accepted = ok((yield alice.request({"accept": "bob", "channel": "secret"})))
    assert accepted["result"] == "bob is now a member of #secret."
    assert "Missing field 'channel'" in error((yield alice.request({"reject": "bob"})))
    assert "'private' must be true or false" in error(
        (yield alice.request({"create_channel": "x", "private": "yes"})))

    # A reason that starts like a duration stays a reason: the ban is permanent.
    banned = ok((yield alice.request({"ban": "bob", "reason": "3d of spam"})))
    assert banned["ban"]["expires_at"] is None and banned["ban"]["reason"] == "3d of spam"
    notice = yield bob.event("disconnect")
    assert notice["reason"] == "You are banned permanently. Reason: 3d of spam."
    listed = ok((yield alice.request({"bans": ""})))
    assert [b["target"] for b in listed["bans"]] == ["bob"]
    ok((yield alice.request({"unban": "bob"})))
    timed = ok((yield alice.request({"ban": "bob", "duration": 3600, "reason": "1h"})))
    assert timed["ban"]["expires_at"] is not None
    logged = ok((yield alice.request({"log": "", "channel": "secret", "limit": 5})))
    assert logged["messages"] == []
    assert "one user or one channel" in error((yield alice.request({"log": ""})))
    audit = ok((yield alice.request({"audit": "", "limit": 3})))
    assert [e["action"] for e in audit["entries"]] == ["log", "ban", "unban"]

    carol = yield login(server, "carol")
    assert error((yield carol.request({"ban": "alice"}))) == "Only admins may use 'ban'."
    assert error((yield carol.request({"ban": 5, "colour": 1}))) == "Only admins may use 'ban'."
    assert error((yield carol.request({"create_channel": "x"}))) == \
        "Only admins may use 'create_channel'."
    # The seed's text form is unchanged.
    assert error((yield carol.request({"command": "ban Jules"}))) == "Only admins may use 'ban'."
    text = ok((yield alice.request({"command": "ban carol 3d of spam"})))
    assert text["ban"]["expires_at"] is not None and text["ban"]["reason"] == "of spam"


@defer.inlineCallbacks
def test_manhole_function_runs_the_command(server):
    yield register(server, "bob")
    namespace = AdminAPI(server.moderation).namespace()
    result = yield defer.maybeDeferred(namespace["create_channel"], "lobby", private=True)
    assert result == "Created the private channel #lobby."
    result = yield defer.maybeDeferred(namespace["ban"], "bob", reason="3d of spam")
    assert result.startswith("Banned bob permanently")
    assert "banned permanently by manhole: 3d of spam" in namespace["bans"]()
    assert namespace["unban"]("nobody") == \
        "Refused: There is no active ban on nobody; 'bans' lists the active bans."
    rows = yield server.store.query("SELECT actor, action, target FROM audit_log ORDER BY id")
    assert [tuple(r) for r in rows] == [(MANHOLE.name, "create", "lobby"),
                                        (MANHOLE.name, "ban", "bob")]
