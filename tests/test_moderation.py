"""End-to-end tests of moderation: real server, real TCP clients, SQLite and MariaDB.

Admins create private channels and decide on join requests; kicks and bans by
name, address and range disconnect people and keep them out (across a
restart, until expiry or unban); everything an admin does is audited.
"""

from datetime import datetime, timedelta, timezone

from twisted.internet import defer, endpoints, protocol, task
from twisted.internet import reactor

from chatd.moderation import MANHOLE
from chatd.registry import ADMIN, COMMANDS
from chatd.server import ChatServer, ServerConfig
import support
from support import (PASSWORD, connect, error, login, login_admin, look_at, ok, register,
                     restart_server, start_server, stop_server)


@defer.inlineCallbacks
def command(client, line):
    reply = yield client.request({"command": line})
    return reply


def banned_notice(client):
    return client.wait_for(lambda m: m.get("event") == "disconnect" and m["kind"] == "banned")


@defer.inlineCallbacks
def audit_rows(server):
    rows = yield server.store.query(
        "SELECT actor, action, target, reason, detail FROM audit_log ORDER BY id")
    return [tuple(r) for r in rows]


# -- private channels and join requests -------------------------------------------


@defer.inlineCallbacks
def test_join_request_life_cycle(server):
    alice = yield login_admin(server, "alice")
    created = ok((yield command(alice, "/create secret private")))
    assert created["command"] == "create" and created["private"] is True
    ok((yield alice.request({"channel_message": "before bob", "channel": "secret"})))
    bob = yield login(server, "bob")

    asked = ok((yield bob.request({"join": "secret", "user": "bob"})))
    assert asked == {"reply_to": "join", "ok": True, "channel": "secret", "status": "pending",
                     "ref": asked["ref"]}
    notice = yield alice.event("join_request", channel="secret", user="bob")
    assert isinstance(notice["id"], int)
    again = ok((yield bob.request({"join": "secret"})))
    assert again["status"] == "pending"
    rows = yield server.store.query("SELECT user_name, status FROM join_requests")
    assert [tuple(r) for r in rows] == [("bob", "pending")]

    listing = ok((yield bob.request({"list_channels": ""})))
    assert {"name": "secret", "private": True, "member": False, "request": "pending"} in \
        listing["channels"]
    assert "private; ask to join" in error((yield bob.request({"get_channel": "secret"})))
    pending = ok((yield command(alice, "requests")))
    assert [(r["user"], r["channel"], r["status"]) for r in pending["requests"]] == [
        ("bob", "secret", "pending")]
    assert "bob asks to join #secret" in pending["result"]

    accepted = ok((yield command(alice, "accept bob secret")))
    assert accepted["result"] == "bob is now a member of #secret."
    decided = yield bob.event("request_decided", channel="secret")
    assert decided["status"] == "accepted" and decided["decided_by"] == "alice"
    history = ok((yield bob.request({"get_channel": "secret"})))
    assert [m["channel_message"] for m in history["messages"]] == ["before bob"]
    listing = ok((yield bob.request({"list_channels": ""})))
    assert {"name": "secret", "private": True, "member": True, "request": "accepted"} in \
        listing["channels"]
    mine = ok((yield bob.request({"my_requests": ""})))
    assert [(r["channel"], r["status"], r["decided_by"]) for r in mine["requests"]] == [
        ("secret", "accepted", "alice")]
    assert mine["requests"][0]["decided_at"].endswith("Z")
    assert "no pending request" in error((yield command(alice, "accept bob secret")))
    assert ok((yield command(alice, "requests")))["requests"] == []

    yield register(server, "dave")
    yield server.accounts.set_role("dave", "admin")
    dave = yield login(server, "dave", register_first=False)
    assert ok((yield dave.request({"join": "secret"})))["status"] == "joined"


