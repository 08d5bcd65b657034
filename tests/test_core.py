"""End-to-end tests of the server core: real server, real TCP clients, SQLite and MariaDB."""

import json
import socket

from twisted.internet import defer, reactor, task, threads
from twisted.internet.testing import StringTransport

from chatd.protocol import ChatFactory
from support import PASSWORD, connect, error, login, look_at, ok, register, restart_server


@defer.inlineCallbacks
def test_register_rules_and_unique_names(server):
    client = yield connect(server)
    reply = yield client.request({"register": "alice", "password": PASSWORD,
                                  "email": "alice@example.org"})
    assert ok(reply)["user"] == "alice"
    taken = yield client.request({"register": "ALICE", "password": PASSWORD,
                                  "email": "other@example.org"})
    assert "taken" in error(taken)
    reserved = yield client.request({"register": "Manhole", "password": PASSWORD,
                                     "email": "m@example.org"})
    assert "reserved" in error(reserved)
    for bad in [{"register": "a", "password": PASSWORD, "email": "a@example.org"},
                {"register": "1abc", "password": PASSWORD, "email": "a@example.org"},
                {"register": "bob", "password": "short", "email": "b@example.org"},
                {"register": "carol", "password": "carolcarol".upper(), "email": "nope"},
                {"register": "davedave", "password": "DaveDave", "email": "d@example.org"}]:
        assert error((yield client.request(bad)))
    rows = yield server.store.query("SELECT name, password_hash FROM users")
    assert [r[0] for r in rows] == ["alice"]
    assert rows[0][1].startswith("$2b$") and PASSWORD not in rows[0][1]


@defer.inlineCallbacks
def test_login_good_and_bad_password_are_logged(server):
    yield register(server, "alice")
    client = yield connect(server)
    bad = yield client.request({"user:pwd": "alice:wrong password", "user": "alice"})
    assert error(bad) == "Wrong name or password."
    nobody = yield client.request({"user:pwd": "nobody:wrong password"})
    assert error(nobody) == "Wrong name or password."
    good = yield client.request({"user:pwd": f"alice:{PASSWORD}", "user": "alice"})
    assert ok(good)["user"] == "alice" and good["role"] == "user"
    yield server.store.auth_events.drained()
    rows = yield server.store.query("SELECT user_name, event, ip FROM auth_log ORDER BY id")
    assert [tuple(r) for r in rows] == [
        ("alice", "register", "127.0.0.1"), ("alice", "login_failed", "127.0.0.1"),
        ("nobody", "login_failed", "127.0.0.1"), ("alice", "login", "127.0.0.1")]


@defer.inlineCallbacks
def test_an_account_this_server_has_not_seen_logs_in_from_the_database(server):
    """Logins check the hashes kept in memory; an account another node (or anything
    else) stored after the start is read from the database at its first login."""
    import bcrypt
    password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    yield server.store.create_user("Zoe", "zoe@example.org", password_hash, "admin")
    client = yield connect(server)
    bad = yield client.request({"user:pwd": "zoe:wrong password"})
    assert error(bad) == "Wrong name or password."
    good = yield client.request({"user:pwd": f"zoe:{PASSWORD}"})
    assert (ok(good)["user"], good["role"]) == ("Zoe", "admin")
    other = yield connect(server)
    again = yield other.request({"user:pwd": f"ZOE:{PASSWORD}"})
    assert ok(again)["user"] == "Zoe"


@defer.inlineCallbacks
def test_newest_login_wins_and_ip_dictionary_updates(server):
    first = yield login(server, "alice")
    assert server.hub.ips["alice"] == "127.0.0.1"
    server.hub.ips["alice"] = "198.51.100.9"   # as if the first login came from elsewhere
    second = yield login(server, "alice", register_first=False)
    notice = yield first.event("disconnect")
    assert notice["kind"] == "replaced" and "127.0.0.1" in notice["reason"]
    yield first.closed
    assert server.hub.ips["alice"] == "127.0.0.1"
    assert server.hub.sessions["alice"].connection.transport.getPeer().port == \
        second.transport.getHost().port
    ok((yield second.request({"list_users": ""})))


