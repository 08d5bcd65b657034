"""Several chatd nodes on one NATS JetStream bus and one MariaDB (docs/cluster.md).

Real `twistd --reactor=asyncio` processes, the real NATS at 127.0.0.1:4222 and
the real MariaDB; clients over TCP. Skipped unless NATS answers, failed when
CHATD_REQUIRE_MYSQL=1 and it does not.
"""

import pytest
from twisted.internet import defer

from chatd.natsbus import parse_bus_url, subject_token
from cluster_support import (NODE, cluster, cluster_with_a_behind_a_proxy, private_cluster,
                             require_nats, start_a_and_b)
from support import PASSWORD, connect, mysql_database, ok
from test_twistd import free_port, twistd_failure


# -- names on the bus ---------------------------------------------------------------

def test_subject_tokens_are_safe_and_distinct():
    names = ["general", "a.b", "a*", "a>", "a b", "a=2E", "ça", "日本", "-_x", "A", "a"]
    tokens = [subject_token(n) for n in names]
    assert len(set(tokens)) == len(names)
    for token in tokens:
        assert token and not set(token) & set(". *>\t\r\n")
    assert subject_token("general") == "general" and subject_token("a.b") == "a=2Eb"


def test_bus_urls():
    assert parse_bus_url("nats://127.0.0.1:4222") == ("nats://127.0.0.1:4222", "chatd")
    assert parse_bus_url("nats://h/prod-1") == ("nats://h:4222", "prod-1")
    for bad in ("http://h:4222", "nats://", "nats://h:x", "nats://h/a.b"):
        with pytest.raises(ValueError):
            parse_bus_url(bad)


# -- start-up errors: one line, exit status 1 ---------------------------------------------

def node_failure(tmp_path, *args):
    return twistd_failure(tmp_path, *args, command=NODE)[0]


def test_bus_with_sqlite_is_refused(tmp_path):
    line = node_failure(tmp_path, "--bus", "nats://127.0.0.1:4222/x", "--node-name", "a",
                        "--listen", "tcp:0")
    assert "--bus needs a mysql:// database" in line


def test_bus_without_the_asyncio_reactor_is_refused(tmp_path):
    with mysql_database() as url:
        line = twistd_failure(tmp_path, "--bus", "nats://127.0.0.1:4222/x", "--node-name", "a",
                              "--database", url, "--listen", "tcp:0")[0]
    assert "--bus needs Twisted's asyncio reactor" in line and "--reactor=asyncio" in line


def test_bus_needs_a_node_name(tmp_path):
    from test_twistd import parse
    from twisted.python.usage import UsageError
    with pytest.raises(UsageError, match="--bus needs --node-name"):
        parse("--bus", "nats://127.0.0.1:4222")
    with pytest.raises(UsageError, match="node name"):
        parse("--bus", "nats://127.0.0.1:4222", "--node-name", "a.b")


def test_an_unreachable_bus_is_refused(tmp_path):
    port = free_port()
    with mysql_database() as url:
        line = node_failure(tmp_path, "--bus", f"nats://127.0.0.1:{port}/x", "--node-name", "a",
                            "--database", url, "--listen", "tcp:0")
    assert f"cannot reach the bus at nats://127.0.0.1:{port}/x" in line


def test_two_live_nodes_with_one_name_are_refused(tmp_path):
    with cluster(tmp_path) as nodes:
        nodes.start("a")
        (tmp_path / "second").mkdir()
        line = node_failure(tmp_path / "second", "--bus", nodes.bus, "--node-name", "a",
                            "--database", nodes.database, "--listen", "tcp:0")
        assert "--node-name a: a node of that name is already running" in line
        nodes.start("b")    # another name is welcome


def test_nodes_starting_at_once_on_an_empty_database_upgrade_it_once(tmp_path):
    """Two nodes started at the same moment on a fresh database: one applies the schema
    files (under GET_LOCK), the other waits and finds them applied. Several rounds, as a
    race shows only sometimes."""
    import threading
    import MySQLdb
    from chatd.engines import engine_from_url
    latest = max(v for v, _ in engine_from_url("mysql://u@h/db").migrations())
    for round in range(3):
        (tmp_path / f"round{round}").mkdir()
        with cluster(tmp_path / f"round{round}") as nodes:
            failures = []

            def start(name):
                try:
                    nodes.start(name)
                except BaseException as e:
                    failures.append(f"{name}: {e}")
            starting = [threading.Thread(target=start, args=(n,)) for n in "ab"]
            for thread in starting:
                thread.start()
            for thread in starting:
                thread.join(60)
            assert not failures, failures
            engine = engine_from_url(nodes.database)
            db = MySQLdb.connect(host=engine.host, port=engine.port, user=engine.user,
                                 passwd=engine.password, db=engine.database)
            try:
                cursor = db.cursor()
                cursor.execute("SELECT version FROM schema_version ORDER BY version")
                assert [v for v, in cursor.fetchall()] == list(range(1, latest + 1))
            finally:
                db.close()
            nodes.stop_all()
            for name in "ab":
                log = (tmp_path / f"round{round}" / name / "node.log").read_text()
                assert "Traceback" not in log and "#critical" not in log, log
                assert "#error" not in log, log


# -- clients on several nodes ----------------------------------------------------------------

@defer.inlineCallbacks
def client_on(node, name, register=False, source=None):
    """A client of `node` from the loopback address `source` (127.0.0.0/8 all reach us),
    logged in as `name` (registered first if asked; nobody if None)."""
    client = yield connect(node, source)
    return (yield signed_in(client, name, register))


@defer.inlineCallbacks
def signed_in(client, name, register=False):
    if register:
        ok((yield client.request({"register": name, "password": PASSWORD,
                                  "email": f"{name}@example.org"})))
    if name is not None:
        ok((yield client.request({"user:pwd": f"{name}:{PASSWORD}"})))
        client.name = name
    return client


@defer.inlineCallbacks
def alice_on_a_bob_on_b(a, b):
    """alice on node a and bob on node b, both looking at #general, alice heartbeating."""
    alice = yield client_on(a, "alice", register=True)
    bob = yield client_on(b, "bob", register=True)
    yield look(alice)
    yield look(bob)
    keep_alive(alice, channel="general")
    return alice, bob


@defer.inlineCallbacks
def look(client, channel="general"):
    ok((yield client.request({"join": channel})))
    client.send({"presence": "online", "channel": channel})
    members = yield client.event("members", channel=channel)
    return members


