"""Search on both engines (SQLite FTS5, MariaDB's word table): every word, newest first, in
the relayed shape, never from a conversation the user may not read, never a deleted text.
Both indexes are written off the message path (chatd/searchindex.py); SQLite's is a
file of its own."""

import sqlite3
from pathlib import Path

import pytest
from twisted.internet import defer

from chatd.engines import SqliteEngine, engine_from_url
from chatd.searchindex import SEARCH_SCAN
from chatd.store import Message, Store, db_time, utcnow
from support import (LIMITS_LIFTED, error, login, login_admin, mysql_database, ok, start_server,
                     stop_server)


@pytest.fixture
def mysql_url():
    with mysql_database() as url:
        yield url


def texts(reply):
    return [m.get("channel_message", m.get("private_message")) for m in ok(reply)["messages"]]


@defer.inlineCallbacks
def test_search_finds_every_word_newest_first_only_where_you_may_read(server):
    alice = yield login(server, "alice")
    bob = yield login(server, "bob")
    carol = yield login(server, "carol")
    admin = yield login_admin(server, "dana")
    ok((yield admin.request({"create_channel": "secret", "private": True})))
    for client in (alice, bob):
        ok((yield client.request({"join": "general"})))
    first = ok((yield alice.request({"channel_message": "The release notes are out",
                                     "channel": "general"})))
    ok((yield alice.request({"channel_message": "notes from the meeting", "channel": "general"})))
    ok((yield admin.request({"channel_message": "release notes draft, private",
                             "channel": "secret"})))
    ok((yield bob.request({"private_message": "RELEASE notes for you", "other_user": "alice"})))
    ok((yield bob.request({"private_message": "release notes, not for alice",
                           "other_user": "carol"})))

    found = yield alice.request({"search": "release notes", "user": "alice"})
    assert texts(found) == ["RELEASE notes for you", "The release notes are out"]
    newest, oldest = found["messages"]
    assert set(newest) == {"private_message", "user", "other_user", "id", "time"}
    assert (oldest["channel"], oldest["id"], oldest["user"]) == ("general", first["id"], "alice")

    only_general = yield alice.request({"search": "notes", "channel": "#general"})
    assert texts(only_general) == ["notes from the meeting", "The release notes are out"]
    with_bob = yield alice.request({"search": "notes", "other_user": "bob"})
    assert texts(with_bob) == ["RELEASE notes for you"]
    older = yield alice.request({"search": "notes", "channel": "general", "before": first["id"] + 1,
                                 "limit": 5})
    assert texts(older) == ["The release notes are out"]
    assert texts((yield alice.request({"search": "notes", "limit": 1}))) == [
        "RELEASE notes for you"]

    # Carol is in no channel: only her private conversation; nobody sees the private channel.
    assert texts((yield carol.request({"search": "release notes"}))) == [
        "release notes, not for alice"]
    assert "private" in error((yield alice.request({"search": "notes", "channel": "secret"})))
    assert "not a member" in error((yield carol.request({"search": "notes",
                                                          "channel": "general"})))
    assert texts((yield admin.request({"search": "draft"}))) == ["release notes draft, private"]
    assert "one word" in error((yield alice.request({"search": " ?! "})))
    assert "3 letters" in error((yield alice.request({"search": "to be"})))
    assert texts((yield alice.request({"search": "out of notes"}))) == [
        "The release notes are out"]                    # "of" is left out
    assert "limit" in error((yield alice.request({"search": "notes", "limit": 0})))


@defer.inlineCallbacks
def test_search_follows_edits_and_never_shows_a_deleted_text(server):
    alice = yield login(server, "alice")
    ok((yield alice.request({"join": "general"})))
    sent = ok((yield alice.request({"channel_message": "launch codes 1234",
                                    "channel": "general"})))
    assert texts((yield alice.request({"search": "codes"}))) == ["launch codes 1234"]
    ok((yield alice.request({"edit_message": "launch party at noon", "id": sent["id"]})))
    assert texts((yield alice.request({"search": "codes"}))) == []
    (found,) = ok((yield alice.request({"search": "party"})))["messages"]
    assert found["channel_message"] == "launch party at noon" and "edited" in found
    ok((yield alice.request({"delete_message": sent["id"]})))
    assert texts((yield alice.request({"search": "launch"}))) == []
    # The admins' log still has it.
    admin = yield login_admin(server, "dana")
    log = ok((yield admin.request({"log": "", "sender": "alice"})))
    assert log["messages"][0]["channel_message"] == "launch party at noon"