@defer.inlineCallbacks
def test_logout_returns_to_logged_out_state(server):
    alice = yield login(server, "alice")
    ok((yield alice.request({"logout": "alice", "user": "alice"})))
    assert "alice" not in server.hub.sessions
    assert "Log in first" in error((yield alice.request({"list_users": ""})))
    ok((yield alice.request({"user:pwd": f"alice:{PASSWORD}"})))
    yield server.store.auth_events.drained()
    rows = yield server.store.query("SELECT event FROM auth_log ORDER BY id")
    assert [r[0] for r in rows] == ["register", "login", "logout", "login"]


@defer.inlineCallbacks
def test_requests_before_login_are_refused(server):
    client = yield connect(server)
    for payload in [{"list_channels": ""}, {"join": "general"},
                    {"channel_message": "hi", "channel": "general"},
                    {"get_channel": "general"}, {"command": "help"}]:
        assert "Log in first" in error((yield client.request(payload)))


@defer.inlineCallbacks
def test_join_public_and_message_reaches_members_not_others(server):
    alice = yield login(server, "alice")
    bob = yield login(server, "bob")
    carol = yield login(server, "carol")
    joined = yield alice.request({"join": "general", "user": "alice"})
    assert ok(joined)["status"] == "joined"
    again = yield alice.request({"join": "general"})
    assert again["status"] == "member"
    yield look_at(alice, "general")
    yield look_at(bob, "general")
    carol.send({"presence": "online"})
    sent = yield alice.request({"channel_message": "hello", "user": "alice", "channel": "general"})
    ok(sent)
    relayed = yield bob.wait_for(lambda m: "channel_message" in m)
    assert relayed == {"channel_message": "hello", "user": "alice", "channel": "general",
                       "id": sent["id"], "time": sent["time"]}
    assert relayed["time"].endswith("Z")
    yield carol.barrier()
    assert not carol.take(lambda m: "channel_message" in m)
    refused = yield carol.request({"channel_message": "me too", "channel": "general"})
    assert "not a member" in error(refused)
    listing = ok((yield carol.request({"list_channels": ""})))
    assert {"name": "general", "private": False, "member": False, "request": None} in \
        listing["channels"]


@defer.inlineCallbacks
def test_private_message_live_and_in_history(server):
    alice = yield login(server, "alice")
    yield register(server, "bob")
    sent = ok((yield alice.request({"private_message": "psst", "user": "alice",
                                    "other_user": "bob"})))
    echo = yield alice.wait_for(lambda m: "private_message" in m)
    assert echo["id"] == sent["id"]
    bob = yield login(server, "bob", register_first=False)
    ok((yield bob.request({"private_message": "hey", "other_user": "alice"})))
    live = yield alice.wait_for(lambda m: m.get("private_message") == "hey")
    assert live["user"] == "bob" and live["other_user"] == "alice"
    history = ok((yield bob.request({"get_private": "alice", "user": "bob"})))
    assert [(m["user"], m["private_message"]) for m in history["messages"]] == [
        ("alice", "psst"), ("bob", "hey")]
    unknown = yield alice.request({"private_message": "hi", "other_user": "nobody"})
    assert "no user" in error(unknown)


@defer.inlineCallbacks
def test_history_paging_and_non_members_get_none(server):
    alice = yield login(server, "alice")
    yield alice.request({"join": "general"})
    ids = []
    for n in range(7):
        reply = yield alice.request({"channel_message": f"m{n}", "channel": "general"})
        ids.append(reply["id"])
    yield server.store.messages.drained()
    page = ok((yield alice.request({"get_channel": "general", "limit": 3})))
    assert [m["channel_message"] for m in page["messages"]] == ["m4", "m5", "m6"]
    assert page["has_more"] is True
    older = ok((yield alice.request({"get_channel": "general", "limit": 3,
                                     "before": page["messages"][0]["id"]})))
    assert [m["channel_message"] for m in older["messages"]] == ["m1", "m2", "m3"]
    oldest = ok((yield alice.request({"get_channel": "general", "limit": 3,
                                      "before": older["messages"][0]["id"]})))
    assert [m["channel_message"] for m in oldest["messages"]] == ["m0"]
    assert oldest["has_more"] is False
    assert page["messages"][0] == {"channel_message": "m4", "user": "alice",
                                   "channel": "general", "id": ids[4],
                                   "time": page["messages"][0]["time"]}
    bob = yield login(server, "bob")
    assert "not a member" in error((yield bob.request({"get_channel": "general"})))


