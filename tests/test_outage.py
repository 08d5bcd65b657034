"""Database outages: the message log is kept (memory, then a spool file) and written
in order, exactly once, when the database is back; registering says it is down, and
logging in works (the password hashes are in memory).

The SQLite tests make the real database refuse message inserts with a trigger;
the MariaDB tests put a loopback TCP proxy between chatd and MariaDB and cut it.
"""

import json
import sqlite3

from twisted.internet import defer, reactor
from twisted.protocols import portforward

from chatd.engines import SqliteEngine, engine_from_url
from chatd.protocol import UNAVAILABLE
from chatd.store import Message, Store, utcnow
from twisted.python.failure import Failure
from support import (LIMITS_LIFTED, PASSWORD, LoopbackProxy, ProxiedConnection, connect, login,
                     look_at, mysql_database, register, start_server, stop_server)


class Lock:
    """Another process's write transaction on the SQLite file: a real outage for chatd,
    whose writes then fail with "database is locked" after its busy_timeout."""

    def __init__(self, path):
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("BEGIN IMMEDIATE")

    def release(self):
        self.db.execute("ROLLBACK")
        self.db.close()


def main_file_rows(path, sql):
    """Rows as the database file itself has them, without its WAL."""
    db = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def sqlite_rows(path):
    with sqlite3.connect(path) as db:
        return db.execute("SELECT id, body FROM messages ORDER BY id").fetchall()


def spool_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def sleep(seconds):
    d = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


def message(body, nonce=None):
    return Message(None, "alice", body, utcnow(), channel="general", channel_id=1, nonce=nonce)


@defer.inlineCallbacks
def save_all(store, bodies):
    results = yield defer.gatherResults([store.save_message(message(b)) for b in bodies])
    return [m for m, _ in results]


@defer.inlineCallbacks
def test_sqlite_locked_spools_acknowledged_messages_and_writes_them_once(tmp_path):
    db, spool = tmp_path / "chatd.sqlite", tmp_path / "spool.jsonl"
    store = Store(SqliteEngine(str(db), busy_timeout=0.2), spool_path=spool, max_queued=1000)
    yield store.start()
    try:
        before = yield save_all(store, [f"before {i}" for i in range(5)])
        lock = Lock(db)
        during = yield save_all(store, [f"during {i}" for i in range(60)])
        # Durable in the spool, in order, with ids no commit can take.
        assert store.messages.outage
        assert [(r[0], r[5]) for r in spool_rows(spool)] == [(m.id, m.body) for m in during]
        ids = [m.id for m in before + during]
        assert len(set(ids)) == len(ids) and [m.id for m in during] == sorted(m.id for m in during)
        lock.release()
        yield store.messages.drained()
        after = yield save_all(store, ["after"])
        assert sorted(sqlite_rows(db)) == sorted((m.id, m.body) for m in before + during + after)
        assert after[0].id > max(ids)
        assert not spool.exists()
        page, _ = yield store.channel_history("general", 1, limit=100)
        assert [m.body for m in page] == [m.body for m in sorted(before + during + after,
                                                                  key=lambda m: m.id)]
    finally:
        yield store.stop()