@pytest.mark.timeout(60)
@defer.inlineCallbacks
def test_channel_messages_reach_every_node_in_one_order(tmp_path):
    with cluster(tmp_path) as nodes:
        a, b = nodes.start("a"), nodes.start("b")
        alice = yield client_on(a, "alice", register=True)
        bob = yield client_on(b, "bob", register=True)     # registered on b, seen on a
        carol = yield client_on(a, "carol", register=True)
        for client in (alice, bob, carol):
            yield look(client)
        count = 40
        sent = []
        for i in range(count):     # both nodes publish at once, interleaved
            for sender in (alice, bob):
                sent.append(sender.request({"channel_message": f"{sender.name} {i}",
                                            "channel": "general"}))
        replies = yield defer.gatherResults(sent)
        ids = {ok(reply)["id"] for reply in replies}
        assert len(ids) == 2 * count    # the database gives ids: unique across nodes

        def relayed(m):
            return "channel_message" in m and "reply_to" not in m
        orders = []
        for client in (alice, bob, carol):
            order = []
            while len(order) < 2 * count:
                message = yield client.wait_for(relayed)
                order.append((message["id"], message["channel_message"]))
            orders.append(order)
        assert orders[0] == orders[1] == orders[2]
        assert {i for i, _ in orders[0]} == ids


@pytest.mark.timeout(60)
@defer.inlineCallbacks
def test_private_messages_cross_nodes(tmp_path):
    with cluster(tmp_path) as nodes:
        a, b = nodes.start("a"), nodes.start("b")
        alice = yield client_on(a, "alice", register=True)
        bob = yield client_on(b, "bob", register=True)
        reply = ok((yield alice.request({"private_message": "hi bob", "other_user": "bob"})))
        got = yield bob.wait_for(lambda m: m.get("private_message") == "hi bob")
        assert got["id"] == reply["id"] and got["user"] == "alice"
        # The sender's own copy comes back through the stream too.
        yield alice.wait_for(lambda m: m.get("private_message") == "hi bob"
                             and "reply_to" not in m)


def test_require_nats_skips_or_fails(monkeypatch):
    import cluster_support
    monkeypatch.setattr(cluster_support, "nats_reachable", lambda: False)
    monkeypatch.setattr(cluster_support, "REQUIRE_MYSQL", True)
    with pytest.raises(pytest.fail.Exception):
        require_nats()
    monkeypatch.setattr(cluster_support, "REQUIRE_MYSQL", False)
    with pytest.raises(pytest.skip.Exception):
        require_nats()


# -- the shared state ---------------------------------------------------------------

def keep_alive(client, **looking):
    """Heartbeats every second (the nodes run with a presence timeout of 3 s)."""
    from twisted.internet import task
    beat = task.LoopingCall(client.send, dict(presence="online", **looking))
    beat.start(1.0)
    client.closed.addBoth(lambda _: beat.running and beat.stop())
    return beat


@defer.inlineCallbacks
def until_online(client, name, timeout=5):
    """Wait until `client`'s node lists `name` as online (a login elsewhere takes a moment
    to cross the bus)."""
    from twisted.internet import reactor, task
    deadline = reactor.seconds() + timeout
    while True:
        users = ok((yield client.request({"list_users": ""})))["users"]
        if {u["user"]: u["status"] for u in users}.get(name) == "online":
            return
        assert reactor.seconds() < deadline, f"{name} not online for {client.name}: {users}"
        yield task.deferLater(reactor, 0.05, lambda: None)


@defer.inlineCallbacks
def eventually(check, timeout=5):
    """Call `check()` (a Deferred of a boolean) until it is true; a change takes a moment
    to cross the bus."""
    from twisted.internet import reactor, task
    deadline = reactor.seconds() + timeout
    while not (yield check()):
        assert reactor.seconds() < deadline, "the change did not reach every node"
        yield task.deferLater(reactor, 0.05, lambda: None)


@defer.inlineCallbacks
def online_users(client):
    """{name: (ip, node)} from the admin's `users` command."""
    users = ok((yield command(client, "users")))["users"]
    return {u["user"]: (u["ip"], u.get("node")) for u in users}


@defer.inlineCallbacks
def sees_looking(client, seen, expected):
    """Wait until `client`, which got the member list `seen`, knows that `expected` look at
    the channel too (someone who arrived on another node just before may come as an event)."""
    names = {m["user"] for m in seen["members"]}
    for name in expected - names:
        yield client.event("member", user=name, status="online")


def command(client, line):
    return client.request({"command": line})


@pytest.mark.timeout(90)
@defer.inlineCallbacks
def test_accounts_logins_presence_and_channels_are_shared(tmp_path):
    with cluster(tmp_path) as nodes:
        a, b, c = (nodes.start(n, "--admin", "alice") for n in "abc")
        alice = yield client_on(a, "alice", register=True)
        bob = yield client_on(b, "bob", register=True, source="127.0.0.2")
        # The directory and the roles are the same everywhere, at once.
        carol = yield client_on(c, "carol", register=True)
        yield until_online(carol, "alice")
        yield until_online(carol, "bob")
        users = ok((yield carol.request({"list_users": ""})))["users"]
        assert {u["user"]: u["status"] for u in users} == {
            "alice": "online", "bob": "online", "carol": "online"}
        yield eventually(lambda: online_users(alice).addCallback(
            lambda users: users.get("bob") == ("127.0.0.2", "b")))

        # Newest login wins cluster-wide; the IP dictionary shows the newest address.
        bob2 = yield client_on(c, "bob", source="127.0.0.3")
        closed = yield bob.event("disconnect")
        assert closed["kind"] == "replaced"
        yield eventually(lambda: online_users(alice).addCallback(
            lambda users: users.get("bob") == ("127.0.0.3", "c")))

        # Who looks at a channel is known on every node.
        yield look(alice)
        seen = yield look(carol)
        assert {m["user"] for m in seen["members"]} <= {"alice", "carol"}
        yield sees_looking(carol, seen, {"alice"})
        yield alice.event("member", user="carol", status="online")
        seen = yield look(bob2)
        assert {m["user"] for m in seen["members"]} <= {"alice", "bob", "carol"}
        yield sees_looking(bob2, seen, {"alice", "carol"})

        # Channels created on one node exist on the others; join requests and decisions
        # cross nodes; the membership is the same everywhere.
        ok((yield command(alice, "create secret private")))
        yield eventually(lambda: bob2.request({"list_channels": ""}).addCallback(
            lambda reply: "secret" in {ch["name"] for ch in reply["channels"]}))
        assert ok((yield bob2.request({"join": "secret"})))["status"] == "pending"
        notice = yield alice.event("join_request", channel="secret")
        assert notice["user"] == "bob"
        listed = ok((yield bob2.request({"list_channels": ""})))["channels"]
        assert {ch["name"]: ch["request"] for ch in listed}["secret"] == "pending"
        ok((yield command(alice, "accept bob secret")))
        yield bob2.event("request_decided", channel="secret", status="accepted")
        ok((yield bob2.request({"channel_message": "hello secret", "channel": "secret"})))
        ok((yield command(alice, "delete secret")))
        yield bob2.event("channel_deleted", channel="secret")
        listed = ok((yield carol.request({"list_channels": ""})))["channels"]
        assert "secret" not in {ch["name"] for ch in listed}