@defer.inlineCallbacks
def test_history_after_pipelined_messages_shows_them(server):
    """Messages are pipelined, and a request sent after them sees them stored."""
    alice = yield login(server, "alice")
    yield alice.request({"join": "general"})
    alice.send({"channel_message": "one", "channel": "general"})
    alice.send({"channel_message": "two", "channel": "general"})
    page = ok((yield alice.request({"get_channel": "general"})))
    assert [m["channel_message"] for m in page["messages"]] == ["one", "two"]


@defer.inlineCallbacks
def test_forged_user_field_is_refused(server):
    alice = yield login(server, "alice")
    bob = yield look_and_login(server, "bob")
    yield alice.request({"join": "general"})
    forged = yield alice.request({"channel_message": "I am bob", "user": "bob",
                                  "channel": "general"})
    assert "cannot speak as 'bob'" in error(forged)
    forged_pm = yield alice.request({"private_message": "x", "user": "bob", "other_user": "bob"})
    error(forged_pm)
    yield bob.barrier()
    assert not bob.take(lambda m: "channel_message" in m or "private_message" in m)
    yield server.store.messages.drained()
    assert (yield server.store.query("SELECT COUNT(*) FROM messages"))[0][0] == 0


@defer.inlineCallbacks
def look_and_login(server, name):
    client = yield login(server, name)
    yield look_at(client, "general")
    return client


@defer.inlineCallbacks
def test_seed_message_shapes_work_as_written(server):
    """The exact lines from the original notes (DESIGN.md)."""
    yield register(server, "bob")
    client = yield connect(server)
    lines = [
        {"user:pwd": f"alice:{PASSWORD}", "user": "alice"},
    ]
    ok((yield client.request({"register": "alice", "password": PASSWORD,
                              "email": "alice@example.org"})))
    ok((yield client.request(lines[0])))
    ok((yield client.request({"join": "general", "user": "alice"})))
    ok((yield client.request({"channel_message": "text", "user": "alice", "channel": "general"})))
    ok((yield client.request({"private_message": "text", "user": "alice", "other_user": "bob"})))
    reply = yield client.request({"command": "ban Jules", "user": "alice"})
    assert reply["reply_to"] == "command" and ("ok" in reply or "error" in reply)
    ok((yield client.request({"get_channel": "general", "user": "alice"})))
    ok((yield client.request({"get_private": "bob", "user": "alice"})))
    reply = yield client.request({"join": "secret-channel", "user": "alice"})
    assert reply["reply_to"] == "join"
    assert "no channel" in reply.get("error", "") or reply.get("ok")


@defer.inlineCallbacks
def test_bad_input_gets_errors_and_others_keep_working(server):
    alice = yield look_and_login(server, "alice")
    bob = yield look_and_login(server, "bob")
    bad_lines = [
        (b"this is not json\n", "not valid JSON"),
        (b"[1, 2, 3]\n", "must be a JSON object"),
        (b'"just a string"\n', "must be a JSON object"),
        (b'\xff\xfe{}\n', "not valid JSON"),
        (b'{"dance": "now"}\n', "No known action"),
        (b'{"join": "general", "leave": "general"}\n', "One action per line"),
        (b'{"channel_message": "hi"}\n', "Missing field 'channel'"),
        (b'{"channel_message": "hi", "channel": "general", "colour": "red"}\n',
         "Unexpected field 'colour'"),
        (b'{"channel_message": 42, "channel": "general"}\n', "'channel_message' must be a string"),
        (b'{"get_channel": "general", "before": "yesterday"}\n', "'before' must be an integer"),
        (b'{"get_channel": "general", "limit": true}\n', "'limit' must be an integer"),
        (b'{"channel_message": "", "channel": "general"}\n', "empty"),
        (b'{"presence": "sleeping"}\n', "online"),
    ]
    for raw, expected in bad_lines:
        alice.send_raw(raw)
        reply = yield alice.wait_for(lambda m: "reply_to" in m)
        assert expected in reply.get("error", ""), (raw, reply)
        assert "Traceback" not in reply["error"]
    ok((yield bob.request({"channel_message": "still here", "channel": "general"})))
    got = yield alice.wait_for(lambda m: m.get("channel_message") == "still here")
    assert got["user"] == "bob"