@defer.inlineCallbacks
def test_rejected_request_gives_no_access_and_may_be_asked_again(server):
    alice = yield login_admin(server, "alice")
    ok((yield command(alice, "create secret private")))
    carol = yield login(server, "carol")
    ok((yield carol.request({"join": "secret"})))
    rejected = ok((yield command(alice, "reject carol #secret")))
    assert rejected["request"]["status"] == "rejected"
    decided = yield carol.event("request_decided", channel="secret")
    assert decided == {"event": "request_decided", "channel": "secret", "status": "rejected",
                       "decided_by": "alice"}
    assert "private" in error((yield carol.request({"get_channel": "secret"})))
    assert "private" in error((yield carol.request({"channel_message": "hi",
                                                    "channel": "secret"})))
    mine = ok((yield carol.request({"my_requests": ""})))
    assert [r["status"] for r in mine["requests"]] == ["rejected"]

    ok((yield carol.request({"join": "secret"})))
    mine = ok((yield carol.request({"my_requests": ""})))
    assert [r["status"] for r in mine["requests"]] == ["pending", "rejected"]
    listing = ok((yield carol.request({"list_channels": ""})))
    assert {"name": "secret", "private": True, "member": False, "request": "pending"} in \
        listing["channels"]


@defer.inlineCallbacks
def test_pending_requests_and_states_survive_restart(server):
    alice = yield login_admin(server, "alice")
    ok((yield command(alice, "create secret private")))
    bob = yield login(server, "bob")
    ok((yield bob.request({"join": "secret"})))
    server = restart_server(server)
    try:
        bob = yield login(server, "bob", register_first=False)
        again = ok((yield bob.request({"join": "secret"})))
        assert again["status"] == "pending"
        count = yield server.store.query("SELECT COUNT(*) FROM join_requests")
        assert count[0][0] == 1
        alice = yield login(server, "alice", register_first=False)
        ok((yield command(alice, "accept bob secret")))
        yield bob.event("request_decided", status="accepted")
    finally:
        stop_server(server)


@defer.inlineCallbacks
def test_admin_removes_a_member_and_deletes_a_channel(server):
    alice = yield login_admin(server, "alice")
    ok((yield command(alice, "create lobby")))
    bob = yield login(server, "bob")
    yield look_at(bob, "lobby")       # public: joined at once
    removed = ok((yield command(alice, "remove bob lobby")))
    assert removed["result"] == "Removed bob from #lobby."
    told = yield bob.event("removed_from_channel")
    assert (told["channel"], told["by"]) == ("lobby", "alice")
    assert "not a member" in error((yield bob.request({"get_channel": "lobby"})))
    assert "not a member" in error((yield command(alice, "remove bob lobby")))
    ok((yield bob.request({"join": "lobby"})))
    ok((yield command(alice, "create hideout private")))
    ok((yield bob.request({"join": "hideout"})))
    deleted = ok((yield command(alice, "delete lobby")))
    assert deleted["channel"] == "lobby"
    ok((yield command(alice, "delete #hideout")))
    told = yield bob.event("channel_deleted", channel="lobby")
    assert told["by"] == "alice"
    assert "no channel named 'lobby'" in error((yield bob.request({"get_channel": "lobby"})))
    assert (yield server.store.query("SELECT COUNT(*) FROM join_requests"))[0][0] == 0
    assert ok((yield bob.request({"my_requests": ""})))["requests"] == []
    rows = yield server.store.query("SELECT COUNT(*) FROM memberships m JOIN channels c"
                                    " ON c.id = m.channel_id WHERE c.name = 'lobby'")
    assert rows[0][0] == 0
    names = [c["name"] for c in ok((yield bob.request({"list_channels": ""})))["channels"]]
    assert names == ["general"]


# -- authorization ------------------------------------------------------------------

SAMPLE_ARGUMENTS = {
    "admin": "bob", "unadmin": "alice", "create": "x private", "delete": "general",
    "requests": "", "accept": "bob general", "reject": "bob general",
    "remove": "bob general", "kick": "alice", "ban": "alice 1h", "unban": "alice",
    "bans": "", "users": "", "log": "user alice", "audit": "",
}


