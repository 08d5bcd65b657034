"""Every SQL statement chatd runs, over twisted.enterprise.adbapi.

Every public method returns a Deferred; nothing here blocks the reactor. The
message log is written by a batching writer: the relay never waits for it, ids
are allocated in memory so a relayed message already carries its final id, and
a failed batch is retried (INSERT-or-ignore on the id keeps it exactly once).
"""

import re
from collections import deque
from datetime import datetime, timezone

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


class BatchWriter:
    """Writes rows in batches, in order, retrying with backoff when the database fails.

    Rows wait in memory until written; `pending` is what is not yet in SQL, so
    history can still show it. `drained()` fires once everything queued is written.
    """

    def __init__(self, store, sql, batch_size=500):
        self.store = store
        self.sql = sql
        self.batch_size = batch_size
        self.pending = deque()
        self._writing = False
        self._retry_delay = 0.1
        self._retry_call = None
        self._drain_waiters = []

    def add(self, item):
        self.pending.append(item)
        if not self._writing and self._retry_call is None:
            self._writing = True
            self.store.clock.callLater(0, self._write_batch)

    def drained(self):
        if not self.pending and not self._writing:
            return defer.succeed(None)
        d = defer.Deferred()
        self._drain_waiters.append(d)
        return d

    def _write_batch(self):
        self._retry_call = None
        if not self.pending:
            self._writing = False
            waiters, self._drain_waiters = self._drain_waiters, []
            for d in waiters:
                d.callback(None)
            return
        self._writing = True
        batch = [self.pending[i] for i in range(min(self.batch_size, len(self.pending)))]
        rows = [item.row() if hasattr(item, "row") else item for item in batch]
        d = self.store.run_many(self.sql, rows)
        d.addCallbacks(self._written, self._failed, callbackArgs=(len(batch),))

    def _written(self, _, count):
        for _ in range(count):
            self.pending.popleft()
        self._retry_delay = 0.1
        self._write_batch()

    def _failed(self, failure):
        log.warn("log write failed ({count} rows waiting), retrying in {delay}s: {error}",
                 count=len(self.pending), delay=self._retry_delay,
                 error=failure.getErrorMessage())
        self._writing = False
        self._retry_call = self.store.clock.callLater(self._retry_delay, self._write_batch)
        self._retry_delay = min(self._retry_delay * 2, 5.0)


class Store:
    def __init__(self, engine, clock=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.engine = engine
        self.clock = clock
        self.pool = None
        self._next_message_id = None
        self.messages = BatchWriter(self, engine.insert_ignore + (
            " INTO messages (id, sender, channel_id, recipient, peer_key, body, sent_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"))
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
        self._next_message_id = (rows[0][0] or 0) + 1

    @defer.inlineCallbacks
    def stop(self):
        """Write everything still queued, then close the pool."""
        yield self.messages.drained()
        yield self.auth_events.drained()
        if self.pool is not None:
            self.pool.close()
            self.pool = None

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
        return self.execute(
            "INSERT INTO users (name, email, password_hash, role, created_at) VALUES (?, ?, ?, ?, ?)",
            (name, email, password_hash, role, db_time(utcnow())))

    @defer.inlineCallbacks
    def get_user(self, name):
        """(name as registered, password hash, role), or None."""
        rows = yield self.query(
            "SELECT name, password_hash, role FROM users WHERE name = ?", (name,))
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