@pytest.mark.timeout(90)
@defer.inlineCallbacks
def test_kicks_and_bans_take_effect_on_every_node(tmp_path):
    with cluster(tmp_path) as nodes:
        a, b = nodes.start("a", "--admin", "alice"), nodes.start("b", "--admin", "alice")
        alice = yield client_on(a, "alice", register=True)
        bob = yield client_on(b, "bob", register=True)
        yield until_online(alice, "bob")
        kicked = ok((yield command(alice, "kick bob spam")))
        assert kicked["kicked"] == ["bob"]
        assert (yield bob.event("disconnect"))["kind"] == "kicked"

        bob = yield client_on(b, "bob")
        ok((yield command(alice, "ban bob 1h spam")))
        assert (yield bob.event("disconnect"))["kind"] == "banned"
        for node in (a, b):     # refused everywhere
            again = yield connect(node)
            refused = yield again.request({"user:pwd": f"bob:{PASSWORD}"})
            assert "banned" in refused["error"]
        ok((yield command(alice, "unban bob")))
        again = yield connect(b)
        yield eventually(lambda: again.request({"user:pwd": f"bob:{PASSWORD}"}).addCallback(
            lambda reply: reply.get("ok") is True))

        # An IP ban refuses connections on every node.
        mallory = yield client_on(b, "mallory", register=True, source="127.0.0.5")
        ok((yield command(alice, "ban 127.0.0.5")))
        assert (yield mallory.event("disconnect"))["kind"] == "banned"
        for node in (a, b):
            refused = yield client_on(node, None, source="127.0.0.5")
            assert (yield refused.event("disconnect"))["kind"] == "banned"


@pytest.mark.timeout(90)
@defer.inlineCallbacks
def test_unread_admin_notices_ip_kicks_listing_and_the_manhole_cross_nodes(tmp_path):
    from test_manhole import start_ssh, write_key_pair
    from test_twistd import free_port
    key_path, public_line = write_key_pair(tmp_path, "admin_key")
    (tmp_path / "authorized_keys").write_bytes(public_line)
    manhole = free_port()
    with cluster(tmp_path) as nodes:
        admins = ("--admin", "alice", "--admin", "dave")
        a = nodes.start("a", *admins, "--manhole", f"tcp:{manhole}:interface=127.0.0.1",
                        "--manhole-keys", str(tmp_path / "authorized_keys"))
        b = nodes.start("b", *admins)
        alice = yield client_on(a, "alice", register=True)
        carol = yield client_on(a, "carol", register=True)
        dave = yield client_on(b, "dave", register=True)
        bob = yield client_on(b, "bob", register=True, source="127.0.0.2")
        keep_alive(bob, channel="random")
        ok((yield command(alice, "create random")))
        yield eventually(lambda: bob.request({"join": "random"}).addCallback(
            lambda reply: reply.get("ok") is True))
        yield look(bob, "random")
        ok((yield bob.request({"join": "general"})))
        yield look(carol)
        yield until_online(carol, "bob")

        # Unread and mention counts for a member looking elsewhere, on another node.
        ok((yield carol.request({"channel_message": "hi all", "channel": "general"})))
        ok((yield carol.request({"channel_message": "and @bob", "channel": "general"})))
        assert (yield bob.event("unread", channel="general", count=1)).get("mention") is None
        assert (yield bob.event("unread", channel="general", count=2))["mention"] is True

        # Admin notices reach the admins on every node.
        ok((yield command(alice, "create secret private")))
        yield eventually(lambda: carol.request({"list_channels": ""}).addCallback(
            lambda reply: "secret" in {ch["name"] for ch in reply["channels"]}))
        ok((yield carol.request({"join": "secret"})))
        for admin in (alice, dave):
            assert (yield admin.event("join_request", channel="secret"))["user"] == "carol"

        # `users` lists the users of every node, with their node, address and channel.
        yield eventually(lambda: command(alice, "users").addCallback(
            lambda reply: {u["user"]: (u["ip"], u.get("node"), u["viewing"])
                           for u in reply["users"]}.get("bob") == ("127.0.0.2", "b", "#random")))
        # A kick by address counts the connections of every node.
        kicked = ok((yield command(alice, "kick 127.0.0.2 go")))
        assert kicked["kicked"] == ["bob"] and "1 connection(s)" in kicked["result"], kicked
        assert (yield bob.event("disconnect"))["kind"] == "kicked"

        # The manhole of node a kicks a user of node b there.
        bob = yield client_on(b, "bob", source="127.0.0.2")
        yield until_online(alice, "bob")
        session = start_ssh(manhole, key_path)
        yield session.printed(b">>> ")
        session.transport.write(b"kick('bob', 'from the manhole')\r")
        notice = yield bob.event("disconnect")
        assert notice["kind"] == "kicked" and "from the manhole" in notice["reason"]
        yield session.printed(b"Kicked bob")
        session.transport.write(b"\x04")
        yield session.hung_up


@defer.inlineCallbacks
def members_of(client, channel="general"):
    """The member list `client`'s node shows now: look at nothing, then at `channel`."""
    client.send({"presence": "online"})
    client.send({"presence": "online", "channel": channel})
    members = yield client.event("members", channel=channel)
    return sorted((m["user"], m["status"]) for m in members["members"])


@pytest.mark.timeout(90)
@defer.inlineCallbacks
def test_member_lists_when_a_login_on_another_node_replaces_a_session(tmp_path):
    """bob looks at #general on a, logs in again on b (a's session closes): the member
    lists of both nodes show where the new session looks, never the old one's leaving
    after it (it used to come last and take bob off the list)."""
    with cluster(tmp_path) as nodes:
        a, b = nodes.start("a", "--admin", "carol"), nodes.start("b", "--admin", "carol")
        carol = yield client_on(a, "carol", register=True)
        ok((yield command(carol, "create random")))
        dave = yield client_on(b, "dave", register=True)
        for viewer in (carol, dave):
            yield look(viewer)
            keep_alive(viewer, channel="general")
        bob = yield client_on(a, "bob", register=True)
        yield look(bob)

        @defer.inlineCallbacks
        def lists_are(expected):
            for viewer in (carol, dave):
                yield eventually(lambda: members_of(viewer).addCallback(
                    lambda members: members == expected))
        with_bob = [("bob", "online"), ("carol", "online"), ("dave", "online")]
        yield lists_are(with_bob)
        for node, place in ((b, "general"), (a, "general"), (b, "random"), (a, "general")):
            old = bob
            bob = yield client_on(node, "bob")
            assert (yield old.event("disconnect"))["kind"] == "replaced"
            ok((yield bob.request({"join": place})))
            bob.send({"presence": "online", "channel": place})
            yield bob.event("members", channel=place)
            keep_alive(bob, channel=place)
            yield task_sleep(1.5)   # what crosses the bus late would have come by now
            yield lists_are(with_bob if place == "general" else with_bob[1:])