@defer.inlineCallbacks
def test_sqlite_spool_left_by_a_stop_or_crash_is_replayed_at_start(tmp_path):
    db, spool = tmp_path / "chatd.sqlite", tmp_path / "spool.jsonl"
    store = Store(SqliteEngine(str(db), busy_timeout=0.2), spool_path=spool, shutdown_timeout=0.5, max_queued=1000)
    yield store.start()
    lock = Lock(db)
    sent = yield save_all(store, [f"message {i}" for i in range(20)])
    yield store.stop()
    lock.release()
    assert [r[0] for r in spool_rows(spool)] == [m.id for m in sent]
    # As after a crash between a commit and the spool's removal: some rows are already
    # in SQL; and the last line was being written when the process died.
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO messages (id, sender, channel_id, recipient, peer_key,"
                         " body, sent_at, nonce) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         [m.row() for m in sent[:5]])
    with spool.open("ab") as f:
        f.write(b'[999, "alice", 1, null, nu')

    again = Store(SqliteEngine(str(db)), spool_path=spool, max_queued=1000)
    yield again.start()
    try:
        assert not spool.exists()
        [newer] = yield save_all(again, ["after restart"])
        assert newer.id > sent[-1].id
        assert sqlite_rows(db) == [(m.id, m.body) for m in sent + [newer]]
    finally:
        yield again.stop()


@defer.inlineCallbacks
def test_sqlite_a_mistake_in_sql_is_a_bug_not_an_outage(tmp_path):
    """Only "locked", "unable to open", I/O and full-disk errors mean unavailable."""
    store = Store(SqliteEngine(str(tmp_path / "chatd.sqlite")), max_queued=1000)
    yield store.start()
    try:
        for sql in ("SELECT * FROM no_such_table", "SELEKT 1"):
            try:
                yield store.query(sql)
            except sqlite3.OperationalError as e:
                failure = Failure(e)
            assert not store.is_unavailable(failure), sql
        lock = Lock(tmp_path / "chatd.sqlite")
        store.engine.busy_timeout = 0.1
        try:
            yield store.execute("UPDATE users SET role = 'user'")
        except Exception as e:
            failure = Failure(e)
        finally:
            lock.release()
        assert store.is_unavailable(failure), failure
    finally:
        yield store.stop()


@defer.inlineCallbacks
def test_nonce_is_remembered_across_a_restart_and_not_stored_twice(tmp_path):
    db = tmp_path / "chatd.sqlite"
    store = Store(SqliteEngine(str(db)), max_queued=1000)
    yield store.start()
    first, is_new = yield store.save_message(message("hello", nonce="n-1"))
    assert is_new
    again, is_new = yield store.save_message(message("hello again", nonce="n-1"))
    assert (again.id, again.body, is_new) == (first.id, "hello", False)
    yield store.stop()
    store = Store(SqliteEngine(str(db)), max_queued=1000)
    yield store.start()
    try:
        # Two copies in one batch and one in the database: one row, one id.
        results = yield defer.gatherResults([store.save_message(message("x", nonce=n))
                                             for n in ("n-1", "n-2", "n-2")])
        assert [(m.id == first.id, new) for m, new in results][0] == (True, False)
        assert results[1][0].id == results[2][0].id and [r[1] for r in results[1:]] == \
            [True, False]
        assert len(sqlite_rows(db)) == 2
    finally:
        yield store.stop()


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
        server = start_server(proxied(url, proxy), spool_file=str(spool), **LIMITS_LIFTED)
        try:
            alice = yield login(server, "alice")
            bob = yield login(server, "bob")
            yield register(server, "dave")
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

            # Every message acknowledged during the outage is durable in the spool.
            assert server.store.messages.outage
            spooled = {(r[0], r[5]) for r in spool_rows(spool)}
            assert {a for a in accepted if a[1].startswith("during")} <= spooled

            stranger = yield connect(server)
            reply = yield stranger.request({"register": "carol", "password": PASSWORD,
                                            "email": "carol@example.org"})
            assert reply.get("error") == UNAVAILABLE, reply
            # An account this server knows logs in all the same (its hash is in memory);
            # the reply lacks the conversations, which list_conversations gives later.
            reply = yield stranger.request({"user:pwd": f"dave:{PASSWORD}"})
            assert reply.get("ok") and "conversations" not in reply, reply

            proxy.restore()
            yield chat(20, "after")
            yield server.store.messages.drained()
            assert not spool.exists()

            counts = count_outcome(accepted, mysql_messages(url))
            assert counts == {"sent": 240, "logged": 240, "duplicates": 0, "lost": 0}
            # Ids increase within each phase; the outage's come from a block reserved
            # before it, so they sort before the messages of the last BLOCK_REFRESH s.
            for phase in ("before", "during", "after"):
                ids = [i for i, body in accepted if body.startswith(phase)]
                assert ids == sorted(ids), phase
            reply = yield alice.request({"get_channel": "general", "limit": 200})
            assert [(m["id"], m["channel_message"]) for m in reply["messages"]] == \
                sorted(in_channel)[-200:]
            reply = yield stranger.request({"list_conversations": ""})
            assert reply.get("ok"), reply
            yield register(server, "carol")
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
            assert reply["id"] > max(i for i, _ in accepted)
        finally:
            stop_server(server)
            if proxy.listening is not None:
                proxy.listening.stopListening()


def test_a_query_that_hangs_is_answered_as_unavailable_after_the_reply_timeout(tmp_path):
    """A database that accepts but never answers must not hold a login forever."""
    from twisted.internet.task import Clock
    from chatd.store import DatabaseUnavailable

    class HangingPool:
        def runWithConnection(self, *args):
            return defer.Deferred()
    clock = Clock()
    store = Store(SqliteEngine(str(tmp_path / "x.sqlite")), clock=clock, reply_timeout=10, max_queued=1000)
    store.pool = HangingPool()
    outcome = []
    store.get_user("alice").addErrback(outcome.append)
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


@defer.inlineCallbacks
def test_the_auth_log_queue_is_bounded_during_an_outage(tmp_path):
    db = tmp_path / "chatd.sqlite"
    store = Store(SqliteEngine(str(db), busy_timeout=0.1), max_queued=1000)
    yield store.start()
    store.auth_events.max_pending = 100
    try:
        lock = Lock(db)
        for i in range(250):
            store.log_auth(f"user{i}", "login", "127.0.0.1")
            assert len(store.auth_events.pending) <= 100
        assert store.auth_events.dropped == 150
        yield sleep(0.3)    # the writer has failed and is retrying
        lock.release()
        yield store.auth_events.drained()
        rows = yield store.query("SELECT user_name FROM auth_log ORDER BY id")
        # The newest rows are kept, in order; the oldest beyond the bound were dropped.
        assert [r[0] for r in rows] == [f"user{i}" for i in range(150, 250)]
    finally:
        yield store.stop()


@defer.inlineCallbacks
def test_message_log_during_an_outage_answers_in_time_and_heartbeats_go_on(tmp_path):
    """/log used to wait for the writer to drain, without a timeout, with the admin's
    connection paused: its heartbeats were not read and it went offline."""
    from support import login_admin
    with mysql_database() as url:
        proxy = started_proxy(url)
        server = start_server(proxied(url, proxy), spool_file=str(tmp_path / "spool.jsonl"),
                              presence_timeout=2, **LIMITS_LIFTED)
        server.store.reply_timeout = 1.0
        try:
            admin = yield login_admin(server, "root")
            yield look_at(admin, "general")
            reply = yield admin.request({"channel_message": "before", "channel": "general"})
            assert reply.get("ok"), reply
            yield proxy.cut()
            reply = yield admin.request({"channel_message": "during", "channel": "general"})
            assert reply.get("ok"), reply      # durable in the spool
            started = reactor.seconds()
            reply = yield admin.request({"command": "log channel #general"})
            assert reply.get("error") == UNAVAILABLE, reply
            assert reactor.seconds() - started < 3
            for _ in range(4):     # twice the presence timeout: still online
                admin.send({"presence": "online", "channel": "general"})
                yield sleep(0.5)
            assert server.hub.status_of("root") == "online"
            proxy.restore()
            yield server.store.messages.drained()
            reply = yield admin.request({"command": "log channel #general"})
            assert [m["channel_message"] for m in reply["messages"]] == ["before", "during"]
        finally:
            stop_server(server)
            if proxy.listening is not None:
                proxy.listening.stopListening()


class _AnswerDropper(portforward.ProxyClient):
    """The MariaDB side of a trapped connection: drops the answer to a COMMIT."""
    lose_answer = False

    def dataReceived(self, data):
        if self.lose_answer:
            self.peer.transport.abortConnection()
            self.transport.abortConnection()
        else:
            super().dataReceived(data)


class _AnswerDropperFactory(portforward.ProxyClientFactory):
    protocol = _AnswerDropper


class _CommitTrap(ProxiedConnection):
    """Cuts the connection at the next COMMIT once `factory.trap` is set: "answer"
    lets the COMMIT reach MariaDB and drops its answer, "commit" drops the COMMIT. A
    COMMIT is a query of its own, or the last of a message commit's statements."""
    clientProtocolFactory = _AnswerDropperFactory

    def dataReceived(self, data):
        trap = self.factory.trap
        query = data.lower()
        if trap is None or not (b"\x03commit" in query or query.endswith(b"; commit")):
            return super().dataReceived(data)
        self.factory.trap = None
        self.factory.sprung.append(trap)
        if trap == "answer":
            self.peer.lose_answer = True
            self.peer.transport.write(data)
        else:
            self.transport.abortConnection()
            self.peer.transport.abortConnection()


def stored_once(url, messages):
    """The rows of `messages` as MariaDB has them, checking none is there twice."""
    rows = mysql_messages(url)
    bodies = [body for _, body in rows]
    assert len(bodies) == len(set(bodies)), "a message was stored twice"
    return {(m.id, m.body) for m in messages} <= set(rows)


@defer.inlineCallbacks
def check_commit_with_lost_answer(url, trap):
    proxy = started_proxy(url)
    proxy.factory.protocol = _CommitTrap
    proxy.factory.trap, proxy.factory.sprung = None, []
    store = Store(engine_from_url(proxied(url, proxy)), max_queued=1000)
    yield store.start()
    try:
        before, _ = yield store.save_message(message("before"))
        proxy.factory.trap = trap
        # One batch (saved in one reactor turn), found again by nonce or by sender, time, text.
        saves = [store.save_message(message(f"{trap} {i}", nonce=f"{trap}-{i}" if i % 2 else None))
                 for i in range(10)]
        results = yield defer.gatherResults(saves)
        assert proxy.factory.sprung == [trap]
        after, _ = yield store.save_message(message("after"))
        yield store.messages.drained()
        stored = [m for m, _ in results]
        assert all(is_new for _, is_new in results)
        assert len({m.id for m in stored}) == 10
        assert stored_once(url, [before] + stored + [after])
        assert [m.id for m in stored] == sorted(m.id for m in stored)
        assert before.id < min(m.id for m in stored) and after.id > max(m.id for m in stored)
        return stored
    finally:
        yield store.stop()
        proxy.listening.stopListening()


@defer.inlineCallbacks
def test_mariadb_commit_whose_answer_is_lost_is_looked_up_not_stored_again(tmp_path):
    """The COMMIT reached MariaDB, its answer did not: the messages are found in SQL
    and answered with the ids they were stored with."""
    with mysql_database() as url:
        stored = yield check_commit_with_lost_answer(url, "answer")
        assert [m.id for m in stored] == list(range(stored[0].id, stored[0].id + 10))


@defer.inlineCallbacks
def test_mariadb_commit_that_never_arrived_is_stored_once_later(tmp_path):
    with mysql_database() as url:
        yield check_commit_with_lost_answer(url, "commit")


@defer.inlineCallbacks
def test_mariadb_overlapping_commits_keep_ids_in_send_and_answer_order(tmp_path):
    """Two processes' stores share one MariaDB, each with several commits in flight:
    each answers in id order, each speaker's ids follow its send order, no id twice."""
    with mysql_database() as url:
        stores = [Store(engine_from_url(url), max_queued=100000) for _ in range(2)]
        for store in stores:
            yield store.start()
        try:
            answered = {0: [], 1: []}
            most_in_flight = [0]
            saves = []
            for turn in range(30):
                for s, store in enumerate(stores):
                    for sender in ("alice", "bob", "carol"):
                        for i in range(5):
                            m = Message(None, sender, f"{s} {sender} {turn} {i}", utcnow(),
                                        channel="general", channel_id=1)
                            saves.append(store.save_message(m).addCallback(
                                lambda r, s=s: answered[s].append(r[0])))
                    most_in_flight[0] = max(most_in_flight[0], len(store.messages._in_flight))
                yield sleep(0)
            yield defer.gatherResults(saves)
            assert most_in_flight[0] > 1
            everything = answered[0] + answered[1]
            assert len({m.id for m in everything}) == len(everything) == 900
            for s in (0, 1):
                ids = [m.id for m in answered[s]]
                assert ids == sorted(ids), f"store {s} answered out of id order"
                for sender in ("alice", "bob", "carol"):
                    mine = [m for m in answered[s] if m.sender == sender]
                    assert [m.body for m in mine] == [m.body for m in sorted(mine, key=lambda m: m.id)]
            assert stored_once(url, everything)
        finally:
            for store in stores:
                yield store.stop()


@defer.inlineCallbacks
def test_mariadb_cut_during_overlapping_commits_loses_nothing(tmp_path):
    with mysql_database() as url:
        proxy = started_proxy(url)
        store = Store(engine_from_url(proxied(url, proxy)), spool_path=tmp_path / "spool.jsonl",
                      max_queued=100000)
        yield store.start()
        try:
            saves, cut = [], False
            for turn in range(40):
                for i in range(20):
                    saves.append(store.save_message(message(f"cut {turn} {i}")))
                if not cut and len(store.messages._in_flight) > 1:
                    yield proxy.cut()
                    cut = True
                    proxy.restore()
                yield sleep(0)
            assert cut
            results = yield defer.gatherResults(saves)
            yield store.messages.drained()
            stored = [m for m, _ in results]
            assert len({m.id for m in stored}) == 800
            assert stored_once(url, stored)
        finally:
            yield store.stop()
            proxy.listening.stopListening()


@defer.inlineCallbacks
def test_resend_during_an_outage_whose_nonce_is_only_in_sql_is_refused_not_spooled(
        tmp_path, monkeypatch):
    """A spooled copy of a message already in SQL would be dropped at replay, leaving the
    client an id that does not exist: while the database is away such a resend is
    refused (the client sends it again later) unless memory holds every nonce of its
    sender, as it does for bob here. A first send (no `resend` flag) is spooled."""
    import chatd.store
    monkeypatch.setattr(chatd.store, "RECENT_NONCES", 3)
    db, spool = tmp_path / "chatd.sqlite", tmp_path / "spool.jsonl"

    def said(sender, body, nonce=None, resend=None):
        return Message(None, sender, body, utcnow(), channel="general", channel_id=1,
                       nonce=nonce, resend=nonce is not None if resend is None else resend)

    store = Store(SqliteEngine(str(db), busy_timeout=0.2), spool_path=spool, max_queued=1000)
    yield store.start()
    originals = []
    for message_ in [said("alice", f"a{i}", f"n-{i}") for i in range(5)] + [said("bob", "b0", "b-0")]:
        stored, _ = yield store.save_message(message_)
        originals.append(stored)
    yield store.stop()

    # After a restart memory holds the 3 latest nonces: alice's n-3, n-4 and bob's b-0.
    store = Store(SqliteEngine(str(db), busy_timeout=0.2), spool_path=spool, max_queued=1000)
    yield store.start()
    try:
        lock = Lock(db)
        outcomes = yield defer.DeferredList([
            store.save_message(said("alice", "a0 again", "n-0")),   # stored, only in SQL
            store.save_message(said("alice", "a4 again", "n-4")),   # stored, in memory
            store.save_message(said("bob", "b1", "b-1")),           # new, bob fully known
            store.save_message(said("alice", "a5")),                # no nonce: spooled
            store.save_message(said("alice", "a6", "n-6", resend=False)),   # first send
        ], consumeErrors=True)
        assert store.messages.outage
        (ok0, refused), (ok4, again4), (ok_b, bob1), (ok5, plain), (ok6, first) = outcomes
        assert not ok0 and store.is_unavailable(refused)
        assert ok4 and (again4[0].id, again4[1]) == (originals[4].id, False)
        assert ok_b and bob1[1] and ok5 and plain[1] and ok6 and first[1]
        assert [r[5] for r in spool_rows(spool)] == ["b1", "a5", "a6"]
        lock.release()
        yield store.messages.drained()
        resent, is_new = yield store.save_message(said("alice", "a0 again", "n-0"))
        assert (resent.id, resent.body, is_new) == (originals[0].id, "a0", False)
        assert sorted(sqlite_rows(db)) == sorted((m.id, m.body) for m in
                                                 originals + [bob1[0], plain[0], first[0]])
    finally:
        yield store.stop()


@defer.inlineCallbacks
def test_sqlite_the_log_is_checkpointed_in_the_background_not_by_the_commits(tmp_path):
    """Committed messages reach the database file itself (not only its WAL) although
    the committing connections' own checkpoint is far from due: the background one
    copied them, so no commit had to wait for a checkpoint."""
    db = tmp_path / "chatd.sqlite"
    store = Store(SqliteEngine(str(db)), max_queued=1000)
    yield store.start()
    try:
        saved = []
        for turn in range(20):      # 20 commits: a few hundred WAL pages, far below the bound
            saved += yield save_all(store, [f"m{turn}-{i}" for i in range(10)])
        ids = set()
        for _ in range(50):
            yield sleep(0.2)
            try:
                ids = {row[0] for row in main_file_rows(db, "SELECT id FROM messages")}
            except sqlite3.DatabaseError:
                continue        # read while a checkpoint was copying pages: try again
            if {m.id for m in saved} <= ids:
                break
        assert {m.id for m in saved} <= ids
    finally:
        yield store.stop()
    assert store.checkpoints is None        # stopped with the store
