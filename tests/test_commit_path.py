"""What a message commit costs besides its SQL (bench.commit_cost measures it): no
reference cycles left for the collector, one COMMIT per transaction.
"""

import gc

from twisted.internet import defer

from chatd.engines import SqliteEngine, engine_from_url
from chatd.store import Message, Store, _CommitTurn, utcnow
from support import mysql_database


def message(body):
    return Message(None, "alice", body, utcnow(), channel="general", channel_id=1)


@defer.inlineCallbacks
def test_a_message_commit_is_freed_at_once_not_by_the_cyclic_collector(tmp_path):
    """Its Deferreds, turn and message are freed as soon as it is answered: a reference
    cycle (such as a closure that calls itself) would leave them, per message, to
    the collector, whose passes then ran every few commits."""
    store = Store(SqliteEngine(str(tmp_path / "chatd.sqlite")), max_queued=1000)
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
    """Store._transaction commits (and then lets the commits that wait for it go on),
    so the pool must not send a second COMMIT: a round trip each time."""
    with mysql_database() as url:
        engine = engine_from_url(url)
        engine.commits_in_flight = 1    # a message pool of one connection: its session
        store = Store(engine, max_queued=1000)  # counts every COMMIT
        yield store.start()
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
        finally:
            yield store.stop()