@defer.inlineCallbacks
def test_non_admins_get_an_error_for_every_admin_command_and_nothing_happens(server):
    alice = yield login_admin(server, "alice")
    bob = yield login(server, "bob")
    yield bob.request({"join": "general"})
    admin_only = sorted(name for name, c in COMMANDS.items() if c.access == ADMIN)
    assert admin_only == sorted(SAMPLE_ARGUMENTS)
    for name in admin_only:
        reply = yield command(bob, f"{name} {SAMPLE_ARGUMENTS[name]}".strip())
        assert error(reply) == f"Only admins may use {name!r}."
    help_text = ok((yield command(bob, "/help")))
    assert help_text["commands"] == ["help"]
    assert "admins" in help_text["result"]
    ok((yield alice.request({"list_users": ""})))          # alice is still connected
    assert server.moderation.ban_list.active == {}
    assert (yield audit_rows(server)) == []
    assert server.accounts.role_of("bob") == "user" and "general" in server.hub.channels
    assert "There is no command 'dance'" in error((yield command(bob, "dance")))


@defer.inlineCallbacks
def test_admins_make_admins_and_cannot_demote_kick_or_ban_themselves(server):
    alice = yield login_admin(server, "alice")
    carol = yield login(server, "carol")
    assert "cannot take away your own admin role" in error((yield command(alice, "unadmin alice")))
    assert "cannot kick yourself" in error((yield command(alice, "kick alice")))
    assert "cannot ban yourself" in error((yield command(alice, "ban ALICE 1h")))
    assert "connected from 127.0.0.1" in error((yield command(alice, "ban 127.0.0.1")))
    assert "already an admin" in error((yield command(alice, "admin alice")))
    made = ok((yield command(alice, "admin carol")))
    assert made["result"] == "carol is now an admin."
    assert ok((yield command(carol, "bans")))["bans"] == []
    carol_help = ok((yield command(carol, "help")))
    assert set(carol_help["commands"]) == set(COMMANDS)
    ok((yield command(carol, "unadmin alice")))
    assert "Only admins" in error((yield command(alice, "bans")))
    rows = yield server.store.query("SELECT name, role FROM users ORDER BY name")
    assert [tuple(r) for r in rows] == [("alice", "user"), ("carol", "admin")]
    assert "Usage: ban NAME|IP|CIDR" in error((yield command(carol, "ban")))
    assert "not a duration" in error((yield server.moderation.ban(MANHOLE, "alice", "soon", "")
                                      .addErrback(lambda f: {"error": f.getErrorMessage()})))


# -- kick and ban ---------------------------------------------------------------------


@defer.inlineCallbacks
def test_kick_disconnects_with_the_reason_and_is_recorded(server):
    alice = yield login_admin(server, "alice")
    bob = yield login(server, "bob")
    kicked = ok((yield command(alice, "kick bob calm down")))
    assert kicked["kicked"] == ["bob"]
    notice = yield bob.event("disconnect")
    assert notice["kind"] == "kicked" and "calm down" in notice["reason"]
    yield bob.closed
    assert "not online" in error((yield command(alice, "kick bob")))
    bob = yield login(server, "bob", register_first=False)        # a kick is not a ban
    rows = yield server.store.query("SELECT target, ip, reason, kicked_by FROM kicks")
    assert [tuple(r) for r in rows] == [("bob", "127.0.0.1", "calm down", "alice")]


@defer.inlineCallbacks
def test_ban_by_name_drops_refuses_hides_and_survives_restart(server):
    alice = yield login_admin(server, "alice")
    bob = yield login(server, "bob")
    banned = ok((yield command(alice, "ban bob 2h spamming links")))
    assert banned["ban"]["ip"] == "127.0.0.1" and banned["ban"]["reason"] == "spamming links"
    notice = yield bob.event("disconnect")
    assert notice["kind"] == "banned"
    assert notice["reason"].startswith("You are banned until ")
    assert notice["reason"].endswith("Reason: spamming links.")
    yield bob.closed
    again = yield connect(server)
    refused = error((yield again.request({"user:pwd": f"bob:{PASSWORD}"})))
    assert refused == notice["reason"]
    users = ok((yield alice.request({"list_users": ""})))["users"]
    assert "bob" not in [u["user"] for u in users]
    assert "banned" in error((yield alice.request({"private_message": "hi", "other_user": "bob"})))
    assert "already banned" in error((yield command(alice, "ban bob")))
    listed = ok((yield command(alice, "bans")))
    assert [(b["kind"], b["target"], b["banned_by"]) for b in listed["bans"]] == [
        ("name", "bob", "alice")]

    server = restart_server(server)
    try:
        again = yield connect(server)
        assert "You are banned until" in error(
            (yield again.request({"user:pwd": f"bob:{PASSWORD}"})))
        alice = yield login(server, "alice", register_first=False)
        lifted = ok((yield command(alice, "unban BOB")))
        assert lifted["result"] == "Lifted the ban on bob."
        assert "no active ban" in error((yield command(alice, "unban bob")))
        bob = yield login(server, "bob", register_first=False)
        users = ok((yield bob.request({"list_users": ""})))["users"]
        assert "bob" in [u["user"] for u in users]
        rows = yield server.store.query("SELECT target, lifted_by FROM bans")
        assert [tuple(r) for r in rows] == [("bob", "alice")]
    finally:
        stop_server(server)


