"""The search index, written off the message path, for both engines.

Indexing a message inside its commit puts that work in series with every commit:
SQLite's FTS5 trigger cost a third of the closed-loop relay rate, and InnoDB
maintains a FULLTEXT index inside the commit too (and a search for a common word
then took 176-306 ms on 100,000 messages). Here a pass indexes what was committed
since the last one, up to BATCH messages per transaction, a moment later and
before each search, while the message log keeps committing:

- SQLite (`Fts5Index`): an FTS5 table in `<stem>-search.sqlite` beside the
  database, with its own write lock (16 us per message in batches instead of 34
  in the commit). The file holds nothing that cannot be rebuilt: delete it and
  the next start indexes everything again.
- MariaDB (`WordIndex`): one row (word, message id) per distinct word of a
  message in `message_words`, in the chat database; a search walks the rarest
  word's rows newest first and checks the other words by key. Every node of a
  cluster runs the pass; the marks row, locked for the pass, makes them take
  turns, and every write is idempotent.

What is indexed is tracked by a high-water mark: message ids increase in commit
order (the `message_ids` row is locked until the commit), so every message above
the mark is new. The exceptions are written to `search_pending` (in the chat
database, by the same transaction that makes them): an edit (its text changed)
and a spooled message replayed into its reserved block below ids already
committed. A search first brings the index up to date, so it finds what was
acknowledged before it.

A search looks at SEARCH_SCAN candidates at most (the newest matches on SQLite,
the rarest word's newest rows on MariaDB), so a search for a common word in
conversations the user mostly may not read stays bounded; the reply then says
where to go on from (`more_before`).
"""

from twisted.enterprise import adbapi
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.rules import indexed_words, word_key

log = Logger()

BATCH = 1000            # messages indexed per transaction
PASS_BATCHES = 20       # transactions per pass: what a search waits for at most, twice
INTERVAL = 0.2          # seconds between passes while nothing asks for one
SEARCH_SCAN = 5000      # candidates one search request looks at, at most


def search_index_for(engine, clock, pool):
    """The index for `engine`; `pool` is the store's general pool (MariaDB uses it)."""
    if engine.name == "sqlite":
        return Fts5Index(engine, clock)
    return WordIndex(engine, clock, pool)


class SearchIndex:
    """The pass that keeps an index current, and what a search asks of the index.

    Subclasses give the pool, `chat` (how that pool names the chat database's
    tables) and the dialect: `_begin`, `_add`, `_remove`, `candidates`."""

    chat = ""
    lock_marks = ""     # how the pass locks the marks row for itself

    def __init__(self, engine, clock, pool):
        self.engine = engine
        self.pool = pool        # where passes and searches run
        self.pending_done = 0   # search_pending rows indexed: the chat side may drop them
        self._pass = None       # the running pass
        self._waiters = []      # fired when the next pass ends
        self.loop = task.LoopingCall(self.index)
        self.loop.clock = clock

    @defer.inlineCallbacks
    def start(self):
        yield self.pool.runWithConnection(self._prepare)
        self.loop.start(INTERVAL, now=True)

    def _prepare(self, conn):
        cursor = self.engine.cursor(conn)
        cursor.execute("SELECT pending_seq FROM search_marks")
        self.pending_done = cursor.fetchone()[0]
        conn.commit()

    # -- the pass ------------------------------------------------------------

    def index(self):
        """Index what was committed before this call (up to PASS_BATCHES transactions
        of it: a long backlog, after an upgrade, is left to the following passes);
        fires when that is done. A pass already running may have read before the
        caller's commit, so the call waits for the next one."""
        d = defer.Deferred()
        self._waiters.append(d)
        if self._pass is None:
            self._start_pass()
        return d

    def _start_pass(self):
        waiters, self._waiters = self._waiters, []
        self._pass = self.pool.runWithConnection(self._index)
        self._pass.addBoth(self._pass_done, waiters)

    def _pass_done(self, result, waiters):
        self._pass = None
        if isinstance(result, Failure):
            log.warn("search index: {error}", error=result.getErrorMessage())
        else:
            self.pending_done = result
        for d in waiters:
            d.callback(None)    # a failed pass leaves the index as it was: search it
        if self._waiters:
            self._start_pass()

    def _index(self, conn):
        """In a pool thread: batches of new messages and of pending ones."""
        for _ in range(PASS_BATCHES):
            cursor = self.engine.cursor(conn)
            self._begin(cursor)
            try:
                cursor.execute("SELECT indexed_id, pending_seq FROM search_marks"
                               + self.lock_marks)
                mark, seq = cursor.fetchone()
                cursor.execute(f"SELECT id, body FROM {self.chat}messages WHERE id > ?"
                               " ORDER BY id LIMIT ?", (mark, BATCH))
                rows = cursor.fetchall()
                self._add(cursor, rows)
                mark = rows[-1][0] if rows else mark
                cursor.execute(f"SELECT seq, message_id FROM {self.chat}search_pending"
                               " WHERE seq > ? ORDER BY seq LIMIT ?", (seq, BATCH))
                pending = cursor.fetchall()
                # Once each: edited twice, a message is pending twice (and FTS5 refuses
                # a second row with the same rowid: the pass would fail forever).
                again = sorted({i for _, i in pending if i <= mark})
                if again:
                    self._remove(cursor, again)
                    cursor.execute(f"SELECT id, body FROM {self.chat}messages WHERE id IN"
                                   f" ({', '.join('?' * len(again))})", tuple(again))
                    self._add(cursor, cursor.fetchall())
                seq = pending[-1][0] if pending else seq
                if rows or pending:
                    cursor.execute("UPDATE search_marks SET indexed_id = ?, pending_seq = ?",
                                   (mark, seq))
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            if len(rows) < BATCH and len(pending) < BATCH:
                break
        return seq

    # -- the chat database's side -----------------------------------------------

    def reindex_later(self, cursor, message_ids):
        """In the transaction that changes them (an edit, a replay): index these again,
        and forget the pending rows the index has done."""
        cursor.execute("DELETE FROM search_pending WHERE seq <= ?", (self.pending_done,))
        cursor.executemany("INSERT INTO search_pending (message_id) VALUES (?)",
                           [(i,) for i in message_ids])

    @defer.inlineCallbacks
    def stop(self):
        if self.loop.running:
            self.loop.stop()
        while self._pass is not None:
            yield self._pass

    # -- the dialect ---------------------------------------------------------------

    def _begin(self, cursor):
        """Open the pass's transaction where the driver does not."""

    def _add(self, cursor, rows):
        """Index [(id, body)]."""
        raise NotImplementedError

    def _remove(self, cursor, message_ids):
        raise NotImplementedError

    def scan(self, cursor, words):
        """How to walk the messages that may have every word, newest first: (FROM
        clause of the index, its message id column, the condition that picks the
        word(s), its parameters, [conditions on `m`, the messages row, that the
        others must meet], their parameters, whether at most SEARCH_SCAN rows match
        the condition anyway); None if none can match."""
        raise NotImplementedError