def task_sleep(seconds):
    from twisted.internet import reactor, task
    return task.deferLater(reactor, seconds, lambda: None)


@pytest.mark.timeout(60)
@defer.inlineCallbacks
def test_a_killed_node_takes_its_users_offline_everywhere(tmp_path):
    import time
    with cluster(tmp_path) as nodes:
        a, b = nodes.start("a"), nodes.start("b")
        alice = yield client_on(a, "alice", register=True)
        bob = yield client_on(b, "bob", register=True)
        yield look(alice)
        yield look(bob)
        yield alice.event("member", user="bob", status="online")
        keep_alive(alice, channel="general")
        carol = yield client_on(a, "carol", register=True)
        ok((yield carol.request({"get_private": "bob"})))
        keep_alive(carol, other_user="bob")
        yield carol.event("peer", other_user="bob", status="online")
        killed = time.monotonic()
        nodes.kill("b")
        yield alice.event("member", user="bob", status="offline")
        yield carol.event("peer", other_user="bob", status="offline")
        took = time.monotonic() - killed
        assert took < 3 + 2, took      # the presence timeout, plus a heartbeat check
        users = ok((yield alice.request({"list_users": ""})))["users"]
        assert {u["user"]: u["status"] for u in users}["bob"] == "offline"
        # Its users come back through another node.
        bob = yield client_on(a, "bob")
        yield carol.event("peer", other_user="bob", status="online")


@pytest.mark.timeout(90)
@defer.inlineCallbacks
def test_a_killed_nodes_user_logging_in_elsewhere_makes_it_lost_on_every_node(tmp_path):
    """Three nodes with a presence timeout of 10 minutes, so heartbeats cannot decide
    within the test: b is killed, dave (of b) logs in again on c, and a, which only
    sees that login on the stream, takes b as lost too (it asks NATS, and nobody is
    there under b's name any more): erin, left on b, goes offline for alice on a."""
    with cluster(tmp_path) as nodes:
        slow = ("--presence-timeout", "600")
        a, b, c = nodes.start("a", *slow), nodes.start("b", *slow), nodes.start("c", *slow)
        alice = yield client_on(a, "alice", register=True)
        yield look(alice)
        for name in ("dave", "erin"):
            client = yield client_on(b, name, register=True)
            yield look(client)
            yield alice.event("member", user=name, status="online")
        nodes.kill("b")
        yield client_on(c, "dave")
        yield alice.event("member", user="erin", status="offline")
        users = ok((yield alice.request({"list_users": ""})))["users"]
        assert {u["user"]: u["status"] for u in users}["erin"] == "offline"


# -- failures ------------------------------------------------------------------------

def relayed_in(client, channel="general"):
    return [m for m in client.take(lambda m: m.get("channel") == channel
                                   and "channel_message" in m and "reply_to" not in m)]


@defer.inlineCallbacks
def history(client, channel="general"):
    """Every id in the channel's history, read page by page."""
    ids, before = [], None
    while True:
        page = ok((yield client.request({"get_channel": channel, "limit": 200,
                                         **({"before": before} if before else {})})))
        ids.extend(m["id"] for m in page["messages"])
        if not page["has_more"]:
            return ids
        before = min(m["id"] for m in page["messages"])


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sender_comes_back", [False, True],
                         ids=["after-the-presence-timeout", "when-the-sender-logs-in-again"])
@defer.inlineCallbacks
def test_a_node_killed_mid_stream_loses_nothing_it_acknowledged(tmp_path, sender_comes_back):
    """Without its sender back, the other node relays the killed node's messages once it
    takes it as lost (3 s of silence); with the sender logging in again on the other
    node, at once: there the presence timeout is 10 minutes, so only the probe of the
    killed node (nobody on its NATS subject any more) can make it lost in this test,
    which carol, left on the killed node, going offline shows."""
    from twisted.internet import reactor, task
    timeout = ("--presence-timeout", "600") if sender_comes_back else ()
    with cluster(tmp_path) as nodes:
        a, b = nodes.start("a", *timeout), nodes.start("b", *timeout)
        alice, bob = yield alice_on_a_bob_on_b(a, b)
        if sender_comes_back:
            carol = yield client_on(b, "carol", register=True)
            yield look(carol)
            yield alice.event("member", user="carol", status="online")
        acked = []
        stop = []

        @defer.inlineCallbacks
        def sender(lane):
            i = 0
            while not stop:
                reply = yield bob.request({"channel_message": f"{lane} {i}",
                                           "channel": "general", "nonce": f"{lane}-{i}"})
                if reply.get("ok"):
                    acked.append(reply["id"])
                i += 1
        lanes = [sender(lane).addErrback(lambda f: None) for lane in range(4)]
        while len(acked) < 200:
            yield task.deferLater(reactor, 0.02, lambda: None)
        nodes.kill("b")
        stop.append(True)
        yield defer.DeferredList(lanes)
        if sender_comes_back:
            yield client_on(a, "bob")
            yield alice.event("member", user="carol", status="offline")
        stored = set((yield history(alice)))
        # What b stored but had not put on the stream, a relays from SQL once it takes b
        # as lost: every acknowledged message reaches alice once.
        relayed = []
        deadline = reactor.seconds() + 10
        while reactor.seconds() < deadline and not set(acked) <= set(relayed):
            yield task.deferLater(reactor, 0.2, lambda: None)
            relayed += [m["id"] for m in relayed_in(alice)]
        yield alice.barrier()
        relayed += [m["id"] for m in relayed_in(alice)]
        lost = [i for i in acked if i not in stored]
        print(f"node killed: acked {len(acked)}, stored {len(stored)}, relayed to the "
              f"other node {len(relayed)}, not relayed {len(set(acked) - set(relayed))},"
              f" lost {len(lost)}")
        assert not lost and len(acked) == len(set(acked))
        assert set(acked) <= set(relayed) <= stored
        assert relayed == sorted(set(relayed))     # once each, in order