# -- SQLite: the index file, written off the message path ------------------------------


@defer.inlineCallbacks
def test_sqlite_messages_are_acknowledged_while_the_search_index_is_locked(sqlite_database):
    """Another writer holding the index file's lock holds up searches, never messages."""
    server = start_server(sqlite_database, **LIMITS_LIFTED)
    try:
        yield search_while_the_index_is_locked(server)
    finally:
        stop_server(server)


@defer.inlineCallbacks
def search_while_the_index_is_locked(server):
    alice = yield login(server, "alice")
    ok((yield alice.request({"join": "general"})))
    holder = sqlite3.connect(SqliteEngine(server.config.database.split(":", 1)[1])
                             .search_index_path(),
                             isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        for i in range(20):
            ok((yield alice.request({"channel_message": f"sent while locked {i}",
                                     "channel": "general"})))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    found = yield alice.request({"search": "locked", "limit": 50})
    assert texts(found) == [f"sent while locked {i}" for i in reversed(range(20))]


def message(body, id=None):
    return Message(id, "alice", body, utcnow(), channel="general", channel_id=1)


@defer.inlineCallbacks
def found(store, word):
    page, more_before = yield store.search("alice", [word], [1])
    assert more_before is None
    return [m.body for m in page]


def remove_index(db):
    for suffix in ("", "-wal", "-shm"):
        Path(SqliteEngine(db).search_index_path() + suffix).unlink(missing_ok=True)


@defer.inlineCallbacks
def test_sqlite_the_index_rebuilds_itself_when_gone_or_ahead_of_the_database(tmp_path):
    db = str(tmp_path / "chatd.sqlite")
    store = Store(SqliteEngine(db), max_queued=100)
    yield store.start()
    for word in ("apricot", "banana", "cherry"):
        yield store.save_message(message(f"{word} jam"))
    assert (yield found(store, "jam")) == ["cherry jam", "banana jam", "apricot jam"]
    yield store.stop()

    remove_index(db)            # an index lost: it is made again from the messages
    store = Store(SqliteEngine(db), max_queued=100)
    yield store.start()
    assert (yield found(store, "jam")) == ["cherry jam", "banana jam", "apricot jam"]
    yield store.stop()

    # The database started over (or restored from an older backup), the index kept: its
    # entries name ids that now are other messages, so it starts over too.
    for suffix in ("", "-wal", "-shm"):
        Path(db + suffix).unlink(missing_ok=True)
    store = Store(SqliteEngine(db), max_queued=100)
    yield store.start()
    try:
        yield store.save_message(message("durian pie"))
        assert (yield found(store, "apricot")) == []
        assert (yield found(store, "durian")) == ["durian pie"]
    finally:
        yield store.stop()


@defer.inlineCallbacks
def test_a_message_stored_below_what_is_indexed_is_indexed_too(database):
    """A spool replayed into ids below the index's high-water mark (another process
    committed past its block meanwhile) is found: the replay marks its rows pending."""
    store = Store(engine_from_url(database), max_queued=100)
    yield store.start()
    try:
        saved = []
        for word in ("apricot", "banana", "cherry"):
            saved.append((yield store.save_message(message(f"{word} jam")))[0])
        yield store.execute("DELETE FROM messages WHERE id = ?", (saved[1].id,))
        assert (yield found(store, "jam")) == ["cherry jam", "apricot jam"]
        yield store.run("replay spool", store.messages._insert_spooled,
                        [message("late arrival", id=saved[1].id).row()])
        assert (yield found(store, "arrival")) == ["late arrival"]
        assert (yield found(store, "jam")) == ["cherry jam", "apricot jam"]
    finally:
        yield store.stop()


@defer.inlineCallbacks
def test_a_message_edited_twice_between_passes_is_found_by_its_last_text(database):
    """Both edits wait in search_pending; the pass indexes the message once, as it is now."""
    store = Store(engine_from_url(database), max_queued=100)
    yield store.start()
    try:
        sent, _ = yield store.save_message(message("apricot jam"))
        assert (yield found(store, "apricot")) == ["apricot jam"]      # indexed
        store.search_index.loop.stop()      # no pass between the two edits
        for text in ("banana jam", "cherry jam"):
            assert (yield store.edit_message(sent.id, "alice", text, utcnow()))
        assert (yield found(store, "cherry")) == ["cherry jam"]
        assert (yield found(store, "banana")) == [] and (yield found(store, "apricot")) == []
    finally:
        yield store.stop()


def fill(store, bodies, channel_id, first_id):
    """Write messages straight into SQL, as a busy past would have left them."""
    now = db_time(utcnow())
    return store.run("fill", lambda cursor: cursor.executemany(
        "INSERT INTO messages (id, sender, channel_id, body, sent_at) VALUES (?, ?, ?, ?, ?)",
        [(first_id + i, "bob", channel_id, body, now) for i, body in enumerate(bodies)]))


@defer.inlineCallbacks
def test_a_search_looks_at_a_bounded_number_of_matches_and_says_where_to_go_on(database):
    """A common word in a channel alice may not read: each request looks at SEARCH_SCAN
    candidates at most, says where to go on (more_before), and paging finds her own
    matches, older than all of those, once each. Two words find the rare one's message
    at once, however common the other."""
    store = Store(engine_from_url(database), max_queued=100)
    yield store.start()
    try:
        yield store.execute("INSERT INTO channels (name, private, created_at) VALUES"
                            " ('elsewhere', 0, ?)", (db_time(utcnow()),))
        elsewhere = (yield store.query("SELECT id FROM channels WHERE name = 'elsewhere'"))[0][0]
        yield fill(store, ["common zebra", "common word", "common word again"], 1, 1)
        yield fill(store, [f"common {i}" for i in range(SEARCH_SCAN + 500)], elsewhere, 10)
        yield store.execute("UPDATE message_ids SET next_id = ?", (SEARCH_SCAN + 1000,))

        pages, seen, before = 0, [], None
        while True:
            page, before = yield store.search("alice", ["common"], [1], before=before)
            pages += 1
            seen += [m.body for m in page]
            if before is None:
                break
        assert seen == ["common word again", "common word", "common zebra"]
        assert pages >= 2
        page, more_before = yield store.search("alice", ["common", "zebra"], [1])
        assert ([m.body for m in page], more_before) == (["common zebra"], None)
        # A full page says where the next one starts: below its last message.
        page, more_before = [], None
        while not page:
            page, more_before = yield store.search("alice", ["common"], [1], before=more_before,
                                                   limit=2)
        assert [m.body for m in page] == ["common word again", "common word"]
        assert more_before == page[-1].id
    finally:
        yield store.stop()


@defer.inlineCallbacks
def test_mysql_two_nodes_index_each_others_messages_taking_turns(mysql_url):
    """Every node runs the pass on the one word table: each finds what the other stored,
    and passes racing for the same rows fail nothing."""
    database = mysql_url
    a = Store(engine_from_url(database), max_queued=100, node="a")
    b = Store(engine_from_url(database), max_queued=100, node="b")
    yield a.start()
    yield b.start()
    try:
        for i in range(30):
            yield defer.gatherResults([a.save_message(message(f"apricot from a {i}")),
                                       b.save_message(message(f"banana from b {i}"))])
        yield defer.gatherResults([a.search_index.index(), b.search_index.index()])
        assert len((yield found(a, "banana"))) == 30
        assert len((yield found(b, "apricot"))) == 30
        rows = yield a.query("SELECT COUNT(*) FROM message_words WHERE word = 'from'")
        assert rows[0][0] == 60
    finally:
        yield a.stop()
        yield b.stop()


@defer.inlineCallbacks
def test_mysql_messages_stored_before_the_word_index_are_found_after_the_upgrade(mysql_url):
    """Schema 008 replaces the FULLTEXT index: what was stored before it is indexed by
    the first start after the upgrade."""
    database = mysql_url
    engine = engine_from_url(database)
    old = Store(engine, max_queued=100)
    old.pool = engine.make_pool()
    try:
        yield old.upgrade_schema([m for m in engine.migrations() if m[0] <= 7])
        yield fill(old, ["Crème brûlée for dessert", "dessert first"], 1, 1)
        yield old.execute("UPDATE message_ids SET next_id = 3")
    finally:
        old.pool.close()
    store = Store(engine_from_url(database), max_queued=100)
    yield store.start()
    try:
        assert (yield found(store, "dessert")) == ["dessert first", "Crème brûlée for dessert"]
        assert (yield found(store, "CREME")) == ["Crème brûlée for dessert"]
    finally:
        yield store.stop()