@defer.inlineCallbacks
def connect_from(server, host):
    """A client connected from `host` (the server listens on both IPv4 and IPv6)."""
    if ":" in host:
        endpoint = endpoints.TCP6ClientEndpoint(reactor, host, server.address.port)
    else:
        endpoint = endpoints.TCP4ClientEndpoint(reactor, host, server.address.port)
    client = yield endpoint.connect(protocol.Factory.forProtocol(support.TestClient))
    return client


@defer.inlineCallbacks
def login_from(server, name, host):
    client = yield connect_from(server, host)
    ok((yield client.request({"user:pwd": f"{name}:{PASSWORD}"})))
    return client


@defer.inlineCallbacks
def test_ban_by_ip_and_range_from_another_address(database):
    """The admin comes from ::1, the others from 127.0.0.1 (arriving IPv4-mapped)."""
    server = start_server(database, listen=r"tcp6:0:interface=\:\:")
    try:
        for name in ("alice", "bob", "carol"):
            yield register(server, name)
        yield server.accounts.set_role("alice", "admin")
        alice = yield login_from(server, "alice", "::1")
        bob = yield login_from(server, "bob", "127.0.0.1")
        stranger = yield connect_from(server, "127.0.0.1")       # not logged in
        assert server.hub.ips["bob"] == "127.0.0.1"     # arrived IPv4-mapped

        banned = ok((yield command(alice, "ban 127.0.0.0/8 30m open proxy")))
        assert banned["result"].startswith("Banned 127.0.0.0/8 until ")
        assert banned["result"].endswith("(2 connection(s) closed).")
        for client in (bob, stranger):
            notice = yield client.event("disconnect")
            assert notice["kind"] == "banned"
            assert notice["reason"].startswith("Connections from 127.0.0.0/8 are banned until")
            yield client.closed
        newcomer = yield connect_from(server, "127.0.0.1")
        refused = yield newcomer.event("disconnect")
        assert refused["kind"] == "banned" and "Reason: open proxy." in refused["reason"]
        yield newcomer.closed
        ok((yield alice.request({"list_users": ""})))

        assert "connected from ::1" in error((yield command(alice, "ban ::1")))
        ok((yield command(alice, "ban 2001:db8::/32 v6 range")))
        ok((yield command(alice, "unban 127.0.0.0/8")))
        carol = yield login_from(server, "carol", "127.0.0.1")
        ok((yield command(alice, "ban 127.0.0.1")))
        yield banned_notice(carol)
        listed = ok((yield command(alice, "bans")))
        assert [b["target"] for b in listed["bans"]] == ["2001:db8::/32", "127.0.0.1"]
        newcomer = yield connect_from(server, "127.0.0.1")
        yield banned_notice(newcomer)
        rows = yield server.store.query(
            "SELECT kind, target, lifted_by FROM bans ORDER BY id")
        assert [tuple(r) for r in rows] == [("ip", "127.0.0.0/8", "alice"),
                                            ("ip", "2001:db8::/32", None),
                                            ("ip", "127.0.0.1", None)]
    finally:
        stop_server(server)