@pytest.mark.timeout(120)
@defer.inlineCallbacks
def test_nats_restarted_mid_stream_drops_nothing(tmp_path):
    """A NATS server of the test's own, stopped and started again on the same store while
    a node sends: what it acknowledged meanwhile is relayed afterwards, once."""
    from twisted.internet import reactor, task
    with private_cluster(tmp_path, "restart") as (nodes, nats):
        a, b = nodes.start("a"), nodes.start("b")
        alice, bob = yield alice_on_a_bob_on_b(a, b)
        keep_alive(bob, channel="general")
        acked = []

        @defer.inlineCallbacks
        def send(count, label):
            for i in range(count):
                reply = yield bob.request({"channel_message": f"{label} {i}",
                                           "channel": "general"})
                if reply.get("ok"):
                    acked.append(reply["id"])
        yield send(20, "before")
        nats.stop()
        yield send(20, "during")
        # Cut off from the bus, a node serves its clients but takes no logins.
        late = yield connect(b)
        refused = yield late.request({"user:pwd": f"carol:{PASSWORD}"})
        assert "catching up" in refused["error"]
        nats.start()
        yield send(20, "after")
        yield eventually(lambda: late.request({"user:pwd": f"bob:{PASSWORD}"})
                         .addCallback(lambda reply: reply.get("ok") is True), 20)
        deadline = reactor.seconds() + 20
        seen = []
        while reactor.seconds() < deadline and len(set(seen)) < len(acked):
            yield task.deferLater(reactor, 0.2, lambda: None)
            seen += [m["id"] for m in relayed_in(alice)]
        print(f"NATS restarted: acked {len(acked)}, relayed to the other node "
              f"{len(set(seen))}, twice {len(seen) - len(set(seen))}")
        assert sorted(seen) == sorted(set(acked))


@pytest.mark.timeout(120)
@defer.inlineCallbacks
def test_a_node_killed_during_a_nats_cut_loses_no_acknowledged_message(tmp_path):
    """NATS cut, node a acknowledges messages (they wait in its memory for the bus), a is
    killed with SIGKILL, NATS comes back: node b takes a as lost and relays from SQL what
    a stored but never put on the stream, so b's viewers get every acknowledged message
    exactly once, in order."""
    from twisted.internet import reactor, task
    with private_cluster(tmp_path, "cut") as (nodes, nats):
        a, b = nodes.start("a", "--admin", "alice"), nodes.start("b", "--admin", "alice")
        alice = yield client_on(a, "alice", register=True)
        bob = yield client_on(b, "bob", register=True)
        mallory = yield client_on(b, "mallory", register=True)
        keep_alive(mallory)
        yield look(alice)
        yield look(bob)
        keep_alive(bob, channel="general")
        acked, private = [], []

        @defer.inlineCallbacks
        def send(count, label):
            for i in range(count):
                reply = ok((yield alice.request({"channel_message": f"{label} {i}",
                                                 "channel": "general"})))
                acked.append(reply["id"])
            reply = ok((yield alice.request({"private_message": f"{label} to bob",
                                             "other_user": "bob"})))
            private.append(reply["id"])
        yield send(20, "before")
        nats.stop()
        yield send(30, "during")
        # State changes a acknowledged during the cut: in SQL, never on the stream.
        ok((yield command(alice, "ban mallory 1h")))
        ok((yield command(alice, "create news")))
        nodes.kill("a")
        nats.start()
        back = reactor.seconds()
        received, privately = [], []
        deadline = reactor.seconds() + 20
        while reactor.seconds() < deadline and (len(set(received)) < len(acked)
                                                or len(set(privately)) < len(private)):
            yield task.deferLater(reactor, 0.2, lambda: None)
            received += [m["id"] for m in relayed_in(bob)]
            privately += [m["id"] for m in bob.take(lambda m: "private_message" in m)]
        took = reactor.seconds() - back
        yield task.deferLater(reactor, 1, lambda: None)     # anything twice comes now
        received += [m["id"] for m in relayed_in(bob)]
        privately += [m["id"] for m in bob.take(lambda m: "private_message" in m)]
        lost = [i for i in acked + private if i not in received + privately]
        print(f"node killed during a NATS cut: acked {len(acked) + len(private)}, received"
              f" on the other node {len(received) + len(privately)}, lost {len(lost)},"
              f" the last {took:.1f} s after NATS was back")
        assert received == acked and privately == private   # each once, in order
        # b read them from SQL too: the ban closed mallory's session there and refuses her.
        assert (yield mallory.event("disconnect"))["kind"] == "banned"
        again = yield connect(b)
        assert "banned" in (yield again.request({"user:pwd": f"mallory:{PASSWORD}"}))["error"]
        listed = ok((yield bob.request({"list_channels": ""})))["channels"]
        assert "news" in {ch["name"] for ch in listed}


@pytest.mark.timeout(120)
@defer.inlineCallbacks
def test_a_cut_off_node_refuses_removals_so_a_kill_loses_none(tmp_path):
    """A removal or change made on a node that knows it is cut off from NATS would reach
    the others late (from its queue after their own changes, or from SQL once they take
    it as lost), so the node refuses it with a clear error while additions are taken:
    NATS cut, alice on node a tries to lift a ban, delete a channel, remove a member,
    take a role and leave a channel; a is killed with SIGKILL, NATS comes back, and
    node b and a restarted a agree with SQL: nothing changed but the ban alice added
    during the cut."""
    with private_cluster(tmp_path, "refuse") as (nodes, nats):
        admins = ("--admin", "alice")
        a, b = nodes.start("a", *admins), nodes.start("b", *admins)
        alice = yield client_on(a, "alice", register=True)
        for name in ("mallory", "eve", "dave"):
            yield client_on(b, name, register=True)
        carol = yield client_on(b, "carol", register=True)
        yield look(alice)
        yield look(carol)
        for line in ("ban mallory 1h", "create old", "admin dave"):
            ok((yield command(alice, line)))
        nats.stop()
        # a knows it is cut off once it refuses logins.
        yield eventually(lambda: connect(a).addCallback(
            lambda c: c.request({"user:pwd": f"eve:{PASSWORD}"})).addCallback(
            lambda reply: "catching up" in reply.get("error", "")))
        refused = []
        for line in ("unban mallory", "delete old", "remove carol general", "unadmin dave"):
            refused.append((yield command(alice, line)))
        refused.append((yield alice.request({"leave": "general"})))
        assert all("cut off from the others" in r.get("error", "") for r in refused), refused
        ok((yield command(alice, "ban eve 1h")))    # an addition is taken: SQL tells it
        nodes.kill("a")
        nats.start()

        @defer.inlineCallbacks
        def state_on(node):
            """What `node` holds: who may log in, the channels, memberships, roles."""
            logins = {}
            for name in ("mallory", "eve", "dave"):
                client = yield connect(node)
                reply = yield client.request({"user:pwd": f"{name}:{PASSWORD}"})
                logins[name] = "banned" if "banned" in reply.get("error", "") else reply.get(
                    "ok", reply.get("error"))
                if name == "dave" and reply.get("ok"):
                    logins["dave admin"] = "error" not in (yield command(client, "bans"))
            watcher = yield client_on(node, "carol")
            listed = ok((yield watcher.request({"list_channels": ""})))["channels"]
            channels = {ch["name"]: ch["member"] for ch in listed}
            return logins, channels

        expected = ({"mallory": "banned", "eve": "banned", "dave": True, "dave admin": True},
                    {"general": True, "old": False})
        # b takes a as lost (the presence timeout) and reads what it added from SQL.
        def holds(node, state):     # b takes logins once it caught up after the cut
            return state_on(node).addCallbacks(lambda s: s == state, lambda f: False)
        yield eventually(lambda: holds(b, expected), 20)
        again = nodes.start("a", *admins)       # a loads from SQL: the same state
        assert (yield state_on(again)) == expected
        # Connected again, the same removals are taken and reach the other node.
        alice = yield client_on(again, "alice")
        for line in ("unban mallory", "delete old", "remove carol general", "unadmin dave"):
            ok((yield command(alice, line)))
        changed = ({"mallory": True, "eve": "banned", "dave": True, "dave admin": False},
                   {"general": False})
        yield eventually(lambda: holds(b, changed), 10)


