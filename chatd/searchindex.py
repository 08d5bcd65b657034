"""SQLite's full-text index, kept in a file of its own and written off the message path.

Indexing a message in FTS5 inside its commit cost 20-36 us of CPU per message in
series with every commit (FTS5 writes a segment per transaction), a third of the
closed-loop relay rate. Here the index lives in `<stem>-search.sqlite` beside the
database: it has its own write lock, so a thread of its own indexes what was
committed since the last pass, up to BATCH messages per transaction (16 us per
message instead of 34), while the message log keeps committing.

What is indexed is tracked by a high-water mark: message ids increase in commit
order, so every message above the mark is new. The exceptions are written to
`search_pending` (in the chat database, by the same transaction that makes them):
an edit (its text changed) and a spooled message replayed into its reserved block
below ids already committed. A search first brings the index up to date, so it
finds what was acknowledged before it. The file holds nothing that cannot be
rebuilt: delete it and the next start indexes everything again.
"""

from twisted.enterprise import adbapi
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

BATCH = 1000            # messages indexed per transaction
PASS_BATCHES = 20       # transactions per pass: what a search waits for at most, twice
INTERVAL = 0.2          # seconds between passes while nothing asks for one


class SearchIndex:
    """The index file, its connection (which also reads the chat database, attached as
    `chat`, so a search runs there as one query) and the pass that keeps it current."""

    SCHEMA = ("CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5(body)",
              "CREATE TABLE IF NOT EXISTS search_marks"
              " (indexed_id INTEGER NOT NULL, pending_seq INTEGER NOT NULL)")

    def __init__(self, engine, clock):
        self.engine = engine
        self.path = engine.search_index_path()
        self.pool = adbapi.ConnectionPool(
            "sqlite3", self.path, check_same_thread=False, isolation_level=None,
            cp_min=1, cp_max=1, cp_openfun=self._on_connect)
        self.pending_done = 0   # search_pending rows indexed: the chat side may drop them
        self._pass = None       # the running pass
        self._waiters = []      # fired when the next pass ends
        self.loop = task.LoopingCall(self.index)
        self.loop.clock = clock

    def _on_connect(self, conn):
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")   # it can always be rebuilt
        conn.execute(f"PRAGMA busy_timeout={int(self.engine.busy_timeout * 1000)}")
        conn.execute("ATTACH DATABASE ? AS chat", (self.engine.path,))

    @defer.inlineCallbacks
    def start(self):
        yield self.pool.runWithConnection(self._prepare)
        self.loop.start(INTERVAL, now=True)

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
        """In the index's thread: batches of new messages and of pending ones."""
        for _ in range(PASS_BATCHES):
            conn.execute("BEGIN")   # deferred: IMMEDIATE would lock the chat database too
            try:
                mark, seq = conn.execute("SELECT indexed_id, pending_seq FROM search_marks"
                                         ).fetchone()
                rows = conn.execute("SELECT id, body FROM chat.messages WHERE id > ?"
                                    " ORDER BY id LIMIT ?", (mark, BATCH)).fetchall()
                conn.executemany("INSERT INTO messages_fts (rowid, body) VALUES (?, ?)", rows)
                mark = rows[-1][0] if rows else mark
                pending = conn.execute("SELECT seq, message_id FROM chat.search_pending"
                                       " WHERE seq > ? ORDER BY seq LIMIT ?",
                                       (seq, BATCH)).fetchall()
                # Once each (edited twice, a message is pending twice): FTS5 refuses a
                # second row with the same rowid, and the pass would fail forever.
                again = [(i,) for i in sorted({i for _, i in pending if i <= mark})]
                conn.executemany("DELETE FROM messages_fts WHERE rowid = ?", again)
                conn.executemany("INSERT INTO messages_fts (rowid, body)"
                                 " SELECT id, body FROM chat.messages WHERE id = ?", again)
                seq = pending[-1][0] if pending else seq
                if rows or pending:
                    conn.execute("UPDATE search_marks SET indexed_id = ?, pending_seq = ?",
                                 (mark, seq))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
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
        self.pool.close()