@defer.inlineCallbacks
def test_ip_ban_survives_restart(database):
    server = start_server(database, listen=r"tcp6:0:interface=\:\:")
    try:
        yield server.moderation.ban(MANHOLE, "127.0.0.1", "1d", "from the console")
    finally:
        stop_server(server)
    server = start_server(database, listen=rf"tcp6:{server.address.port}:interface=\:\:")
    try:
        refused = yield connect_from(server, "127.0.0.1")
        notice = yield banned_notice(refused)
        assert "Reason: from the console." in notice["reason"]
        allowed = yield connect_from(server, "::1")
        ok((yield allowed.request({"register": "dave", "password": PASSWORD,
                                   "email": "dave@example.org"})))
    finally:
        stop_server(server)


@defer.inlineCallbacks
def test_short_ban_expires_on_the_running_server(server):
    alice = yield login_admin(server, "alice")
    yield register(server, "bob")
    ok((yield command(alice, "ban bob 1s")))
    client = yield connect(server)
    assert "banned until" in error((yield client.request({"user:pwd": f"bob:{PASSWORD}"})))
    yield task.deferLater(reactor, 1.3, lambda: None)
    ok((yield client.request({"user:pwd": f"bob:{PASSWORD}"})))
    assert ok((yield command(alice, "bans")))["bans"] == []


@defer.inlineCallbacks
def test_ban_expiry_runs_on_the_hub_clock(sqlite_database):
    """With a task.Clock as the server's reactor, expiry happens exactly when the clock says."""
    clock = task.Clock()
    server = ChatServer(ServerConfig(database=sqlite_database, bcrypt_rounds=4), reactor=clock)
    yield server.store.start()
    try:
        yield server.store.create_user("bob", "bob@example.org", "x", "user")
        yield server.accounts.load()
        yield server.hub.load()
        yield server.moderation.load()
        yield server.moderation.ban(MANHOLE, "bob", "30m", "flood")
        assert not server.hub.can_receive_private("bob")
        clock.advance(30 * 60 - 1)
        assert not server.hub.can_receive_private("bob")
        clock.advance(1)
        assert server.hub.can_receive_private("bob")
        assert server.moderation.bans(MANHOLE)["bans"] == []
    finally:
        yield server.store.stop()


# -- audit and message logs --------------------------------------------------------------


@defer.inlineCallbacks
def test_every_admin_action_is_audited(server):
    alice = yield login_admin(server, "alice")
    bob = yield login(server, "bob")
    yield register(server, "carol")
    for line in ["admin carol", "unadmin carol", "create secret private"]:
        ok((yield command(alice, line)))
    ok((yield bob.request({"join": "secret"})))
    for line in ["accept bob secret", "remove bob secret", "kick bob too loud",
                 "ban carol 7d spam", "unban carol", "delete secret"]:
        ok((yield command(alice, line)))
    rows = yield audit_rows(server)
    ban = rows.pop(6)
    assert ban[:4] == ("alice", "ban", "carol", "spam") and ban[4].startswith("until ")
    assert rows == [
        ("alice", "admin", "carol", None, None),
        ("alice", "unadmin", "carol", None, None),
        ("alice", "create", "secret", None, "private"),
        ("alice", "accept", "bob", None, "#secret"),
        ("alice", "remove", "bob", None, "#secret"),
        ("alice", "kick", "bob", "too loud", "1 connection(s) closed"),
        ("alice", "unban", "carol", None, None),
        ("alice", "delete", "secret", None, None),
    ]
    shown = ok((yield command(alice, "audit limit 3")))
    assert [e["action"] for e in shown["entries"]] == ["delete", "unban", "ban"]