def reloading_node(server):
    """Node b's Cluster over the in-process `server` (its store, hub and moderation), not
    connected to NATS: what b tells its clients reaches the server's."""
    from dataclasses import replace
    from types import SimpleNamespace
    from chatd.cluster import Cluster
    node = SimpleNamespace(
        config=replace(server.config, bus="nats://127.0.0.1:4222/unit", node_name="b"),
        reactor=server.reactor, store=server.store, accounts=server.accounts, hub=server.hub,
        moderation=server.moderation)
    b = Cluster(node)
    b.bus.local = server.hub.bus
    return b


@pytest.mark.timeout(60)
@defer.inlineCallbacks
def test_a_reload_applies_what_sql_lost_but_leaves_what_an_event_set_during_its_reads(tmp_path):
    """Node b's reload_state with the real store, in this process: a lost node lifted a
    ban, deleted a channel, removed a member and took a role in SQL without telling;
    b applies all of it and tells its clients as the bus would. Between the reads,
    node c commits and tells changes the snapshot cannot have (a role, a ban, a
    channel deleted, a member added, each after the read of its table), and so does
    b itself (a member gone): they stand."""
    from chatd.bus import STATE
    from chatd.store import db_time, utcnow
    from support import login, look_at, start_server, stop_server
    with mysql_database() as url:
        server = start_server(url, admins=["alice"])
        try:
            alice = yield login(server, "alice")
            for name in ("mallory", "eve", "dave"):
                yield login(server, name)
            carol = yield login(server, "carol")
            dave = yield login(server, "dave", register_first=False)
            for line in ("ban mallory 1h", "create old", "create fresh", "admin dave"):
                ok((yield command(alice, line)))
            yield look_at(carol, "general")
            yield look_at(carol, "old")
            eve = yield login(server, "eve", register_first=False)
            yield look_at(eve, "general")
            hub, store, bans = server.hub, server.store, server.moderation.ban_list
            b = reloading_node(server)
            # What the lost node committed and never told.
            mallory_ban = bans.name_ban("mallory").id
            yield store.lift_ban(mallory_ban, "alice", utcnow())
            yield store.delete_channel(hub.channels["old"].id)
            yield store.remove_member(hub.channels["general"].id, "carol", removed_by="alice")
            yield store.set_role("dave", "user")

            # What node c commits, then tells, while b reads (each after its table's read).
            @defer.inlineCallbacks
            def c_makes_eve_admin():
                yield store.set_role("eve", "admin")
                b.observe("c", STATE, "control", {"a": "account",
                                                  "d": {"name": "eve", "role": "admin"}})

            @defer.inlineCallbacks
            def c_bans_eve():
                now = utcnow()
                ban_id = yield store.add_ban("name", "eve", None, "", "alice", now, None)
                b.observe("c", STATE, "control", {"a": "ban", "d": {"row": [
                    ban_id, "name", "eve", None, "", "alice", db_time(now), None]}})

            @defer.inlineCallbacks
            def c_deletes_fresh():
                yield store.delete_channel(hub.channels["fresh"].id)
                b.observe("c", STATE, "control", {"a": "channel_deleted",
                                                  "d": {"name": "fresh"}})

            @defer.inlineCallbacks
            def c_adds_dave_b_drops_eve():
                general = hub.channels["general"]
                yield store.add_member(general.id, "dave")
                b.observe("c", ("user", "dave"), "control", {"a": "joined",
                                                            "d": {"channel": "general"}})
                # b's own change, as its hub makes it: commit, memory, then the bus.
                yield store.remove_member(general.id, "eve")
                general.members.discard("eve")
                b.bus.control(("user", "eve"), "left", {"channel": "general"})
            for read, event in (("all_users", c_makes_eve_admin), ("active_bans", c_bans_eve),
                                ("all_channels", c_deletes_fresh),
                                ("all_memberships", c_adds_dave_b_drops_eve)):
                def then(*args, _real=getattr(store, read), _event=event):
                    return _real(*args).addCallback(
                        lambda rows: _event().addCallback(lambda _: rows))
                setattr(store, read, then)
            try:
                yield b.reload_state()
            finally:
                for read in ("all_users", "active_bans", "all_channels", "all_memberships"):
                    delattr(store, read)
            # The lost node's removals and changes are applied...
            assert mallory_ban not in bans.active
            assert "old" not in hub.channels
            assert "carol" not in hub.channels["general"].members
            assert server.accounts.role_of("dave") == "user"
            # ...and told to the clients as the bus tells them.
            removed = yield carol.event("removed_from_channel", channel="general")
            deleted = yield carol.event("channel_deleted", channel="old")
            assert removed["by"] == "alice" and deleted["by"] is None
            assert "error" in (yield command(dave, "bans"))
            yield login(server, "mallory", register_first=False)
            # What c told during the reads is fresher than the snapshot: it stands.
            assert server.accounts.role_of("eve") == "admin"
            assert bans.name_ban("eve") is not None
            assert "fresh" not in hub.channels
            assert "dave" in hub.channels["general"].members
            assert "eve" not in hub.channels["general"].members
        finally:
            stop_server(server)


@pytest.mark.timeout(60)
@defer.inlineCallbacks
def test_a_reload_leaves_alone_what_this_node_decided_and_is_writing(tmp_path):
    """Deleting a channel and deciding a join request change memory at once (so a second
    admin meanwhile is refused), then write to SQL. A reload from SQL on the same node (b
    takes another node as lost) whose reads come during those writes reads the channel and
    the pending request as they were: it leaves them as b decided."""
    from support import login, start_server, stop_server, until
    with mysql_database() as url:
        server = start_server(url, admins=["alice", "dave"])
        try:
            alice = yield login(server, "alice")
            dave = yield login(server, "dave")
            carol = yield login(server, "carol")
            for line in ("create old", "create secret private"):
                ok((yield command(alice, line)))
            assert ok((yield carol.request({"join": "secret"})))["status"] == "pending"
            hub, store = server.hub, server.store
            b = reloading_node(server)
            writing, released = [], []

            def held(real):
                @defer.inlineCallbacks
                def write(*args):
                    writing.append(real)
                    yield until(lambda: released)
                    return (yield real(*args))
                return write
            for name in ("delete_channel", "decide_join_request"):
                setattr(store, name, held(getattr(store, name)))
            try:
                deleting = command(alice, "delete old")
                deciding = command(dave, "accept carol secret")
                yield until(lambda: len(writing) == 2)
                yield b.reload_state()
                released.append(True)
                ok((yield deleting))
                ok((yield deciding))
            finally:
                for name in ("delete_channel", "decide_join_request"):
                    delattr(store, name)
            assert "old" not in hub.channels
            request = server.moderation.join_requests.latest["carol"]["secret"]
            assert request.status == "accepted" and request.decided_by == "dave"
            assert "carol" in hub.channels["secret"].members
            # What memory holds is what SQL holds.
            assert "old" not in {name for _, name, _ in (yield store.all_channels())}
            assert "accepted" in {row[3] for row in (yield store.latest_join_requests())}
        finally:
            stop_server(server)


