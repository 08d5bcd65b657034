"""Security rules, end to end on SQLite and MariaDB (see docs/security.md for the list).

Already covered elsewhere and not repeated here: admin commands refused to
non-admins (test_moderation), pending/rejected requests give no access
(test_moderation), forged `user` on channel and private messages (test_core).
"""

import bcrypt
import pytest
from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher

from chatd.protocol import ACTIONS
from support import (LIMITS_LIFTED, PASSWORD, connect, error, login, login_admin, look_at, ok,
                     register, start_server, stop_server)


@pytest.fixture
def server(database):
    """A server on each engine whose abuse limits do not get in the way of these rules."""
    running = start_server(database, **LIMITS_LIFTED)
    yield running
    stop_server(running)


@defer.inlineCallbacks
def table_cells(server):
    """Every value in every table of the database, as (table, row) pairs."""
    if server.store.engine.name == "sqlite":
        tables = yield server.store.query(
            "SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        tables = yield server.store.query("SHOW TABLES")
    cells = []
    for (table,) in tables:
        for row in (yield server.store.query(f"SELECT * FROM {table}")):
            cells.append((table, tuple(row)))
    return cells


# -- impersonation ------------------------------------------------------------------------

# One well-formed request per action, as bob would send it; each carries user "alice".
AS_ALICE = {
    "register": {"register": "eve", "password": PASSWORD, "email": "eve@example.org"},
    "user:pwd": {"user:pwd": f"bob:{PASSWORD}"},
    "logout": {"logout": ""},
    "list_channels": {"list_channels": ""},
    "list_users": {"list_users": ""},
    "list_members": {"list_members": "general"},
    "join": {"join": "general"},
    "leave": {"leave": "general"},
    "channel_message": {"channel_message": "I am alice", "channel": "general"},
    "private_message": {"private_message": "I am alice", "other_user": "carol"},
    "get_channel": {"get_channel": "general"},
    "get_private": {"get_private": "carol"},
    "presence": {"presence": "online", "channel": "general"},
    "command": {"command": "help"},
    "my_requests": {"my_requests": ""},
    "list_conversations": {"list_conversations": ""},
    "mark_read": {"mark_read": 1, "channel": "general"},
    "edit_message": {"edit_message": "I am alice", "id": 1},
    "delete_message": {"delete_message": 1},
    "search": {"search": "alice"},
    "typing": {"typing": True, "channel": "general"},
    # The structured admin commands (bob is no admin; the claim is refused first).
    "admin": {"admin": "bob"},
    "unadmin": {"unadmin": "alice"},
    "create_channel": {"create_channel": "x", "private": True},
    "delete_channel": {"delete_channel": "general"},
    "requests": {"requests": ""},
    "accept": {"accept": "bob", "channel": "general"},
    "reject": {"reject": "bob", "channel": "general"},
    "remove": {"remove": "bob", "channel": "general"},
    "kick": {"kick": "carol", "reason": "r"},
    "ban": {"ban": "carol", "duration": "1h", "reason": "r"},
    "unban": {"unban": "carol"},
    "bans": {"bans": ""},
    "users": {"users": ""},
    "log": {"log": "", "sender": "carol"},
    "audit": {"audit": "", "limit": 5},
}


@defer.inlineCallbacks
def test_no_action_can_be_done_as_someone_else(server):
    """Every action refuses a `user` that is not the session's, and does nothing."""
    assert set(AS_ALICE) == set(ACTIONS)
    alice = yield login(server, "alice")
    yield look_at(alice, "general")
    carol = yield login(server, "carol")
    carol.send({"presence": "online", "other_user": "alice"})
    yield carol.event("peer", other_user="alice")
    bob = yield login(server, "bob")
    ok((yield bob.request({"join": "general"})))
    before_login = yield connect(server)
    yield server.store.messages.drained()
    for action, request in AS_ALICE.items():
        client = before_login if action in ("register", "user:pwd") else bob
        for claim in ("alice", "ALICE"):
            refused = yield client.request(dict(request, user=claim))
            assert f"cannot speak as {claim!r}" in error(refused), (action, refused)
    assert "eve" not in server.accounts.names
    assert server.hub.sessions["bob"].connection.transport.getPeer().port == \
        bob.transport.getHost().port
    assert "bob" in server.hub.channels["general"].members     # no leave happened
    yield alice.barrier()
    yield carol.barrier()
    for client in (alice, carol):
        assert not client.take(lambda m: "channel_message" in m or "private_message" in m)
    yield server.store.messages.drained()
    assert (yield server.store.query("SELECT COUNT(*) FROM messages"))[0][0] == 0
    # The same requests with the right claim (any case) are accepted.
    ok((yield bob.request({"channel_message": "I am bob", "channel": "general", "user": "BOB"})))


# -- history ------------------------------------------------------------------------------


@defer.inlineCallbacks
def test_no_history_or_live_messages_of_a_private_channel_without_membership(server):
    admin = yield login_admin(server, "root")
    ok((yield admin.request({"command": "create secret private"})))
    yield look_at(admin, "secret")
    ok((yield admin.request({"channel_message": "the plan", "channel": "secret"})))
    eve = yield login(server, "eve")
    for request in [{"get_channel": "secret"}, {"get_channel": "SECRET"},
                    {"get_channel": "secret", "limit": 200},
                    {"get_channel": "secret", "before": 2**40, "limit": 1},
                    {"presence": "online", "channel": "secret"},
                    {"channel_message": "let me in", "channel": "secret"},
                    {"leave": "secret"}]:
        assert "private" in error((yield eve.request(request))), request
    ok((yield eve.request({"join": "secret"})))                  # a pending request...
    assert "private" in error((yield eve.request({"get_channel": "secret"})))   # ...is not access
    ok((yield admin.request({"channel_message": "still secret", "channel": "secret"})))
    yield eve.barrier()
    assert not eve.take(lambda m: "channel_message" in m or m.get("channel") == "secret")
    listing = ok((yield eve.request({"list_channels": ""})))
    assert {"name": "secret", "private": True, "member": False, "request": "pending"} in \
        listing["channels"]


@defer.inlineCallbacks
def test_no_one_reads_the_private_conversation_of_two_others(server):
    alice = yield login(server, "alice")
    bob = yield login(server, "bob")
    ok((yield alice.request({"private_message": "for bob only", "other_user": "bob"})))
    ok((yield bob.request({"private_message": "for alice only", "other_user": "alice"})))
    eve = yield login(server, "eve")
    yield eve.barrier()
    assert not eve.take(lambda m: "private_message" in m)
    for other in ("alice", "bob", "ALICE", "eve"):
        page = ok((yield eve.request({"get_private": other, "limit": 200})))
        assert page["messages"] == [], page
    # A forged claim does not open alice's side of the conversation either.
    assert "cannot speak as" in error((yield eve.request(
        {"get_private": "bob", "user": "alice"})))
    # Watching someone's conversation shows their status, never their messages.
    eve.send({"presence": "online", "other_user": "alice"})
    yield eve.event("peer", other_user="alice")
    ok((yield alice.request({"private_message": "still private", "other_user": "bob"})))
    yield bob.wait_for(lambda m: m.get("private_message") == "still private")
    yield eve.barrier()
    assert not eve.take(lambda m: "private_message" in m)
    both = ok((yield alice.request({"get_private": "bob"})))
    assert [m["private_message"] for m in both["messages"]] == [
        "for bob only", "for alice only", "still private"]


# -- SQL-special text is data ---------------------------------------------------------------

TRICKY = ["it's", 'say "hi"', "'; DROP TABLE messages; --", "\\", "back\\slash\\'", "%s",
          "%(name)s", "?", "100%", "a?b?c", "\u00e9\u00e8\u00ea \u4e2d\u6587 \u0627\u0644",
          "\U0001F600\U0001F44D\U0001F3FD", "\u202eevil", "line\nbreak\ttab", "--", "/* */"]


@defer.inlineCallbacks
def test_sql_special_strings_are_data_everywhere(server):
    """Quotes, comments, placeholders, backslashes and emoji are stored and returned as sent."""
    admin = yield login_admin(server, "root")
    ok((yield admin.request({"command": "create drop_table--x"})))
    client = yield connect(server)
    emails = {"o.brien": "o'brien+%s?@example.org", "quote_d": '"q\\uo;te"@example.org',
              "emoji-u": "\U0001F600@example.org", "drop.x": "x';DROP_TABLE_users;--@example.org"}
    for name, email in emails.items():
        ok((yield client.request({"register": name, "password": PASSWORD + "'\\%s?",
                                  "email": email})))
    assert "name is 2 to 32" in error((yield client.request(
        {"register": "x'; DROP TABLE users; --", "password": PASSWORD, "email": "x@example.org"})))
    sender = yield login(server, "o.brien", PASSWORD + "'\\%s?", register_first=False)
    ok((yield sender.request({"join": "drop_table--x"})))
    sent = []
    for text in TRICKY:
        reply = yield sender.request({"channel_message": text, "channel": "drop_table--x"})
        sent.append(ok(reply)["id"])
        ok((yield sender.request({"private_message": text, "other_user": "drop.x"})))
    ok((yield admin.request({"command": "ban emoji-u 1h it's \"bad\" %s ? \\ '; --"})))
    yield server.store.messages.drained()

    page = ok((yield sender.request({"get_channel": "drop_table--x", "limit": 200})))
    assert [m["channel_message"] for m in page["messages"]] == TRICKY
    private = ok((yield sender.request({"get_private": "drop.x", "limit": 200})))
    assert [m["private_message"] for m in private["messages"]] == TRICKY
    logged = ok((yield admin.request({"command": "log user o.brien limit 100"})))
    assert sorted(m.get("channel_message") or m.get("private_message")
                  for m in logged["messages"]) == sorted(TRICKY * 2)

    # In SQL itself: the literal strings, nothing dropped.
    bodies = yield server.store.query("SELECT body FROM messages ORDER BY id")
    assert [r[0] for r in bodies] == [t for t in TRICKY for _ in (0, 1)]
    stored_emails = yield server.store.query("SELECT name, email FROM users")
    assert {r[0]: r[1] for r in stored_emails if r[0] in emails} == emails
    channels = yield server.store.query("SELECT name FROM channels")
    assert sorted(r[0] for r in channels) == ["drop_table--x", "general"]
    reasons = yield server.store.query("SELECT target, reason FROM bans")
    assert [tuple(r) for r in reasons] == [("emoji-u", "it's \"bad\" %s ? \\ '; --")]
    assert (yield server.store.query("SELECT COUNT(*) FROM users"))[0][0] == 5


# -- passwords: hashes only, never logged -----------------------------------------------------

SECRETS = ["Sw0rdfish:with:colons", "hunter2 but longer", "'; DROP TABLE users; -- pw",
           "p\u00e4ssw\u00f6rd \U0001F511"]


@defer.inlineCallbacks
def test_passwords_are_never_logged_and_only_stored_as_bcrypt_hashes(server):
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        client = yield connect(server)
        for n, secret in enumerate(SECRETS):
            ok((yield client.request({"register": f"user{n}", "password": secret,
                                      "email": f"user{n}@example.org"})))
        assert error((yield client.request({"register": "user0", "password": SECRETS[0],
                                            "email": "again@example.org"})))
        for n, secret in enumerate(SECRETS):
            assert "Wrong" in error((yield client.request(
                {"user:pwd": f"user{(n + 1) % len(SECRETS)}:{secret}"})))
            assert "Wrong" in error((yield client.request({"user:pwd": f"nobody{n}:{secret}"})))
            assert error((yield client.request({"user:pwd": secret})))      # no name given
        for n, secret in enumerate(SECRETS):
            ok((yield client.request({"user:pwd": f"user{n}:{secret}"})))
            ok((yield client.request({"logout": ""})))
        yield server.store.auth_events.drained()
    finally:
        globalLogPublisher.removeObserver(events.append)

    assert events, "the server logged nothing at all: the observer is not wired"
    for event in events:
        text = formatEvent(event) + repr(event)
        failure = event.get("log_failure")
        if failure is not None:
            text += failure.getTraceback()
        for secret in SECRETS:
            assert secret not in text, event

    hashes = yield server.store.query("SELECT name, password_hash FROM users ORDER BY name")
    assert len(hashes) == len(SECRETS)
    for (name, password_hash), secret in zip(hashes, SECRETS):
        assert password_hash.startswith("$2b$") and len(password_hash) == 60, password_hash
        assert bcrypt.checkpw(secret.encode(), password_hash.encode())
    for table, row in (yield table_cells(server)):
        for cell in row:
            for secret in SECRETS:
                assert secret not in str(cell), (table, row)


# -- regressions found by the fuzzer (tests/test_fuzz.py) ---------------------------------------


@defer.inlineCallbacks
def test_deeply_nested_json_gets_an_error_not_a_dropped_connection(server):
    """json.loads raised RecursionError, which escaped and closed the connection."""
    alice = yield login(server, "alice")
    for line in [b"[" * 5000 + b"]" * 5000, b'{"a":' * 2500 + b"1" + b"}" * 2500]:
        alice.send_raw(line + b"\n")
        reply = yield alice.wait_for(lambda m: "reply_to" in m)
        assert "nests too deeply" in error(reply)
    ok((yield alice.request({"list_users": ""})))


@defer.inlineCallbacks
def test_lone_surrogate_escapes_are_refused_before_they_reach_relay_or_sql(server):
    """"\\ud800" decoded to a str that UTF-8 cannot encode: the relay failed half-way
    and the message, already queued, blocked the SQL log writer for everyone."""
    alice = yield login(server, "alice")
    yield look_at(alice, "general")
    bob = yield login(server, "bob")
    yield look_at(bob, "general")
    for line in [b'{"channel_message": "half \\ud800", "channel": "general"}',
                 b'{"private_message": "\\udfff", "other_user": "bob"}',
                 b'{"register": "eve", "password": "\\ud83d\\ud83dxxxxxx", '
                 b'"email": "e@example.org"}',
                 b'{"list_users": "", "\\ud800": 1}']:
        alice.send_raw(line + b"\n")
        reply = yield alice.wait_for(lambda m: "reply_to" in m)
        assert "lone surrogate" in error(reply), line
    # A real astral character, escaped as a proper surrogate pair, is fine.
    alice.send_raw(b'{"channel_message": "ok \\ud83d\\ude00", "channel": "general"}\n')
    got = yield bob.wait_for(lambda m: "channel_message" in m)
    assert got["channel_message"] == "ok \U0001F600"
    yield server.store.messages.drained()
    rows = yield server.store.query("SELECT body FROM messages")
    assert [r[0] for r in rows] == ["ok \U0001F600"]


@defer.inlineCallbacks
def test_history_before_out_of_sql_range_is_a_clear_error(server):
    """A 'before' beyond a 64-bit integer made the SQL driver fail ("Something went wrong")."""
    alice = yield login(server, "alice")
    ok((yield alice.request({"join": "general"})))
    for before in (2**63, 10**30, -(2**70), 0):
        for request in ({"get_channel": "general", "before": before},
                        {"get_private": "alice", "before": before}):
            assert "'before' is a message id" in error((yield alice.request(request)))
    ok((yield alice.request({"get_channel": "general", "before": 2**63 - 1})))


@defer.inlineCallbacks
def test_a_ban_too_long_for_the_calendar_is_a_clear_error(server):
    """'ban NAME 99999999999w' overflowed datetime ("Something went wrong") instead of
    explaining; found while auditing the admin commands for the fuzzer's number cases."""
    admin = yield login_admin(server, "root")
    yield register(server, "bob")
    refused = yield admin.request({"command": "ban bob 99999999999w"})
    assert "not a duration" in error(refused) and "Something went wrong" not in refused["error"]
    assert server.moderation.ban_list.active == {}
    ok((yield admin.request({"command": "ban bob 520w"})))