@defer.inlineCallbacks
def test_message_log_by_user_and_channel_with_range_and_limit(server):
    alice = yield login_admin(server, "alice")
    bob = yield login(server, "bob")
    ok((yield bob.request({"join": "general"})))
    for text in ["one", "two", "three"]:
        ok((yield bob.request({"channel_message": text, "channel": "general"})))
    ok((yield bob.request({"private_message": "psst", "other_user": "alice"})))
    ok((yield alice.request({"join": "general"})))
    ok((yield alice.request({"channel_message": "from alice", "channel": "general"})))
    # No drain here: every acknowledged message is already committed.

    by_bob = ok((yield command(alice, "log user bob")))
    assert [(m.get("channel"), m.get("other_user"), m["user"],
             m.get("channel_message") or m.get("private_message"))
            for m in by_bob["messages"]] == [
        ("general", None, "bob", "one"), ("general", None, "bob", "two"),
        ("general", None, "bob", "three"), (None, "alice", "bob", "psst")]
    assert "#general bob: one" in by_bob["result"] and "to alice bob: psst" in by_bob["result"]

    in_general = ok((yield command(alice, "log channel #general limit 2")))
    assert [m["channel_message"] for m in in_general["messages"]] == ["three", "from alice"]

    today = datetime.now(timezone.utc).date()
    tomorrow, yesterday = today + timedelta(days=1), today - timedelta(days=1)
    within = ok((yield command(alice, f"log user bob since {yesterday} until {today} limit 100")))
    assert len(within["messages"]) == 4
    assert ok((yield command(alice, f"log user bob since {tomorrow}")))["messages"] == []
    assert ok((yield command(alice, f"log channel general until {yesterday}")))["messages"] == []
    assert "not a date" in error((yield command(alice, "log user bob since last-week")))
    assert "Usage: log" in error((yield command(alice, "log bob")))
    assert "between 1 and 500" in error((yield command(alice, "log user bob limit 0")))
    rows = yield audit_rows(server)
    assert [r[:3] for r in rows] == [("alice", "log", "bob"), ("alice", "log", "#general"),
                                     ("alice", "log", "bob"), ("alice", "log", "bob"),
                                     ("alice", "log", "#general")]
    assert rows[1][4] == "1970-01-01 00:00:00.000 to 9999-12-31 00:00:00.000, limit 2"


@defer.inlineCallbacks
def test_message_log_until_the_end_of_the_calendar_and_with_offsets(server):
    """Regressions: 'until 9999-12-31' overflowed; '+02:00' offsets were dropped, not converted."""
    alice = yield login_admin(server, "alice")
    ok((yield alice.request({"join": "general"})))
    ok((yield alice.request({"channel_message": "late", "channel": "general"})))
    found = ok((yield command(alice, "log channel general until 9999-12-31")))
    assert [m["channel_message"] for m in found["messages"]] == ["late"]
    now = datetime.now(timezone.utc)
    # 'since' one minute ago written in UTC+02:00: the message is inside the range...
    since = (now - timedelta(minutes=1)).astimezone(timezone(timedelta(hours=2)))
    found = ok((yield command(alice, f"log channel general since {since.isoformat()}")))
    assert [m["channel_message"] for m in found["messages"]] == ["late"]
    # ...and 'until' one minute ago in UTC-05:00 leaves it out (read naively, it would not).
    until = (now - timedelta(minutes=1)).astimezone(timezone(timedelta(hours=-5)))
    found = ok((yield alice.request({"log": "", "channel": "general",
                                     "until": until.isoformat()})))
    assert found["messages"] == []


def test_parse_time_converts_offsets_to_utc_and_clamps_the_calendar():
    from chatd.moderation.common import parse_time
    assert parse_time("2026-11-24T13:20+02:00") == datetime(2026, 11, 24, 11, 20)
    assert parse_time("2026-11-24T13:20Z") == datetime(2026, 11, 24, 13, 20)
    assert parse_time("2026-11-24", end_of_day=True) == datetime(2026, 11, 25)
    assert parse_time("9999-12-31", end_of_day=True) == datetime.max
    assert parse_time("0001-01-01T00:00+01:00") == datetime.min


@defer.inlineCallbacks
def test_creating_or_deleting_the_same_channel_twice_at_once(server):
    """Regressions: the second create ended in an IntegrityError, the second delete in KeyError."""
    alice = yield login_admin(server, "alice")
    root = yield login_admin(server, "root")
    first, second = yield defer.gatherResults([
        command(alice, "create twice"), command(root, "create twice")])
    replies = sorted([first, second], key=lambda r: "error" in r)
    assert ok(replies[0])["result"] == "Created the public channel #twice."
    assert error(replies[1]) == "#twice already exists."
    first, second = yield defer.gatherResults([
        command(alice, "delete twice"), command(root, "delete twice")])
    replies = sorted([first, second], key=lambda r: "error" in r)
    assert ok(replies[0])["result"] == "Deleted #twice; its messages stay in the log."
    assert "There is no channel named 'twice'" in error(replies[1])
    assert "twice" not in server.hub.channels