@pytest.mark.timeout(120)
@defer.inlineCallbacks
def test_a_node_killed_before_its_removals_left_it_loses_none(tmp_path):
    """Node a reaches NATS through a proxy that silently drops what a sends, so a does
    not know it is cut off (nats-py finds out when two pings 5 s apart go unanswered)
    and takes an unban, a channel deletion, a member removed, a role taken and a leave:
    committed, answered ok, their events never out. a is killed with SIGKILL; node b
    takes it as lost after the presence timeout, reads them from SQL and tells its
    clients as the bus would: b then holds SQL's state."""
    from twisted.internet import reactor
    with cluster_with_a_behind_a_proxy(tmp_path, "blackhole") as (nodes, proxy):
        admins = ("--admin", "alice")
        a, b = yield start_a_and_b(nodes, *admins)
        alice = yield client_on(a, "alice", register=True)
        yield client_on(b, "mallory", register=True)
        dave = yield client_on(b, "dave", register=True)
        carol = yield client_on(b, "carol", register=True)
        eve = yield client_on(b, "eve", register=True)
        for client in (alice, carol, eve):
            yield look(client)
        for line in ("ban mallory 1h", "create old", "admin dave"):
            ok((yield command(alice, line)))
        yield eventually(lambda: carol.request({"join": "old"}).addCallback(
            lambda reply: reply.get("ok") is True))

        @defer.inlineCallbacks
        def may_log_in(name):
            client = yield connect(b)
            reply = yield client.request({"user:pwd": f"{name}:{PASSWORD}"})
            client.transport.loseConnection()
            return reply.get("ok") is True

        @defer.inlineCallbacks
        def carol_is_in():
            listed = ok((yield carol.request({"list_channels": ""})))["channels"]
            return {ch["name"] for ch in listed if ch["member"]}

        @defer.inlineCallbacks
        def dave_is_admin():
            return "error" not in (yield command(dave, "bans"))
        # b knows all of it from the bus.
        yield eventually(lambda: dave_is_admin())
        yield eventually(lambda: may_log_in("mallory").addCallback(lambda yes: not yes))
        assert (yield carol_is_in()) == {"general", "old"}

        proxy.blackhole()
        blackholed = reactor.seconds()
        for line in ("unban mallory", "delete old", "remove carol general", "unadmin dave"):
            ok((yield command(alice, line)))
        ok((yield alice.request({"leave": "general"})))
        answered = reactor.seconds() - blackholed
        nodes.kill("a")
        killed = reactor.seconds()
        # alice is back on b before b reads SQL, where b still has her in general.
        alice = yield client_on(b, "alice")
        # carol is told on b as by the bus: out of both channels, and why.
        removed = yield carol.event("removed_from_channel", channel="general")
        yield carol.event("channel_deleted", channel="old")
        told = reactor.seconds() - killed
        assert removed["by"] == "alice"
        # alice's leave reaches her session here as a leave does: no removal.
        yield alice.barrier()
        assert not alice.take(lambda m: m.get("event") == "removed_from_channel"), \
            alice.inbox
        assert (yield carol_is_in()) == set()
        assert not (yield dave_is_admin())
        assert (yield may_log_in("mallory"))
        listed = ok((yield eve.request({"list_channels": ""})))["channels"]
        assert {ch["name"] for ch in listed} == {"general"}
        listed = ok((yield alice.request({"list_channels": ""})))["channels"]
        assert {ch["name"]: ch["member"] for ch in listed} == {"general": False}
        ok((yield eve.request({"channel_message": "after", "channel": "general"})))
        yield eve.wait_for(lambda m: m.get("channel_message") == "after"
                           and "reply_to" not in m)
        for client in (carol, alice):   # neither hears general any more: not even unread
            yield client.barrier()
            assert not client.take(lambda m: m.get("channel") == "general" and (
                "channel_message" in m or m.get("event") == "unread")), client.inbox
        print(f"removals from a node killed unknowingly cut off: all answered"
              f" {answered:.2f} s after the blackhole; b told carol {told:.1f} s after"
              f" the kill (presence timeout 3 s)")
        assert told < 3 + 3


