"""What a message commit costs besides its SQL (bench.commit_cost measures it): no
reference cycles left for the collector, one COMMIT per transaction, and on SQLite
a thread of the message log's own.
"""

import gc
import sqlite3
import threading
import time

from twisted.internet import defer, reactor
from twisted.python.failure import Failure

from chatd.engines import ConnectionThread, SqliteEngine, engine_from_url
from chatd.store import Message, Store, _CommitTurn, utcnow
from support import mysql_database


def message(body):
    return Message(None, "alice", body, utcnow(), channel="general", channel_id=1)


@defer.inlineCallbacks
def test_a_message_commit_is_freed_at_once_not_by_the_cyclic_collector(database):
    """Its Deferreds, turn and message are freed as soon as it is answered: a reference
    cycle (such as a closure that calls itself) would leave them, per message, to
    the collector, whose passes then ran every few commits."""
    store = Store(engine_from_url(database), max_queued=1000)
    yield store.start()
    gc.collect()
    gc.disable()
    try:
        for i in range(20):
            yield store.save_message(message(f"message {i}"))
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, (Message, _CommitTurn))]
        assert left == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        yield store.stop()


@defer.inlineCallbacks
def test_mariadb_a_transaction_sends_one_commit(tmp_path):
    """Store._transaction commits (and then tells the commit after it), so the pool must
    not send a second COMMIT, a round trip each time; nor may it after a message
    commit, which sends its COMMIT with its other statements."""
    with mysql_database() as url:
        store = Store(engine_from_url(url), max_queued=1000)    # the message log has
        yield store.start()                                     # one connection
        try:
            def commits(cursor):
                cursor.execute("SHOW SESSION STATUS LIKE 'Com_commit'")
                return int(cursor.fetchone()[1])

            def update(cursor, i):
                cursor.execute("UPDATE users SET role = role WHERE name = ?", (f"u{i}",))
            first = yield store.run("count commits", commits, pool=store.message_pool)
            for i in range(5):
                yield store.run("update", update, i, pool=store.message_pool)
            last = yield store.run("count commits", commits, pool=store.message_pool)
            assert last - first == 6    # the first count's and the five updates'
            for i in range(5):
                yield store.save_message(message(f"message {i}"))
            after = yield store.run("count commits", commits, pool=store.message_pool)
            assert after - last == 6
        finally:
            yield store.stop()


@defer.inlineCallbacks
def test_sqlite_message_commits_run_in_a_thread_of_their_own(tmp_path):
    """The message log's connection is one thread's (chatd.engines.ConnectionThread):
    a run that raises is rolled back and the connection goes on; close() first
    finishes the runs handed over."""
    store = Store(SqliteEngine(str(tmp_path / "chatd.sqlite")), max_queued=1000)
    yield store.start()
    try:
        def insert(cursor, body, fail):
            cursor.execute("INSERT INTO messages (sender, channel_id, body, sent_at)"
                           " VALUES ('alice', 1, ?, '2026-01-01 00:00:00.000')", (body,))
            if fail:
                raise ValueError("the transaction fails after its insert")
            return threading.current_thread().name
        try:
            yield store.run("insert", insert, "rolled back", True, pool=store.message_pool)
        except ValueError:
            pass
        else:
            raise AssertionError("the failure was not passed on")
        thread = yield store.run("insert", insert, "kept", False, pool=store.message_pool)
        assert thread == "chatd-message-log"
        last = [store.run("insert", insert, f"queued {i}", False, pool=store.message_pool)
                for i in range(3)]
        store.message_pool.close()
        store.message_pool = None
        yield defer.gatherResults(last)
        rows = yield store.query("SELECT body FROM messages ORDER BY id")
        assert [body for body, in rows] == ["kept", "queued 0", "queued 1", "queued 2"]
    finally:
        yield store.stop()


@defer.inlineCallbacks
def test_answers_that_pile_up_while_the_reactor_is_busy_all_arrive_in_order():
    """Runs a ConnectionThread answers while the reactor is busy (here asleep) all
    reach their callers once it runs again, in order, a failure as a failure, and
    the thread answers the next run after them: none waits for a wake-up that
    never comes."""
    pool = ConnectionThread(lambda: sqlite3.connect(":memory:", check_same_thread=False),
                            lambda connection: None, "test-answers")
    try:
        for burst in (1, 5, 40):
            fired = []
            runs = [pool.runWithConnection(lambda connection, i=i: i) for i in range(burst)]
            for run in runs:
                run.addCallback(fired.append)
            time.sleep(0.05)    # the reactor is busy: every run is answered meanwhile
            failed = pool.runWithConnection(lambda connection: 1 / 0).addTimeout(5, reactor)
            yield defer.gatherResults(runs).addTimeout(5, reactor)
            assert fired == list(range(burst))
            try:
                yield failed
            except ZeroDivisionError:
                pass
            else:
                raise AssertionError("the failure was not passed on")
            after = pool.runWithConnection(lambda connection: "after").addTimeout(5, reactor)
            assert (yield after) == "after"
    finally:
        pool.close()


