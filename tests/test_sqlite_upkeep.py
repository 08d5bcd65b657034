"""SQLite's WAL is copied back into the database file by the engine's upkeep, on a
connection of its own, never by a message commit (whose writer would wait for its fsync)."""

import sqlite3

from twisted.internet import defer

from chatd.engines import SqliteEngine
from chatd.store import Message, Store, utcnow
from test_outage import sleep


def stored_in_the_file(path):
    """Messages in the database file itself, ignoring what is only in the WAL."""
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    except sqlite3.OperationalError:    # not even the schema is there yet
        return 0
    finally:
        conn.close()


@defer.inlineCallbacks
def save_many(store, count):
    rows = yield store.query("SELECT id FROM channels WHERE name = 'general'")
    yield defer.gatherResults([store.messages.save(Message(
        None, "alice", f"message {i}", utcnow(), channel="general", channel_id=rows[0][0]))
        for i in range(count)])


@defer.inlineCallbacks
def test_commits_never_checkpoint_and_the_upkeep_does(tmp_path, monkeypatch):
    monkeypatch.setattr(SqliteEngine, "CHECKPOINT_EVERY", 0.05)
    path = tmp_path / "chatd.sqlite"
    store = Store(SqliteEngine(str(path)), max_queued=10000)
    yield store.start()
    try:
        autocheckpoint = yield store.message_pool.runWithConnection(
            lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        assert autocheckpoint == 0
        yield save_many(store, 3000)
        for _ in range(100):
            if stored_in_the_file(path) == 3000:
                break
            yield sleep(0.05)
        assert stored_in_the_file(path) == 3000
    finally:
        yield store.stop()


@defer.inlineCallbacks
def test_without_the_upkeep_committed_messages_stay_in_the_wal(tmp_path, monkeypatch):
    """The other half: the file only has them because the upkeep copied them."""
    monkeypatch.setattr(SqliteEngine, "start_upkeep", lambda self, clock: None)
    monkeypatch.setattr(SqliteEngine, "stop_upkeep", lambda self: None)
    path = tmp_path / "chatd.sqlite"
    store = Store(SqliteEngine(str(path)), max_queued=10000)
    yield store.start()
    try:
        yield save_many(store, 3000)
        yield sleep(0.3)
        assert stored_in_the_file(path) == 0
        rows = yield store.query("SELECT COUNT(*) FROM messages")
        assert rows[0][0] == 3000
    finally:
        yield store.stop()