@pytest.mark.timeout(120)
@defer.inlineCallbacks
def test_a_node_back_from_a_cut_it_did_not_notice_does_not_undo_newer_changes(tmp_path):
    """Node a reaches NATS through a proxy that drops what a sends, so a does not know it is
    cut off: it deletes a channel, removes a member, takes a role and bans a user (committed,
    answered, their events queued). Node b takes a as lost and applies them from SQL; then
    an admin on b makes the channel again, gives the role back and lifts the ban, and the
    member joins again. The proxy lets a through again: a's queued events reach the stream
    after b's changes, and b reads SQL for them rather than undo its own; a's users are
    shown online on b again."""
    from twisted.internet import reactor
    with cluster_with_a_behind_a_proxy(tmp_path, "late") as (nodes, proxy):
        admins = ("--admin", "alice", "--admin", "dave")
        a, b = yield start_a_and_b(nodes, *admins)
        alice = yield client_on(a, "alice", register=True)
        keep_alive(alice, channel="general")
        dave = yield client_on(b, "dave", register=True)
        carol = yield client_on(b, "carol", register=True)
        eve = yield client_on(b, "eve", register=True)
        yield client_on(b, "mallory", register=True)
        for client in (alice, carol, dave):
            yield look(client)
        for client in (carol, dave):
            keep_alive(client, channel="general")
        ok((yield command(alice, "create old")))
        ok((yield command(alice, "admin eve")))
        yield eventually(lambda: carol.request({"join": "old"}).addCallback(
            lambda reply: reply.get("ok") is True))

        @defer.inlineCallbacks
        def state_on_b():
            """carol's channels, whether eve is an admin, whether mallory may log in."""
            listed = ok((yield carol.request({"list_channels": ""})))["channels"]
            client = yield connect(b)
            reply = yield client.request({"user:pwd": f"mallory:{PASSWORD}"})
            client.transport.loseConnection()
            return ({ch["name"]: ch["member"] for ch in listed},
                    "error" not in (yield command(eve, "bans")), reply.get("ok") is True)
        before = ({"general": True, "old": True}, True, True)
        yield eventually(lambda: state_on_b().addCallback(lambda s: s == before))

        proxy.blackhole()
        for line in ("delete old", "remove carol general", "unadmin eve", "ban mallory 1h"):
            ok((yield command(alice, line)))
        # b takes a as lost after the presence timeout and reads all of it from SQL.
        yield carol.event("removed_from_channel", channel="general")
        yield carol.event("channel_deleted", channel="old")
        lost = ({"general": False}, False, False)
        yield eventually(lambda: state_on_b().addCallback(lambda s: s == lost))
        # Newer changes, on b.
        for line in ("create old", "admin eve", "unban mallory"):
            ok((yield command(dave, line)))
        for channel in ("general", "old"):
            ok((yield carol.request({"join": channel})))
        proxy.end_blackhole()
        back = reactor.seconds()
        # a's queued events reach the stream, then this message, sent after them.
        ok((yield alice.request({"channel_message": "after the cut", "channel": "general"})))
        yield dave.wait_for(lambda m: m.get("channel_message") == "after the cut"
                            and "reply_to" not in m, timeout=20)
        arrived = reactor.seconds() - back
        yield eventually(lambda: state_on_b().addCallback(lambda s: s == before))
        listed = ok((yield dave.request({"list_channels": ""})))["channels"]
        assert {ch["name"] for ch in listed} == {"general", "old"}
        # carol still hears general, and alice is online there again.
        ok((yield dave.request({"channel_message": "still here", "channel": "general"})))
        yield carol.wait_for(lambda m: m.get("channel_message") == "still here")
        yield until_online(dave, "alice", timeout=10)
        print(f"a's queued events reached b {arrived:.1f} s after the cut ended")


@pytest.mark.timeout(120)
@defer.inlineCallbacks
def test_late_closes_of_a_node_back_from_a_cut_it_did_not_notice_spare_newer_sessions(tmp_path):
    """Node a reaches NATS through a proxy that drops what a sends, so a does not know it
    is cut off: alice kicks bob, bans mallory and lifts the ban, and carol logs in on a
    (the `close` controls of all three queued). Node b takes a as lost; bob and carol log
    in again on b. The proxy lets a through again: a's late closes reach b, and close
    none of bob's and carol's newer sessions, nor mallory's, whom no ban covers now."""
    with cluster_with_a_behind_a_proxy(tmp_path, "closes") as (nodes, proxy):
        admins = ("--admin", "alice", "--admin", "dave")
        a, b = yield start_a_and_b(nodes, *admins)
        alice = yield client_on(a, "alice", register=True)
        dave = yield client_on(b, "dave", register=True)
        for client in (alice, dave):
            yield look(client)
            keep_alive(client, channel="general")
        bob = yield client_on(b, "bob", register=True)
        mallory = yield client_on(b, "mallory", register=True)
        carol = yield client_on(b, "carol", register=True)
        carol.transport.loseConnection()
        for name in ("bob", "mallory"):
            yield until_online(alice, name)

        proxy.blackhole()
        ok((yield command(alice, "kick bob late")))
        ok((yield command(alice, "ban mallory 1h")))
        ok((yield command(alice, "unban mallory")))
        carol_on_a = yield client_on(a, "carol")
        # b takes a as lost after the presence timeout; then the newer logins, on b.
        yield dave.event("member", user="alice", status="offline")
        old_bob = bob
        bob = yield client_on(b, "bob")
        keep_alive(bob)     # online, so that a may kick him after the cut
        assert (yield old_bob.event("disconnect"))["kind"] == "replaced"
        carol = yield client_on(b, "carol")
        # a hears the stream: its carol is replaced by the newer login at once.
        assert (yield carol_on_a.event("disconnect"))["kind"] == "replaced"
        dave.take(lambda m: m.get("event") == "member")
        proxy.end_blackhole()
        # a's queued closes reach the stream, then what a says on hearing it was lost.
        yield dave.wait_for(lambda m: m.get("event") == "member" and m["user"] == "alice"
                            and m["status"] == "online", timeout=30)
        yield task_sleep(1)     # what b wrote before that has reached its clients
        closed = {client.name: [m["kind"] for m in client.take(
            lambda m: m.get("event") == "disconnect")] for client in (bob, carol, mallory)}
        assert closed == {"bob": [], "carol": [], "mallory": []}
        # A kick made on a after the cut still closes.
        yield until_online(alice, "bob", timeout=15)
        ok((yield command(alice, "kick bob now")))
        assert (yield bob.event("disconnect"))["kind"] == "kicked"


@pytest.mark.timeout(120)
@defer.inlineCallbacks
def test_member_lists_are_repaired_when_a_node_cut_off_for_long_comes_back(tmp_path):
    """Node a is cut off from NATS for longer than the presence timeout: node b takes it as
    lost and shows its user offline to dave, looking at #general, and to frank, in a private
    conversation with her; erin starts looking at #general meanwhile (her list has no
    alice). a comes back and says again who is online on it: dave and erin get alice
    online again, frank gets her status, and alice gets erin."""
    from twisted.internet import reactor
    with cluster_with_a_behind_a_proxy(tmp_path, "repair") as (nodes, proxy):
        a, b = yield start_a_and_b(nodes)
        alice = yield client_on(a, "alice", register=True)
        dave = yield client_on(b, "dave", register=True)
        erin = yield client_on(b, "erin", register=True)
        yield look(alice)
        keep_alive(alice, channel="general")
        yield sees_looking(dave, (yield look(dave)), {"alice"})
        keep_alive(dave, channel="general")
        frank = yield client_on(b, "frank", register=True)
        ok((yield frank.request({"get_private": "alice"})))
        keep_alive(frank, other_user="alice")
        yield frank.event("peer", other_user="alice", status="online")
        yield proxy.cut()
        yield dave.event("member", user="alice", status="offline")
        yield frank.event("peer", other_user="alice", status="offline")
        seen = yield look(erin)
        keep_alive(erin, channel="general")
        assert "alice" not in {m["user"] for m in seen["members"]}
        yield task_sleep(1)
        yield proxy.restore()
        restored = reactor.seconds()
        for viewer in (dave, erin):
            yield viewer.event("member", user="alice", status="online")
        yield frank.event("peer", other_user="alice", status="online")
        print(f"member lists repaired {reactor.seconds() - restored:.2f} s after the cut")
        yield alice.event("member", user="erin", status="online")
        yield until_online(dave, "alice", timeout=10)
        for viewer in (alice, dave, erin):
            yield eventually(lambda: members_of(viewer).addCallback(
                lambda members: members == [("alice", "online"), ("dave", "online"),
                                            ("erin", "online")]))
