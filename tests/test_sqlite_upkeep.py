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


@defer.inlineCallbacks
def backlog(store):
    rows = yield store.query("SELECT COUNT(*) FROM search_backlog")
    return rows[0][0]


@defer.inlineCallbacks
def found(store, word):
    return sorted(m.body for m in (yield store.search("alice", [word], [1, 2, 3])))


@defer.inlineCallbacks
def test_new_messages_are_indexed_for_search_in_batches_and_searches_never_miss_them(
        tmp_path, monkeypatch):
    import chatd.store
    monkeypatch.setattr(chatd.store, "SEARCH_INDEX_EVERY", 0.05)
    monkeypatch.setattr(chatd.store, "SEARCH_BATCH", 700)  # three rounds for 1,500
    store = Store(SqliteEngine(str(tmp_path / "chatd.sqlite")), max_queued=10000)
    yield store.start()
    try:
        yield store.engine.stop_upkeep()
        store._indexing.stop()          # rounds by hand from here
        yield save_many(store, 1500)
        assert (yield backlog(store)) == 1500
        assert (yield store.index_backlog()) == 1500        # in three transactions
        assert (yield backlog(store)) == 0
        assert len((yield found(store, "message"))) == 50   # a page
        # An edit or a delete while waiting, and after being indexed: the index follows.
        yield save_many(store, 2)
        [waiting, also_waiting] = [r[0] for r in (yield store.query(
            "SELECT message_id FROM search_backlog ORDER BY message_id"))]
        assert (yield store.edit_message(waiting, "alice", "renamed zebra", utcnow()))
        assert (yield store.edit_message(1, "alice", "renamed yak", utcnow()))
        yield store.execute("DELETE FROM messages WHERE id IN (?, ?)", (also_waiting, 2))
        assert (yield found(store, "renamed")) == ["renamed yak", "renamed zebra"]
        assert (yield backlog(store)) == 0                   # the search indexed first
        assert (yield found(store, "zebra")) == ["renamed zebra"]
        # Raises if the index and the messages disagree (a row missing, or indexed twice).
        yield store.execute(
            "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)")
    finally:
        yield store.stop()


@defer.inlineCallbacks
def test_the_backlog_is_indexed_every_round(tmp_path, monkeypatch):
    import chatd.store
    monkeypatch.setattr(chatd.store, "SEARCH_INDEX_EVERY", 0.05)
    store = Store(SqliteEngine(str(tmp_path / "chatd.sqlite")), max_queued=10000)
    yield store.start()
    try:
        yield save_many(store, 100)
        for _ in range(100):
            if (yield backlog(store)) == 0:
                break
            yield sleep(0.05)
        assert (yield backlog(store)) == 0
    finally:
        yield store.stop()