class Fts5Index(SearchIndex):
    """SQLite: FTS5 in a file of its own; its connection has the chat database attached
    as `chat`, so a search runs there as one query."""

    chat = "chat."
    SCHEMA = ("CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(body)",
              "CREATE TABLE IF NOT EXISTS search_marks"
              " (indexed_id INTEGER NOT NULL, pending_seq INTEGER NOT NULL)")

    def __init__(self, engine, clock):
        super().__init__(engine, clock, adbapi.ConnectionPool(
            "sqlite3", engine.search_index_path(), check_same_thread=False,
            isolation_level=None, cp_min=1, cp_max=1, cp_openfun=self._on_connect))

    def _on_connect(self, conn):
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")   # it can always be rebuilt
        conn.execute(f"PRAGMA busy_timeout={int(self.engine.busy_timeout * 1000)}")
        conn.execute("ATTACH DATABASE ? AS chat", (self.engine.path,))

    def _prepare(self, conn):
        """Create the index, or start it over if it is ahead of the database (a file
        restored from an older backup, or the index of another database)."""
        for statement in self.SCHEMA:
            conn.execute(statement)
        mark = conn.execute("SELECT indexed_id, pending_seq FROM search_marks").fetchone()
        top = conn.execute("SELECT MAX(id) FROM chat.messages").fetchone()[0] or 0
        if mark is None or mark[0] > top:
            conn.execute("BEGIN")
            conn.execute("DELETE FROM messages_fts")
            conn.execute("DELETE FROM search_marks")
            conn.execute("INSERT INTO search_marks VALUES (0, 0)")
            conn.execute("COMMIT")
        else:
            self.pending_done = mark[1]

    def _begin(self, cursor):
        cursor.execute("BEGIN")   # deferred: IMMEDIATE would lock the chat database too

    def _add(self, cursor, rows):
        cursor.executemany("INSERT INTO messages_fts (rowid, body) VALUES (?, ?)", rows)

    def _remove(self, cursor, message_ids):
        cursor.executemany("DELETE FROM messages_fts WHERE rowid = ?",
                           [(i,) for i in message_ids])

    def scan(self, cursor, words):
        query = " ".join('"' + word.replace('"', '""') + '"' for word in words)
        return "messages_fts f", "f.rowid", "messages_fts MATCH ?", (query,), [], (), False

    @defer.inlineCallbacks
    def stop(self):
        yield super().stop()
        self.pool.close()


class WordIndex(SearchIndex):
    """MariaDB: a row per (word, message) in `message_words` (schema 008)."""

    lock_marks = " FOR UPDATE"  # one node's pass at a time

    def _add(self, cursor, rows):
        cursor.executemany("INSERT IGNORE INTO message_words (word, message_id) VALUES (?, ?)",
                           [(word, id) for id, body in rows for word in indexed_words(body)])

    def _remove(self, cursor, message_ids):
        cursor.execute("DELETE FROM message_words WHERE message_id IN"
                       f" ({', '.join('?' * len(message_ids))})", tuple(message_ids))

    def scan(self, cursor, words):
        """The rarest word's rows (counted up to SEARCH_SCAN + 1, on its key alone) are
        walked; the other words are checked on each."""
        counts = {}
        for key in sorted({word_key(w) for w in words}):
            cursor.execute("SELECT COUNT(*) FROM (SELECT 1 FROM message_words WHERE word = ?"
                           " LIMIT ?) w", (key, SEARCH_SCAN + 1))
            counts[key] = cursor.fetchone()[0]
        rarest = min(counts, key=counts.get)
        if not counts[rarest]:
            return None
        others = [key for key in counts if key != rarest]
        return ("message_words w", "w.message_id", "w.word = ?", (rarest,),
                ["EXISTS (SELECT 1 FROM message_words o WHERE o.word = ?"
                 " AND o.message_id = m.id)"] * len(others), tuple(others),
                counts[rarest] <= SEARCH_SCAN)
