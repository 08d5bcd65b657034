"""Database outages: the message log is kept (memory, then a spool file) and written
in order, exactly once, when the database is back; register/login say it is down.

The SQLite tests make the real database refuse message inserts with a trigger;
the MariaDB tests put a loopback TCP proxy between chatd and MariaDB and cut it.
"""

import json
import sqlite3

from twisted.internet import defer, reactor
from twisted.protocols import portforward

from chatd.engines import SqliteEngine, engine_from_url
from chatd.protocol import UNAVAILABLE
from chatd.store import Store
from support import (LIMITS_LIFTED, PASSWORD, connect, login, look_at, mysql_database,
                     start_server, stop_server)


def refuse_message_inserts(path):
    """A real SQLite failure for every message insert, as long as the trigger exists."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TRIGGER outage BEFORE INSERT ON messages"
                   " BEGIN SELECT RAISE(ABORT, 'database outage'); END")


def accept_message_inserts(path):
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER outage")


def sqlite_rows(path):
    with sqlite3.connect(path) as db:
        return db.execute("SELECT id, body FROM messages ORDER BY id").fetchall()


def spool_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def sleep(seconds):
    d = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


@defer.inlineCallbacks
def wait_until(condition, timeout=30):
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        yield sleep(0.05)
    raise AssertionError("condition not met in time")


@defer.inlineCallbacks
def test_sqlite_writes_spooled_rows_in_order_exactly_once(tmp_path):
    db, spool = tmp_path / "chatd.sqlite", tmp_path / "spool.jsonl"
    store = Store(SqliteEngine(str(db)), spool_path=spool, spool_memory=10)
    yield store.start()
    try:
        refuse_message_inserts(db)
        sent = [store.new_message("alice", f"message {i}", channel="general", channel_id=1)
                for i in range(60)]
        yield wait_until(lambda: store.messages._retry_call is not None)
        # At most the bound stays in memory; the older rows are in the spool file, in order.
        assert len(store.messages.pending) <= 10
        spooled = spool_rows(spool)
        assert [r[0] for r in spooled] + [m.id for m in store.messages.pending] == \
            [m.id for m in sent]
        # History still shows what is only in memory (the newest messages).
        page, _ = yield store.channel_history("general", 1, limit=50)
        assert [m.id for m in page] == [m.id for m in store.messages.pending]
        accept_message_inserts(db)
        yield store.messages.drained()
        assert sqlite_rows(db) == [(m.id, m.body) for m in sent]
        assert not spool.exists()
    finally:
        yield store.stop()


@defer.inlineCallbacks
def test_sqlite_spool_left_by_a_stop_or_crash_is_replayed_at_start(tmp_path):
    db, spool = tmp_path / "chatd.sqlite", tmp_path / "spool.jsonl"
    store = Store(SqliteEngine(str(db)), spool_path=spool, spool_memory=10000,
                  shutdown_timeout=0.5)
    yield store.start()
    refuse_message_inserts(db)
    sent = [store.new_message("alice", f"message {i}", channel="general", channel_id=1)
            for i in range(20)]
    yield store.stop()
    assert [r[0] for r in spool_rows(spool)] == [m.id for m in sent]
    accept_message_inserts(db)
    # As after a crash between a commit and the spool's removal: some rows are already
    # in SQL; and the last line was being written when the process died.
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)",
                         [m.row() for m in sent[:5]])
    with spool.open("ab") as f:
        f.write(b'[999, "alice", 1, null, nu')

    again = Store(SqliteEngine(str(db)), spool_path=spool, spool_memory=10000)
    yield again.start()
    try:
        newer = again.new_message("alice", "after restart", channel="general", channel_id=1)
        assert newer.id == sent[-1].id + 1
        yield again.messages.drained()
        assert sqlite_rows(db) == [(m.id, m.body) for m in sent + [newer]]
        assert not spool.exists()
    finally:
        yield again.stop()


class _Forwarder(portforward.ProxyServer):
    def connectionMade(self):
        self.factory.connections.add(self)
        super().connectionMade()

    def connectionLost(self, reason):
        self.factory.connections.discard(self)
        super().connectionLost(reason)


class LoopbackProxy:
    """A TCP forwarder to MariaDB on a free loopback port that can be cut and restored.

    Cut: every forwarded connection is aborted and new ones are refused (the port
    is closed), which is what chatd sees when the database host goes away.
    """

    def __init__(self, host, port):
        self.factory = portforward.ProxyFactory(host, port)
        self.factory.protocol = _Forwarder
        self.factory.connections = set()
        self.listening = None
        self.port = 0

    def start(self):
        self.listening = reactor.listenTCP(self.port, self.factory, interface="127.0.0.1")
        self.port = self.listening.getHost().port

    @defer.inlineCallbacks
    def cut(self):
        yield self.listening.stopListening()
        for connection in list(self.factory.connections):
            connection.transport.abortConnection()
        yield wait_until(lambda: not self.factory.connections)

    restore = start


def started_proxy(url):
    """A LoopbackProxy to the MariaDB that `url` names, already listening."""
    engine = engine_from_url(url)
    proxy = LoopbackProxy(engine.host, engine.port)
    proxy.start()
    return proxy


def proxied(url, proxy):
    engine = engine_from_url(url)
    return f"mysql://{engine.user}:{engine.password}@127.0.0.1:{proxy.port}/{engine.database}"


def mysql_messages(url):
    """(id, body) of every logged message, read directly from MariaDB (not through chatd)."""
    import MySQLdb
    engine = engine_from_url(url)
    conn = MySQLdb.connect(**engine.connect_kwargs())
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT id, body FROM messages ORDER BY id")
        return [tuple(row) for row in cursor.fetchall()]
    finally:
        conn.close()


def count_outcome(accepted, logged_rows):
    """sent / logged / duplicates / lost, comparing what clients were told with SQL."""
    bodies = [body for _, body in logged_rows]
    logged = set(logged_rows)
    counts = {"sent": len(accepted),
              "logged": sum(1 for row in accepted if row in logged),
              "duplicates": len(bodies) - len(set(bodies)),
              "lost": sum(1 for row in accepted if row not in logged)}
    print("outage test:", ", ".join(f"{k}={v}" for k, v in counts.items()))
    return counts


@defer.inlineCallbacks
def test_mariadb_outage_loses_nothing_and_writes_each_message_once(tmp_path):
    with mysql_database() as url:
        proxy = started_proxy(url)
        spool = tmp_path / "spool.jsonl"
        server = start_server(proxied(url, proxy), spool_file=str(spool), spool_memory=50,
                              **LIMITS_LIFTED)
        try:
            alice = yield login(server, "alice")
            bob = yield login(server, "bob")
            yield look_at(alice, "general")
            yield look_at(bob, "general")
            accepted, in_channel = [], []

            @defer.inlineCallbacks
            def chat(count, label):
                for i in range(count):
                    sender = (alice, bob)[i % 2]
                    body = f"{label} {i} from {sender.name}"
                    if i % 10 == 9:
                        other = "alice" if sender is bob else "bob"
                        reply = yield sender.request({"private_message": body,
                                                      "other_user": other})
                    else:
                        reply = yield sender.request({"channel_message": body,
                                                      "channel": "general"})
                    assert reply.get("ok"), reply
                    accepted.append((reply["id"], body))
                    if "channel_message" in reply["reply_to"]:
                        in_channel.append((reply["id"], body))

            yield chat(20, "before")
            yield proxy.cut()
            yield chat(200, "during")
            # Relay went on: bob saw alice's last channel message of the outage.
            last_from_alice = [b for _, b in accepted if "from alice" in b][-1]
            yield bob.wait_for(lambda m: m.get("channel_message") == last_from_alice)

            assert len(server.store.messages.pending) <= 50
            assert spool.exists() and len(spool_rows(spool)) >= 150

            stranger = yield connect(server)
            reply = yield stranger.request({"register": "carol", "password": PASSWORD,
                                            "email": "carol@example.org"})
            assert reply.get("error") == UNAVAILABLE, reply
            reply = yield stranger.request({"user:pwd": f"alice:{PASSWORD}"})
            assert reply.get("error") == UNAVAILABLE, reply

            proxy.restore()
            yield chat(20, "after")
            yield server.store.messages.drained()
            assert not spool.exists()

            counts = count_outcome(accepted, mysql_messages(url))
            assert counts == {"sent": 240, "logged": 240, "duplicates": 0, "lost": 0}
            # Order kept: ids were assigned in the order messages were accepted.
            assert [i for i, _ in accepted] == sorted(i for i, _ in accepted)
            reply = yield alice.request({"get_channel": "general", "limit": 200})
            assert [(m["id"], m["channel_message"]) for m in reply["messages"]] == \
                in_channel[-200:]
            reply = yield stranger.request({"user:pwd": f"alice:{PASSWORD}"})
            assert reply.get("ok"), reply
        finally:
            stop_server(server)
            if proxy.listening is not None:
                proxy.listening.stopListening()


@defer.inlineCallbacks
def test_mariadb_server_stopped_during_outage_writes_spool_after_restart(tmp_path):
    with mysql_database() as url:
        proxy = started_proxy(url)
        spool = tmp_path / "spool.jsonl"
        server = start_server(proxied(url, proxy), spool_file=str(spool), **LIMITS_LIFTED)
        try:
            alice = yield login(server, "alice")
            yield look_at(alice, "general")
            yield proxy.cut()
            accepted = []
            for i in range(30):
                body = f"during outage {i}"
                reply = yield alice.request({"channel_message": body, "channel": "general"})
                accepted.append((reply["id"], body))
            stop_server(server)
            notice = yield alice.event("disconnect")
            assert notice["kind"] == "shutdown"
            assert [(row[0], row[5]) for row in spool_rows(spool)] == accepted
            assert mysql_messages(url) == []

            proxy.restore()
            server = start_server(proxied(url, proxy), spool_file=str(spool))
            yield server.store.messages.drained()
            assert not spool.exists()
            assert mysql_messages(url) == accepted
            alice = yield login(server, "alice", register_first=False)
            reply = yield alice.request({"channel_message": "back", "channel": "general"})
            assert reply["id"] == accepted[-1][0] + 1
        finally:
            stop_server(server)
            if proxy.listening is not None:
                proxy.listening.stopListening()


def test_a_query_that_hangs_is_answered_as_unavailable_after_the_reply_timeout(tmp_path):
    """A database that accepts but never answers must not hold a login forever."""
    from twisted.internet.task import Clock
    from twisted.python.failure import Failure
    from chatd.store import DatabaseUnavailable
    clock = Clock()
    store = Store(SqliteEngine(str(tmp_path / "x.sqlite")), clock=clock, spool_memory=10000,
                  reply_timeout=10)
    outcome = []
    store.answer_in_time(defer.Deferred()).addErrback(outcome.append)
    clock.advance(9.9)
    assert outcome == []
    clock.advance(0.2)
    [failure] = outcome
    assert isinstance(failure, Failure) and failure.check(DatabaseUnavailable)
    assert store.is_unavailable(failure)


def test_default_spool_paths_follow_the_database():
    assert engine_from_url("sqlite:/srv/chat/chatd.sqlite").default_spool_path() == \
        "/srv/chat/chatd-spool.jsonl"
    assert engine_from_url("mysql://u:p@db:3306/chat").default_spool_path() == \
        "chatd-spool-chat.jsonl"
