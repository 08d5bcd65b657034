"""Every SQL statement chatd runs, over twisted.enterprise.adbapi.

Every public method returns a Deferred; nothing here blocks the reactor. The
message log is written by a batching writer: the relay never waits for it, ids
are allocated in memory so a relayed message already carries its final id, and
a failed batch is retried (INSERT-or-ignore on the id keeps it exactly once).
While the database stays away, rows beyond a memory bound go to a spool file,
written back first (so in order) once it returns, or at the next start.
"""

import json
import os
import re
from collections import deque
from datetime import datetime, timezone
from pathlib import Path

from twisted.internet import defer
from twisted.logger import Logger

from chatd.engines import SCHEMA_DIR

log = Logger()


def utcnow():
    return datetime.now(timezone.utc).replace(tzinfo=None)


def db_time(dt):
    """The one textual time format both engines accept and sort correctly."""
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def wire_time(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_db_time(value):
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def peer_key(a, b):
    """The key of the private conversation between two users, whatever the order."""
    return "|".join(sorted((a.casefold(), b.casefold())))


class Message:
    """One channel or private message, as relayed and as logged."""

    __slots__ = ("id", "sender", "body", "time", "channel", "channel_id", "recipient")

    def __init__(self, id, sender, body, time, channel=None, channel_id=None, recipient=None):
        self.id, self.sender, self.body, self.time = id, sender, body, time
        self.channel, self.channel_id, self.recipient = channel, channel_id, recipient

    def to_wire(self):
        if self.channel is not None:
            return {"channel_message": self.body, "user": self.sender,
                    "channel": self.channel, "id": self.id, "time": wire_time(self.time)}
        return {"private_message": self.body, "user": self.sender,
                "other_user": self.recipient, "id": self.id, "time": wire_time(self.time)}

    def row(self):
        key = None if self.recipient is None else peer_key(self.sender, self.recipient)
        return (self.id, self.sender, self.channel_id, self.recipient, key,
                self.body, db_time(self.time))


class DatabaseUnavailable(Exception):
    """The database did not answer in time; the request can be tried again later."""


class Spool:
    """An append-only JSON-lines file of log rows waiting for the database, oldest first.

    Rows are read back from `_offset` in batches; a batch counts as consumed only
    once its commit succeeded, and the file is removed when everything in it is
    consumed. After a crash the whole file is replayed: the rows carry their
    final ids, so rows that were already written are skipped by INSERT-or-ignore.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._offset = 0
        self.unread = 0
        self.max_id = 0
        if self.path.exists():
            self._recover()

    def _recover(self):
        """Count what a previous run left, and drop a half-written last line."""
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            complete = data[:data.rfind(b"\n") + 1]
            log.warn("spool {path}: dropping a half-written last line ({size} bytes)",
                     path=str(self.path), size=len(data) - len(complete))
            with self.path.open("r+b") as f:
                f.truncate(len(complete))
            data = complete
        for line in data.splitlines():
            row = self._decode(line)
            if row is not None:
                self.unread += 1
                self.max_id = max(self.max_id, row[0])
        if self.unread:
            log.info("spool {path}: {count} log rows from an earlier run wait for the database",
                     path=str(self.path), count=self.unread)

    def _decode(self, line):
        try:
            row = json.loads(line)
        except ValueError:
            log.error("spool {path}: skipping an unreadable line: {line!r}",
                      path=str(self.path), line=line[:200])
            return None
        return tuple(row)

    def append(self, rows):
        """Append rows and make them durable (fsync) before returning."""
        with self.path.open("ab") as f:
            for row in rows:
                f.write(json.dumps(row, separators=(",", ":")).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.unread += len(rows)
        self.max_id = max([self.max_id] + [row[0] for row in rows])

    def read(self, count):
        """Up to `count` rows from the oldest unconsumed one: (rows, lines read, end offset)."""
        rows, lines = [], 0
        with self.path.open("rb") as f:
            f.seek(self._offset)
            while lines < count:
                line = f.readline()
                if not line:
                    break
                lines += 1
                row = self._decode(line)
                if row is not None:
                    rows.append(row)
            return rows, lines, f.tell()

    def consume(self, lines, end):
        """The rows before `end` are committed; remove the file once all are."""
        self._offset = end
        self.unread = max(self.unread - lines, 0)
        if self._offset >= self.path.stat().st_size:
            self.path.unlink()
            self._offset = 0
            self.unread = 0
            log.info("spool {path}: every spooled row is written; file removed",
                     path=str(self.path))


class BatchWriter:
    """Writes rows in batches, in order, retrying with backoff when the database fails.

    Rows wait in memory until written; `pending` is what is in memory and not yet
    in SQL, so history can still show it. With a spool, at most `memory_limit`
    rows stay in memory: older ones move to the spool file, which is always
    written before memory, so the order is kept. `drained()` fires once
    everything queued (memory and spool) is written.
    """

    def __init__(self, store, sql, batch_size=500, spool=None, memory_limit=None):
        self.store = store
        self.sql = sql
        self.batch_size = batch_size
        self.spool = spool
        self.memory_limit = memory_limit
        self.pending = deque()
        self._writing = False
        self._in_flight_from_memory = False
        self._stopped = False
        self._retry_delay = 0.1
        self._retry_call = None
        self._drain_waiters = []

    def add(self, item):
        self.pending.append(item)
        self._spill_overflow()
        self.kick()

    def kick(self):
        """Start writing if idle and there is something to write."""
        if self._stopped or self._writing or self._retry_call is not None:
            return
        if self.pending or self._spooled():
            self._writing = True
            self.store.clock.callLater(0, self._write_batch)

    def _spooled(self):
        return self.spool is not None and self.spool.unread > 0

    def drained(self):
        if not self.pending and not self._spooled() and not self._writing:
            return defer.succeed(None)
        d = defer.Deferred()
        self._drain_waiters.append(d)
        return d

    def _spill_overflow(self):
        """Move the oldest rows over the memory bound to the spool (down to 3/4 of it).

        Not while a batch taken from memory is being written: that batch is the
        head of `pending`, and the spool must only ever hold rows older than memory.
        """
        if (self.spool is None or self._in_flight_from_memory
                or len(self.pending) <= self.memory_limit):
            return
        count = len(self.pending) - self.memory_limit * 3 // 4
        self.spill(count)

    def spill(self, count):
        rows = [self._row(self.pending.popleft()) for _ in range(count)]
        self.spool.append(rows)
        log.warn("log writes are failing: {count} rows moved to the spool {path}"
                 " ({spooled} spooled in all)",
                 count=count, path=str(self.spool.path), spooled=self.spool.unread)

    @staticmethod
    def _row(item):
        return item.row() if hasattr(item, "row") else item

    def _write_batch(self):
        self._retry_call = None
        if self._stopped:
            self._writing = False
            return
        if not self.pending and not self._spooled():
            self._writing = False
            waiters, self._drain_waiters = self._drain_waiters, []
            for d in waiters:
                d.callback(None)
            return
        self._writing = True
        if self._spooled():
            rows, lines, end = self.spool.read(self.batch_size)
            source = ("spool", lines, end)
        else:
            count = min(self.batch_size, len(self.pending))
            rows = [self._row(self.pending[i]) for i in range(count)]
            source = ("memory", count, None)
            self._in_flight_from_memory = True
        d = self.store.run_many(self.sql, rows) if rows else defer.succeed(None)
        d.addCallbacks(self._written, self._failed, callbackArgs=(source,))

    def _written(self, _, source):
        self._in_flight_from_memory = False
        if self._stopped:
            return  # stop() already spooled what was in memory; a replay is harmless
        kind, count, end = source
        if kind == "spool":
            self.spool.consume(count, end)
        else:
            for _ in range(count):
                self.pending.popleft()
        self._retry_delay = 0.1
        self._spill_overflow()
        self._write_batch()

    def _failed(self, failure):
        self._in_flight_from_memory = False
        self._writing = False
        if self._stopped:
            return
        log.warn("log write failed ({count} rows in memory, {spooled} spooled),"
                 " retrying in {delay}s: {error}",
                 count=len(self.pending), spooled=self.spool.unread if self.spool else 0,
                 delay=self._retry_delay, error=failure.getErrorMessage())
        self._spill_overflow()
        self._retry_call = self.store.clock.callLater(self._retry_delay, self._write_batch)
        self._retry_delay = min(self._retry_delay * 2, 5.0)

    @defer.inlineCallbacks
    def stop(self, timeout):
        """Wait up to `timeout` seconds for everything to be written, then stop writing.

        What is still in memory then goes to the spool (if there is one) and is
        written at the next start; without a spool it is reported as lost.
        """
        drained = self.drained()
        drained.addTimeout(timeout, self.store.clock)
        try:
            yield drained
        except defer.TimeoutError:
            pass
        self._stopped = True
        if self._retry_call is not None:
            self._retry_call.cancel()
            self._retry_call = None
        if not self.pending:
            return
        if self.spool is not None:
            self.spill(len(self.pending))
            log.warn("stopping with the database unreachable: {count} log rows are kept"
                     " in {path} and will be written at the next start",
                     count=self.spool.unread, path=str(self.spool.path))
        else:
            log.error("stopping with the database unreachable: {count} rows not written"
                      " ({sql})", count=len(self.pending), sql=self.sql.split("(")[0])


class Store:
    """The SQL API. `spool_path`/`spool_memory` bound what the message log keeps in
    memory while the database is unreachable (see BatchWriter); `reply_timeout`
    bounds how long a client request waits for the database; `shutdown_timeout`
    how long stop() waits for queued log rows before spooling them."""

    def __init__(self, engine, clock=None, spool_path=None, *, spool_memory,
                 reply_timeout=10.0, shutdown_timeout=5.0):
        if clock is None:
            from twisted.internet import reactor as clock
        self.engine = engine
        self.clock = clock
        self.pool = None
        self.reply_timeout = reply_timeout
        self.shutdown_timeout = shutdown_timeout
        self._next_message_id = None
        self.spool = None if spool_path is None else Spool(spool_path)
        self.messages = BatchWriter(self, engine.insert_ignore + (
            " INTO messages (id, sender, channel_id, recipient, peer_key, body, sent_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"), spool=self.spool, memory_limit=spool_memory)
        self.auth_events = BatchWriter(self, "INSERT INTO auth_log (user_name, event, ip, at)"
                                             " VALUES (?, ?, ?, ?)")

    # -- lifecycle ---------------------------------------------------------

    @defer.inlineCallbacks
    def start(self):
        self.pool = self.engine.make_pool()
        version = yield self.pool.runInteraction(self._upgrade_schema)
        log.info("database {db} at schema version {version}",
                 db=self.engine.describe(), version=version)
        rows = yield self.query("SELECT MAX(id) FROM messages")
        spooled_max = self.spool.max_id if self.spool is not None else 0
        # Spooled rows from an earlier run already own their ids.
        self._next_message_id = max(rows[0][0] or 0, spooled_max) + 1
        self.messages.kick()

    @defer.inlineCallbacks
    def stop(self):
        """Write everything still queued (or spool it if the database is away), then close."""
        yield defer.gatherResults([self.messages.stop(self.shutdown_timeout),
                                   self.auth_events.stop(self.shutdown_timeout)],
                                  consumeErrors=True)
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def answer_in_time(self, d):
        """Bound a client-facing query: DatabaseUnavailable after `reply_timeout` seconds."""
        def timed_out(failure):
            failure.trap(defer.TimeoutError)
            raise DatabaseUnavailable(f"no answer from the database in {self.reply_timeout}s")
        return d.addTimeout(self.reply_timeout, self.clock).addErrback(timed_out)

    def is_unavailable(self, failure):
        """True if `failure` means the database cannot be reached (not a bug, not bad input)."""
        from twisted.enterprise.adbapi import ConnectionLost
        error = failure.value
        return (isinstance(error, (DatabaseUnavailable, ConnectionLost))
                or self.engine.is_connection_error(error))

    def _upgrade_schema(self, cursor):
        """Apply schema/<engine>/NNN_*.sql files newer than the recorded version."""
        engine = self.engine
        cursor.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        cursor.execute("SELECT MAX(version) FROM schema_version")
        current = cursor.fetchone()[0] or 0
        for path in sorted((SCHEMA_DIR / engine.name).glob("[0-9][0-9][0-9]_*.sql")):
            version = int(re.match(r"\d+", path.name).group())
            if version <= current:
                continue
            for statement in engine.split_statements(path.read_text()):
                cursor.execute(statement)
            cursor.execute(engine.convert("INSERT INTO schema_version (version) VALUES (?)"),
                           (version,))
            current = version
        return current

    # -- helpers -----------------------------------------------------------

    def query(self, sql, params=()):
        return self.pool.runQuery(self.engine.convert(sql), params)

    def execute(self, sql, params=()):
        return self.pool.runOperation(self.engine.convert(sql), params)

    def run_many(self, sql, rows):
        sql = self.engine.convert(sql)
        return self.pool.runInteraction(lambda cursor: cursor.executemany(sql, rows))

    def interaction(self, function, *args):
        return self.pool.runInteraction(function, *args)

    # -- users -------------------------------------------------------------

    def create_user(self, name, email, password_hash, role="user"):
        """Fails with the engine's IntegrityError if the name (in any case) is taken."""
        return self.answer_in_time(self.execute(
            "INSERT INTO users (name, email, password_hash, role, created_at) VALUES (?, ?, ?, ?, ?)",
            (name, email, password_hash, role, db_time(utcnow()))))

    @defer.inlineCallbacks
    def get_user(self, name):
        """(name as registered, password hash, role), or None."""
        sql = "SELECT name, password_hash, role FROM users WHERE name = ?"
        try:
            rows = yield self.answer_in_time(self.query(sql, (name,)))
        except Exception as e:
            # After an outage a pooled connection may still be the dead one; adbapi
            # drops it on this failure, so one more try gets a fresh connection.
            if not self.engine.is_connection_error(e):
                raise
            rows = yield self.answer_in_time(self.query(sql, (name,)))
        return tuple(rows[0]) if rows else None

    def all_users(self):
        """[(name, role)] for every account: the hub keeps this directory in memory."""
        return self.query("SELECT name, role FROM users")

    def set_role(self, name, role):
        return self.execute("UPDATE users SET role = ? WHERE name = ?", (role, name))

    def log_auth(self, name, event, ip):
        """Record a login, failed login, logout or registration; the caller does not wait."""
        self.auth_events.add((name, event, ip, db_time(utcnow())))

    # -- channels ----------------------------------------------------------

    def all_channels(self):
        return self.query("SELECT id, name, private FROM channels ORDER BY name")

    def all_memberships(self):
        return self.query("SELECT channel_id, user_name FROM memberships")

    @defer.inlineCallbacks
    def create_channel(self, name, private, created_by):
        yield self.execute(
            "INSERT INTO channels (name, private, created_by, created_at) VALUES (?, ?, ?, ?)",
            (name, int(private), created_by, db_time(utcnow())))
        rows = yield self.query("SELECT id FROM channels WHERE name = ?", (name,))
        return rows[0][0]

    def delete_channel(self, channel_id):
        def delete(cursor):
            convert = self.engine.convert
            cursor.execute(convert("DELETE FROM memberships WHERE channel_id = ?"), (channel_id,))
            cursor.execute(convert("DELETE FROM channels WHERE id = ?"), (channel_id,))
        return self.interaction(delete)

    def add_member(self, channel_id, name):
        return self.execute(
            self.engine.insert_ignore +
            " INTO memberships (channel_id, user_name, joined_at) VALUES (?, ?, ?)",
            (channel_id, name, db_time(utcnow())))

    def remove_member(self, channel_id, name):
        return self.execute(
            "DELETE FROM memberships WHERE channel_id = ? AND user_name = ?", (channel_id, name))

    # -- messages ----------------------------------------------------------

    def new_message(self, sender, body, channel=None, channel_id=None, recipient=None):
        """Allocate the next id and queue the message for the log; returns at once."""
        message = Message(self._next_message_id, sender, body, utcnow(),
                          channel=channel, channel_id=channel_id, recipient=recipient)
        self._next_message_id += 1
        self.messages.add(message)
        return message

    @defer.inlineCallbacks
    def channel_history(self, channel, channel_id, before=None, limit=50):
        """Up to `limit` messages before id `before`, oldest first, and whether more exist."""
        # Taken before the query: a batch committed while it runs is then in one or the other.
        unwritten = [m for m in self.messages.pending if m.channel_id == channel_id]
        rows = yield self._history_rows("messages_by_channel", "channel_id = ?", channel_id,
                                        before, limit)
        stored = [Message(r[0], r[1], r[3], parse_db_time(r[4]), channel=channel,
                          channel_id=channel_id) for r in rows]
        return self._merge(stored, unwritten, before, limit)

    @defer.inlineCallbacks
    def private_history(self, user, other, before=None, limit=50):
        key = peer_key(user, other)
        unwritten = [m for m in self.messages.pending
                     if m.recipient is not None and peer_key(m.sender, m.recipient) == key]
        rows = yield self._history_rows("messages_by_peers", "peer_key = ?", key, before, limit)
        stored = [Message(r[0], r[1], r[3], parse_db_time(r[4]), recipient=r[2]) for r in rows]
        return self._merge(stored, unwritten, before, limit)

    def _history_rows(self, index, where, value, before, limit):
        params = [value]
        if before is not None:
            where += " AND id < ?"
            params.append(before)
        params.append(limit + 1)
        return self.query(f"SELECT id, sender, recipient, body, sent_at FROM messages"
                          f" {self.engine.use_index(index)}"
                          f" WHERE {where} ORDER BY id DESC LIMIT ?",
                          tuple(params))

    @staticmethod
    def _merge(stored, unwritten, before, limit):
        """Stored rows plus messages still waiting for the writer, newest `limit`, oldest first."""
        by_id = {m.id: m for m in stored}
        for m in unwritten:
            if before is None or m.id < before:
                by_id[m.id] = m
        newest_first = sorted(by_id.values(), key=lambda m: m.id, reverse=True)
        page = newest_first[:limit]
        page.reverse()
        return page, len(newest_first) > limit

    # -- moderation: join requests, bans, kicks, audit log, message log ------
    # (used by chatd/moderation.py; times are written with db_time, read with parse_db_time)

    def _insert_returning_id(self, sql, params):
        """Run one INSERT and fire with the new row's id."""
        def insert(cursor):
            cursor.execute(self.engine.convert(sql), params)
            return cursor.lastrowid
        return self.interaction(insert)

    _REQUEST_COLUMNS = ("SELECT r.id, c.name, r.user_name, r.status, r.requested_at,"
                        " r.decided_by, r.decided_at FROM join_requests r"
                        " JOIN channels c ON c.id = r.channel_id")

    def create_join_request(self, channel_id, name, at):
        return self._insert_returning_id(
            "INSERT INTO join_requests (channel_id, user_name, status, requested_at)"
            " VALUES (?, ?, 'pending', ?)", (channel_id, name, db_time(at)))

    def decide_join_request(self, request_id, status, decided_by, at):
        return self.execute(
            "UPDATE join_requests SET status = ?, decided_by = ?, decided_at = ? WHERE id = ?",
            (status, decided_by, db_time(at), request_id))

    def latest_join_requests(self):
        """The latest request of every (channel, user) pair, loaded once at start."""
        return self.query(
            self._REQUEST_COLUMNS + " WHERE r.id IN (SELECT MAX(id) FROM join_requests"
            " GROUP BY channel_id, user_name) ORDER BY r.id")

    def join_requests_of(self, name):
        return self.query(self._REQUEST_COLUMNS + " WHERE r.user_name = ? ORDER BY r.id DESC",
                          (name,))

    def pending_join_requests(self):
        return self.query(self._REQUEST_COLUMNS + " WHERE r.status = 'pending' ORDER BY r.id")

    def add_ban(self, kind, target, ip, reason, banned_by, banned_at, expires_at):
        return self._insert_returning_id(
            "INSERT INTO bans (kind, target, ip, reason, banned_by, banned_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (kind, target, ip, reason, banned_by, db_time(banned_at),
             None if expires_at is None else db_time(expires_at)))

    def lift_ban(self, ban_id, lifted_by, at):
        return self.execute("UPDATE bans SET lifted_by = ?, lifted_at = ? WHERE id = ?",
                            (lifted_by, db_time(at), ban_id))

    def active_bans(self, now):
        return self.query(
            "SELECT id, kind, target, ip, reason, banned_by, banned_at, expires_at FROM bans"
            " WHERE lifted_at IS NULL AND (expires_at IS NULL OR expires_at > ?) ORDER BY id",
            (db_time(now),))

    def add_kick(self, target, ip, reason, kicked_by, at):
        return self.execute(
            "INSERT INTO kicks (target, ip, reason, kicked_by, at) VALUES (?, ?, ?, ?, ?)",
            (target, ip, reason, kicked_by, db_time(at)))

    def audit(self, actor, action, target, reason, detail, at):
        return self.execute(
            "INSERT INTO audit_log (actor, action, target, reason, detail, at)"
            " VALUES (?, ?, ?, ?, ?, ?)", (actor, action, target, reason, detail, db_time(at)))

    def audit_entries(self, limit):
        return self.query(
            "SELECT id, actor, action, target, reason, detail, at FROM audit_log"
            " ORDER BY id DESC LIMIT ?", (limit,))

    @defer.inlineCallbacks
    def message_log(self, since, until, limit, sender=None, channel_id=None):
        """Rows (id, sender, channel_id, recipient, body, sent_at), newest `limit` in
        [since, until), oldest first; waits for the log writer so nothing is missing."""
        yield self.messages.drained()
        where, params = ["sent_at >= ?", "sent_at < ?"], [db_time(since), db_time(until)]
        if sender is not None:
            where.append("sender = ?")
            params.append(sender)
        if channel_id is not None:
            where.append("channel_id = ?")
            params.append(channel_id)
        rows = yield self.query(
            "SELECT id, sender, channel_id, recipient, body, sent_at FROM messages WHERE "
            + " AND ".join(where) + " ORDER BY id DESC LIMIT ?", tuple(params) + (limit,))
        return list(reversed(rows))