@defer.inlineCallbacks
def test_sqlite_message_connection_that_cannot_open_is_an_outage_then_opens(tmp_path):
    """A file that cannot be opened is "unavailable" (the messages go to the spool), and
    the connection is opened at a later run once it can be."""
    path = tmp_path / "later" / "chatd.sqlite"
    pool = SqliteEngine(str(path)).make_pool(for_messages=True)
    store = Store(SqliteEngine(str(path)), max_queued=1000)
    try:
        try:
            yield pool.runWithConnection(lambda connection: connection.execute("SELECT 1"))
        except sqlite3.OperationalError as e:
            assert store.is_unavailable(Failure(e)), e
        else:
            raise AssertionError("a file in a missing directory was opened")
        path.parent.mkdir()
        rows = yield pool.runWithConnection(
            lambda connection: connection.execute("PRAGMA journal_mode").fetchall())
        assert rows == [("wal",)]
    finally:
        pool.close()


@defer.inlineCallbacks
def test_one_commit_finds_every_stored_nonce_and_stores_any_text_exactly(database):
    """A batch's resends are looked up in one query: after a restart (nothing in
    memory), a batch mixing resends of different senders with new messages gets the
    original ids back and stores only the new ones, whatever their text holds. A
    nonce used again without the resend flag gets the original too."""
    texts = ["50% off; DROP TABLE messages; --", "it's \"quoted\" \\ back", "é 🙂 \u0000 end"]

    def sent(sender, body, nonce, resend=False):
        return Message(None, sender, body, utcnow(), channel="general", channel_id=1,
                       nonce=nonce, resend=resend)
    store = Store(engine_from_url(database), max_queued=1000)
    yield store.start()
    try:
        first = yield defer.gatherResults([store.save_message(sent(s, f"{s} first", "n-1"))
                                           for s in ("alice", "bob")])
    finally:
        yield store.stop()
    store = Store(engine_from_url(database), max_queued=1000)
    yield store.start()
    try:
        batch = [sent("bob", "bob again", "n-1", True), sent("alice", texts[0], "n-2"),
                 sent("alice", "alice again", "n-1", True), sent("bob", texts[1], "n-2"),
                 sent("carol", texts[2], None)]
        results = yield defer.gatherResults([store.save_message(m) for m in batch])
        assert [(m.id, new) for m, new in results[:3:2]] == [
            (first[1][0].id, False), (first[0][0].id, False)]
        assert [m.body for m, _ in results[:3:2]] == ["bob first", "alice first"]
        new_ids = [m.id for m, new in results if new]
        assert [new for _, new in results] == [False, True, False, True, True]
        assert new_ids == sorted(new_ids) and new_ids[0] > first[1][0].id
        rows = yield store.query("SELECT sender, body, nonce FROM messages ORDER BY id")
        assert [tuple(r) for r in rows] == [
            ("alice", "alice first", "n-1"), ("bob", "bob first", "n-1"),
            ("alice", texts[0], "n-2"), ("bob", texts[1], "n-2"), ("carol", texts[2], None)]
    finally:
        yield store.stop()
    store = Store(engine_from_url(database), max_queued=1000)
    yield store.start()
    try:
        reused, new = yield defer.gatherResults([store.save_message(sent("bob", "reused", "n-2")),
                                                 store.save_message(sent("dave", "new", "d-1"))])
        assert (reused[0].id, reused[0].body, reused[1]) == (results[3][0].id, texts[1], False)
        assert new[1] and new[0].id > results[4][0].id
        rows = yield store.query("SELECT COUNT(*) FROM messages")
        assert rows[0][0] == 6
    finally:
        yield store.stop()


@defer.inlineCallbacks
def test_commits_skip_every_reserved_block_in_their_way(database):
    """Ids reserved for other processes' outages (message_id_blocks) are never taken:
    a batch that does not fit below a block goes past it, and past the block right
    after it; one that fits below goes there."""
    store = Store(engine_from_url(database), max_queued=1000)
    yield store.start()
    try:
        m, _ = yield store.save_message(message("before"))
        start = m.id + 4    # blocks at [+4, +10) and [+10, +20), as two processes left them
        yield store.execute("INSERT INTO message_id_blocks (start_id, end_id) VALUES (?, ?), (?, ?)",
                            (start, start + 6, start + 6, start + 16))
        fits = yield defer.gatherResults([store.save_message(message(f"fits {i}"))
                                          for i in range(3)])
        past = yield defer.gatherResults([store.save_message(message(f"past {i}"))
                                          for i in range(2)])
        assert [m.id for m, _ in fits] == [start - 3, start - 2, start - 1]
        assert [m.id for m, _ in past] == [start + 16, start + 17]
    finally:
        yield store.stop()