@defer.inlineCallbacks
def test_oversized_line_disconnects_cleanly(server):
    alice = yield look_and_login(server, "alice")
    bob = yield look_and_login(server, "bob")
    alice.send_raw(b'{"channel_message": "' + b"x" * (server.config.max_line + 10) + b'"}\n')
    notice = yield alice.event("disconnect")
    assert notice["kind"] == "abuse" and "at most" in notice["reason"]
    yield alice.closed
    left = yield bob.event("member", user="alice")
    assert left["status"] == "offline"
    ok((yield bob.request({"channel_message": "fine", "channel": "general"})))


def send_all_then_read_to_end(port, data):
    """A blocking client that writes everything before it reads anything."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


@defer.inlineCallbacks
def test_the_reason_survives_a_client_that_is_still_sending(sqlite_server):
    """Input left unread when the server closes would make the kernel reset the
    connection and could destroy the reason; the server drains it first."""
    oversized = b"x" * 50_000_000 + b"\n"
    received = yield threads.deferToThread(
        send_all_then_read_to_end, sqlite_server.address.port, oversized)
    notice = json.loads(received.splitlines()[-1])
    assert notice["event"] == "disconnect" and notice["kind"] == "abuse"


@defer.inlineCallbacks
def test_after_the_goodbye_nothing_more_is_sent_and_no_login_completes(sqlite_server):
    """A login still checking its password when the server says goodbye must not
    start a session, nor answer after the goodbye line."""
    yield register(sqlite_server, "alice")
    protocol = ChatFactory(sqlite_server).buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(json.dumps({"user:pwd": f"alice:{PASSWORD}"}).encode() + b"\n")
    protocol.disconnect("shutdown", "The server is restarting.")
    while sqlite_server.hasher.running or sqlite_server.hasher.queued:
        yield task.deferLater(reactor, 0.01, lambda: None)
    yield task.deferLater(reactor, 0.05, lambda: None)
    lines = [json.loads(line) for line in transport.value().splitlines()]
    assert lines == [{"event": "disconnect", "kind": "shutdown",
                      "reason": "The server is restarting."}]
    assert "alice" not in sqlite_server.hub.sessions
    protocol.connectionLost(None)


@defer.inlineCallbacks
def test_sql_special_strings_are_stored_literally(server):
    alice = yield login(server, "alice")
    yield alice.request({"join": "general"})
    tricky = "'; DROP TABLE messages; -- \" \\ %s ? \U0001F600 \u202e"
    ok((yield alice.request({"channel_message": tricky, "channel": "general"})))
    yield server.store.messages.drained()
    rows = yield server.store.query("SELECT body FROM messages")
    assert [r[0] for r in rows] == [tricky]
    page = ok((yield alice.request({"get_channel": "general"})))
    assert page["messages"][0]["channel_message"] == tricky


@defer.inlineCallbacks
def test_messages_and_members_survive_restart(server):
    alice = yield login(server, "alice")
    yield alice.request({"join": "general"})
    ok((yield alice.request({"channel_message": "before restart", "channel": "general"})))
    server = restart_server(server)
    try:
        yield alice.closed
        alice = yield login(server, "alice", register_first=False)
        page = ok((yield alice.request({"get_channel": "general"})))
        assert [m["channel_message"] for m in page["messages"]] == ["before restart"]
        after = ok((yield alice.request({"channel_message": "after", "channel": "general"})))
        assert after["id"] > page["messages"][0]["id"]
    finally:
        from support import stop_server
        stop_server(server)
