"""Every SQL statement chatd runs, in the engine's pool threads (chatd.engines: adbapi's
pools, and on SQLite a thread of its own for the message log's commits).

Every public method returns a Deferred; nothing here blocks the reactor, and
every statement goes through `Store.run`, which applies the reply timeout, the
retry policy and the logging. Messages are made durable by `MessageLog` before
anyone is told about them: group commit to SQL, or the fsynced spool while the
database is unreachable.
"""

import json
import os
import time
from collections import Counter, OrderedDict, deque
from datetime import datetime, timezone
from pathlib import Path

from twisted.enterprise.adbapi import ConnectionLost
from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from chatd.rules import is_mentioned
from chatd.searchindex import SEARCH_SCAN, search_index_for

log = Logger()

MAX_BATCH = 1000            # messages in one commit at most
OUTAGE_BLOCK = 10000        # ids reserved for messages spooled during an outage
OUTAGE_GAP = 1000000        # how far above the next id a block is reserved
RECENT_NONCES = 50000       # stored (sender, nonce) pairs remembered in memory
UNREAD_COUNTED = 1000       # unread counts stop here, so a login never walks a whole channel
SUMMARIES_PER_QUERY = 100   # conversations summed up in one query (one UNION ALL branch each)
SLOW_QUERY = 1.0            # seconds after which a query is logged as slow
SCHEMA_LOCK_WAIT = 60       # seconds a start waits for another process's schema upgrade
MESSAGE_ID_MAX = 2**63 - 1  # a signed 64-bit column: larger ids do not fit in SQL


def utcnow():
    return datetime.now(timezone.utc).replace(tzinfo=None)


def db_time(dt):
    """The one textual time format both engines accept and sort correctly."""
    return dt.isoformat(" ", timespec="milliseconds")    # as strftime's, three times faster


def wire_time(dt):
    return dt.isoformat(timespec="milliseconds") + "Z"


def parse_db_time(value):
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def _time_or_none(value):
    return None if value is None else parse_db_time(value)


def peer_key(a, b):
    """The key of the private conversation between two users, whatever the order."""
    return "|".join(sorted((a.casefold(), b.casefold())))


class Message:
    """One channel or private message, as relayed and as logged. `id` is None until
    the message is durable; `nonce` is the sender's optional resend key, and `resend`
    says the sender may have sent that nonce before; `edited` and `deleted` are the
    times of the last edit and of the deletion (None if never)."""

    __slots__ = ("id", "sender", "body", "time", "channel", "channel_id", "recipient", "nonce",
                 "resend", "edited", "deleted")

    def __init__(self, id, sender, body, time, channel=None, channel_id=None, recipient=None,
                 nonce=None, edited=None, deleted=None, resend=False):
        self.id, self.sender, self.body, self.time = id, sender, body, time
        self.channel, self.channel_id, self.recipient = channel, channel_id, recipient
        self.nonce, self.resend, self.edited, self.deleted = nonce, resend, edited, deleted

    def to_wire(self):
        """The relayed shape; a deleted message is a tombstone: no text, `deleted` set."""
        body = self.body if self.deleted is None else ""
        if self.channel is not None:
            wire = {"channel_message": body, "user": self.sender,
                    "channel": self.channel, "id": self.id, "time": wire_time(self.time)}
        else:
            wire = {"private_message": body, "user": self.sender,
                    "other_user": self.recipient, "id": self.id, "time": wire_time(self.time)}
        if self.nonce is not None:
            wire["nonce"] = self.nonce
        if self.deleted is not None:
            wire["deleted"] = wire_time(self.deleted)
        elif self.edited is not None:
            wire["edited"] = wire_time(self.edited)
        return wire

    def row(self):
        key = None if self.recipient is None else peer_key(self.sender, self.recipient)
        return (self.id, self.sender, self.channel_id, self.recipient, key,
                self.body, db_time(self.time), self.nonce)

    @classmethod
    def from_row(cls, row, channel=None):
        id, sender, channel_id, recipient, _, body, sent_at = row[:7]
        return cls(id, sender, body, parse_db_time(sent_at), channel=channel,
                   channel_id=channel_id, recipient=recipient,
                   nonce=row[7] if len(row) > 7 else None)


MESSAGE_COLUMNS = "id, sender, channel_id, recipient, peer_key, body, sent_at, nonce"


class DatabaseUnavailable(Exception):
    """The database did not answer in time; the request can be tried again later."""


class ServerBusy(Exception):
    """More messages wait for their commit than the bound allows; try again."""


class CommitUncertain(Exception):
    """The connection failed during COMMIT: the transaction may or may not be stored."""


class EarlierCommitFailed(Exception):
    """The commit started before this one failed, so this one was rolled back (ids must
    follow the order the commits were started in); its messages are queued again."""


class Spool:
    """An append-only JSON-lines file of durable messages waiting for the database.

    Each row carries its final id (from a block reserved for outages), so the
    whole file can be replayed after a crash: rows already written are skipped by
    INSERT-or-ignore on the id. The file is removed once every row is in SQL.
    """

    def __init__(self, path):
        self.path = Path(path)

    def recover(self):
        """The rows a previous run left, dropping a half-written last line."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            complete = data[:data.rfind(b"\n") + 1]
            log.warn("spool {path}: dropping a half-written last line ({size} bytes)",
                     path=str(self.path), size=len(data) - len(complete))
            with self.path.open("r+b") as f:
                f.truncate(len(complete))
            data = complete
        rows = []
        for line in data.splitlines():
            try:
                rows.append(tuple(json.loads(line)))
            except ValueError:
                log.error("spool {path}: skipping an unreadable line: {line!r}",
                          path=str(self.path), line=line[:200])
        if rows:
            log.info("spool {path}: {count} messages from an earlier run wait for the database",
                     path=str(self.path), count=len(rows))
        return rows

    def append(self, rows):
        """Append rows and make them durable (fsync) before returning."""
        with self.path.open("ab") as f:
            for row in rows:
                f.write(json.dumps(row, separators=(",", ":")).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())

    def clear(self):
        self.path.unlink(missing_ok=True)
        log.info("spool {path}: every spooled message is written; file removed",
                 path=str(self.path))


class _CommitTurn:
    """One started commit. Up to `engine.commits_in_flight` are handed at once to the
    message log's one thread (engines.ConnectionThread), which runs them one after
    the other in the order they started, so ids are taken in that order; each
    writes only if the one before it committed, so a failure leaves a prefix
    stored, never a gap."""

    def __init__(self, batch, previous, reserve, one_trip):
        self.batch = batch
        self.previous = previous    # the _CommitTurn started just before, until this ends
        self.reserve = reserve      # reserves a fresh outage block in the same transaction
        self.one_trip = one_trip and not reserve    # MessageLog._commit_in_one_trip
        self.outcome = None         # the commit's result or Failure, once it answered
        self.over = False           # the transaction is over
        self.committed = False

    def check_previous(self):
        """Message log thread, before writing (the one before has run by then)."""
        if self.previous is not None and not self.previous.committed:
            raise EarlierCommitFailed("the commit started before this one failed")

    def end(self, committed):
        """Message log thread: the transaction is over (committed or not)."""
        self.committed, self.previous, self.over = committed, None, True


class Draining:
    """A writer that callers can wait on until it has nothing left to write, and stop.

    Subclasses say when they are `idle()` and keep `_stopped`, `_retry_call` and
    `_drain_waiters`; `stop` waits for idle (at most `timeout` s) before `_stopped`.
    """

    def idle(self):
        raise NotImplementedError

    def drained(self):
        """Fires once nothing waits to be written."""
        if self.idle():
            return defer.succeed(None)
        d = defer.Deferred()
        self._drain_waiters.append(d)
        return d

    def _check_drained(self, force=False):
        if force or self.idle():
            waiters, self._drain_waiters = self._drain_waiters, []
            for d in waiters:
                d.callback(None)

    @defer.inlineCallbacks
    def _wait_then_stop(self, timeout):
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


class MessageLog(Draining):
    """Makes messages durable, in batches, before they are acknowledged or relayed.

    `save(message)` fires with (message, is_new) once the message is committed —
    every message queued while a commit runs goes into the next one (group
    commit), so the cost is one commit per batch — or, while the database is
    unreachable, once it is in the fsynced spool. Ids come from the database's
    `message_ids` row inside the commit, so they increase in commit order and are
    unique across every process sharing the database; spooled messages take ids
    from a block reserved durably beforehand (refreshed every BLOCK_REFRESH s
    while busy), so they sort at most that far back. A message whose (sender,
    nonce) is already stored is answered with the stored one, is_new False.

    Outage ids: a block of OUTAGE_BLOCK ids is reserved OUTAGE_GAP above the next
    id (a row of message_id_blocks, written at start). Commits, by any process,
    skip every reserved block, so the block's ids are ours alone; a spooled
    message therefore sorts after everything committed before the outage, and
    once the database is back the commits jump past the block, so later messages
    sort after it. A block that commits have passed is replaced by a fresh one.

    Commits overlap (see _CommitTurn) but are answered in the order they started,
    which is the order of their ids, so acks and relays go out in id order and each
    speaker's messages keep their send order.
    """

    def __init__(self, store, spool=None, max_queued=10000):
        self.store = store
        self.spool = spool
        self.max_queued = max_queued
        self.accepted = Counter()   # sender -> messages ever queued (what tests can count on)
        self.queue = []             # [(message, deferred)] accepted, not yet durable
        self.spooled = deque()      # durable in the spool, not yet in SQL (history shows them)
        self.in_doubt = []          # [(message, deferred)] whose COMMIT may or may not have happened
        self.outage = False
        self.block = None           # [next id, end, start] reserved for the spool
        self._nonces = OrderedDict()    # (sender, nonce) -> Message, or waiters while saving
        # Senders with a nonce stored in SQL that _nonces may not hold (loaded too far
        # back, or forgotten since): during an outage their unknown nonces are refused.
        self._unsure_senders = set()
        self._in_flight = deque()   # _CommitTurn of commits not yet handled, oldest first
        self._holding = False       # a commit failed: start none until the others answered
        self._requeue = []          # [(message, deferred)] rolled back behind a failed commit
        self._scheduled = None      # the DelayedCall of the next _flush
        self._retry_call = None
        self._retry_delay = 0.1
        self._stopped = False
        self._drain_waiters = []
        # Told the messages made durable (not the resends of stored ones), in id order,
        # before their saves are answered: the hub relays them (Hub.relay).
        self.on_stored = lambda messages: None

    # -- accepting ---------------------------------------------------------

    def save(self, message):
        key = (message.sender, message.nonce)
        if message.nonce is not None and key in self._nonces:
            known = self._nonces[key]
            if isinstance(known, Message):
                return defer.succeed((known, False))
            d = defer.Deferred()
            known.append(d)
            return d
        if len(self.queue) >= self.max_queued:
            return defer.fail(ServerBusy(f"{len(self.queue)} messages wait for the database"))
        self.accepted[message.sender] += 1
        d = defer.Deferred()
        if message.nonce is not None:
            self._nonces[key] = []      # later saves with this nonce wait for this one
            d.addBoth(self._settle_nonce, key)
        self.queue.append((message, d))
        self._schedule()
        return d

    def _settle_nonce(self, result, key):
        waiters = self._nonces.pop(key, [])
        if isinstance(result, tuple):
            self._remember(result[0])
        for waiter in waiters:
            if isinstance(result, tuple):
                waiter.callback((result[0], False))
            else:
                waiter.errback(result)
        return result

    def _remember(self, message):
        if message.nonce is not None:
            self._nonces[(message.sender, message.nonce)] = message
            while len(self._nonces) > RECENT_NONCES:
                (sender, _), known = self._nonces.popitem(last=False)
                if not isinstance(known, Message):     # still saving: keep its waiters
                    self._nonces[(sender, _)] = known
                    break
                self._unsure_senders.add(sender)

    @defer.inlineCallbacks
    def load_nonces(self):
        """At start: the most recent stored nonces, and who has older ones."""
        rows = yield self.store.query(
            "SELECT " + MESSAGE_COLUMNS + " FROM messages WHERE nonce IS NOT NULL"
            " ORDER BY id DESC LIMIT ?", (RECENT_NONCES,))
        for row in reversed(rows):
            self._remember(Message.from_row(row))
        if len(rows) == RECENT_NONCES:
            older = yield self.store.query("SELECT DISTINCT sender FROM messages"
                                           " WHERE nonce IS NOT NULL AND id < ?", (rows[-1][0],))
            self._unsure_senders.update(sender for sender, in older)

    def _can_start(self):
        return not (self._holding or self._stopped) \
            and len(self._in_flight) < self.store.engine.commits_in_flight

    def _schedule(self):
        """Commit at the end of this reactor turn what it accepted (one commit for all).
        Nothing queued, nothing scheduled: a callLater(0) per commit answered costs the
        reactor's heap (one deadline per connection) for nothing."""
        if self._scheduled is None and self.queue and self._can_start():
            self._scheduled = self.store.clock.callLater(0, self._flush)

    # -- writing -----------------------------------------------------------

    def _flush(self):
        if self._scheduled is not None:
            if self._scheduled.active():
                self._scheduled.cancel()    # called directly, by _commit_done
            self._scheduled = None
        if self._stopped or not self.queue:
            self._check_drained()
            return
        batch, self.queue = self.queue[:MAX_BATCH], self.queue[MAX_BATCH:]
        if self.outage:
            self._to_spool(batch)
            self._schedule()
            return
        previous = self._in_flight[-1] if self._in_flight else None
        turn = _CommitTurn(batch, previous, self._wants_block(),
                           one_trip=self.store.engine.one_trip_commits)
        self._in_flight.append(turn)
        d = self.store.run("store messages", self._commit, [m for m, _ in batch], turn,
                           timeout=None, retries=0, ended=turn.end, commits=turn.one_trip,
                           pool=self.store.message_pool)
        d.addBoth(self._commit_done, turn)
        self._schedule()

    def _commit_done(self, outcome, turn):
        """Outcomes are handled in the order the commits were started (so are relays).

        The next commit starts before the committed messages are answered: answering
        (acks, and relays to every viewer) keeps the reactor busy a while, and the next
        batch is written in its thread meanwhile instead of after."""
        if not turn.over:
            turn.end(False)     # it failed before the transaction began (no connection)
        turn.outcome = outcome
        answers = []
        while self._in_flight and self._in_flight[0].outcome is not None:
            turn = self._in_flight.popleft()
            if isinstance(turn.outcome, Failure):
                self._answer(answers)
                self._holding = True
                self._commit_failed(turn.outcome, turn.batch)
            else:
                answers += self._committed(turn.outcome, turn.batch)
        if self._holding and not self._in_flight:
            self._holding = False
            self.queue[:0], self._requeue = self._requeue, []
        if self.queue and self._can_start():
            self._flush()
        self._answer(answers)
        self._schedule()
        self._check_drained()

    def _answer(self, answers):
        """Relay the new messages among `answers` [(deferred, (message, is_new))] all at
        once, then answer each save (so a sender hears its message before the ok)."""
        new = [message for _, (message, is_new) in answers if is_new]
        if new:
            self.on_stored(new)
        for d, result in answers:
            d.callback(result)
        answers.clear()

    @defer.inlineCallbacks
    def reserve_block(self):
        """Reserve ids for outages now, so even the first messages can be spooled."""
        self.block = list((yield self.store.run("reserve outage ids", self._reserve)))

    def _wants_block(self):
        """A fresh block if none, or if commits have reached the current one."""
        return ((self.block is None or self._next_id > self.block[2])
                and not any(turn.reserve for turn in self._in_flight))

    _next_id = 0

    @property
    def _until_commit(self):
        """What a read of the next id adds to lock it until the commit, so no other process
        takes the same ones (SQLite's BEGIN IMMEDIATE already holds the write lock)."""
        return " FOR UPDATE" if self.store.engine.name == "mysql" else ""

    def _lock_next_id(self, cursor):
        cursor.execute("SELECT next_id FROM message_ids" + self._until_commit)
        return cursor.fetchone()[0]

    def _reserve(self, cursor):
        next_id = self._lock_next_id(cursor)
        cursor.execute("DELETE FROM message_id_blocks WHERE end_id <= ?", (next_id,))
        cursor.execute("SELECT MAX(end_id) FROM message_id_blocks")
        start = max(next_id + OUTAGE_GAP, cursor.fetchone()[0] or 0)
        cursor.execute("INSERT INTO message_id_blocks (start_id, end_id) VALUES (?, ?)",
                       (start, start + OUTAGE_BLOCK))
        return start, start + OUTAGE_BLOCK, start

    def _commit(self, cursor, messages, turn):
        """In one transaction: find nonces already stored (one query for the batch), take
        ids, insert the rest."""
        turn.check_previous()
        if turn.one_trip:
            return self._commit_in_one_trip(cursor, messages)
        stored = self._stored(cursor, [m for m in messages if m.nonce is not None])
        new = [m for m in messages if (m.sender, m.nonce) not in stored]
        first = self._take_ids(cursor, len(new))
        node = self.store.node
        rows = [(first + i,) + m.row()[1:] + (node,) for i, m in enumerate(new)]
        cursor.execute("UPDATE message_ids SET next_id = ?", (first + len(new),))
        if rows:
            cursor.executemany("INSERT INTO messages (" + MESSAGE_COLUMNS + ", node)"
                               " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        block = self._reserve(cursor) if turn.reserve else None
        return (first, first + len(new)), stored, block

    # The first id from the next one where `count` ids fit between the reserved blocks:
    # the next id itself, or the end of a block.
    _FIRST_FREE = ("SELECT MIN(c) INTO @first FROM (SELECT @next AS c UNION"
                   " SELECT end_id FROM message_id_blocks WHERE end_id > @next) AS candidates"
                   " WHERE NOT EXISTS (SELECT 1 FROM message_id_blocks"
                   " WHERE start_id < c + ? AND end_id > c)")

    def _commit_in_one_trip(self, cursor, messages):
        """Look up the resends' nonces, then take ids, insert the rest and COMMIT in one
        round trip (MariaDB), so the id lock is held only while the server runs it.

        A first send's nonce is new unless its client reused one: then the unique key
        refuses the insert, and the batch is done again with every nonce looked up."""
        for may_be_stored in (lambda m: m.resend, lambda m: True):
            stored = self._stored(cursor, [m for m in messages
                                           if m.nonce is not None and may_be_stored(m)])
            new = [m for m in messages if (m.sender, m.nonce) not in stored]
            try:
                return self._insert_in_one_trip(cursor, new), stored, None
            except self.store.engine.module.IntegrityError:
                cursor.execute("ROLLBACK")
        raise AssertionError("every stored nonce was looked up, yet one was inserted again")

    def _insert_in_one_trip(self, cursor, new):
        """(first id, next id) of `new`, committed. A lost connection leaves it in doubt."""
        if not new:
            cursor.execute("COMMIT")
            return self._next_id, self._next_id
        values = ", ".join(f"(@first + {i}, ?, ?, ?, ?, ?, ?, ?, ?)" for i in range(len(new)))
        node = self.store.node
        try:
            cursor.execute(
                "SELECT next_id INTO @next FROM message_ids" + self._until_commit + "; "
                + self._FIRST_FREE + "; "
                "INSERT INTO messages (" + MESSAGE_COLUMNS + ", node) VALUES " + values + "; "
                "UPDATE message_ids SET next_id = @first + ?; SELECT @first; COMMIT",
                (len(new), *(value for m in new for value in m.row()[1:] + (node,)), len(new)))
            while cursor.description is None:   # the statements before SELECT @first
                cursor.nextset()
            first = cursor.fetchone()[0]
            while cursor.nextset():             # COMMIT's answer
                pass
        except Exception as e:
            engine = self.store.engine
            if engine.is_connection_error(e) and not engine.was_not_sent(e):
                raise CommitUncertain(str(e)) from e
            raise
        return first, first + len(new)

    @staticmethod
    def _stored(cursor, messages):
        """The rows already stored under the (sender, nonce) of `messages`, in one query."""
        if not messages:
            return {}
        keys = list(dict.fromkeys((m.sender, m.nonce) for m in messages))
        cursor.execute("SELECT " + MESSAGE_COLUMNS + " FROM messages WHERE "
                       + " OR ".join(["(sender = ? AND nonce = ?)"] * len(keys)),
                       tuple(value for key in keys for value in key))
        return {(row[1], row[7]): tuple(row) for row in cursor.fetchall()}

    def _take_ids(self, cursor, count):
        """The first of `count` consecutive ids from the next one, skipping every
        reserved block, read with the blocks in one query that locks the next id."""
        cursor.execute("SELECT next_id, start_id, end_id FROM message_ids"
                       " LEFT JOIN message_id_blocks ON end_id > next_id ORDER BY start_id"
                       + self._until_commit)
        found = cursor.fetchall()
        first = found[0][0]
        for _, start, end in found:
            if start is None or first + count <= start:
                break
            first = max(first, end)
        return first

    def _committed(self, result, batch):
        """The answers [(deferred, result)] to give for a committed batch."""
        (first, end), stored, block = result
        self._next_id = max(self._next_id, end)     # a batch of resends only takes none
        if block is not None:
            self.block = list(block)
        next_id, answers = first, []
        for message, d in batch:
            row = stored.get((message.sender, message.nonce))
            if row is not None:
                answers.append((d, (Message.from_row(row, message.channel), False)))
            else:
                message.id, next_id = next_id, next_id + 1
                answers.append((d, (message, True)))
        return answers

    def _commit_failed(self, failure, batch):
        if failure.check(EarlierCommitFailed):
            self._requeue.extend(batch)
        elif failure.check(CommitUncertain):
            log.warn("the database went away during a commit of {count} messages; they are"
                     " answered once it tells whether they were stored", count=len(batch))
            self.in_doubt.extend(batch)
            self._enter_outage(failure)
        elif self.store.is_unavailable(failure):
            self._enter_outage(failure)
            self._to_spool(batch)
        else:
            log.failure("storing {count} messages", failure, count=len(batch))
            for _, d in batch:
                d.errback(failure)

    # -- outages -----------------------------------------------------------

    def _enter_outage(self, failure):
        if not self.outage:
            log.warn("the database is unreachable ({error}); messages go to the spool {path}",
                     error=failure.getErrorMessage(), path=self.spool and str(self.spool.path))
        self.outage = True
        if self._retry_call is None:
            self._retry_call = self.store.clock.callLater(self._retry_delay, self._recover)

    def _to_spool(self, batch):
        """Durable in the spool with ids from the reserved block; what does not fit is refused."""
        # A resend whose nonce we do not hold may be of a message stored before the
        # outage: a spooled copy would be dropped at replay and its id never exist, so
        # the client keeps it and sends it again once the database is back. A first
        # send (no `resend` flag) cannot be stored already, so it is spooled.
        def unsure(m):
            return m.nonce is not None and m.resend and m.sender in self._unsure_senders
        batch, refused = [e for e in batch if not unsure(e[0])], [e for e in batch if unsure(e[0])]
        for _, d in refused:
            d.errback(DatabaseUnavailable("the database is unreachable and this nonce may"
                                          " already be stored"))
        room = 0 if self.spool is None or self.block is None else self.block[1] - self.block[0]
        fits, refused = batch[:room], batch[room:]
        for _, d in refused:
            d.errback(DatabaseUnavailable("the database is unreachable and the spool is full"))
        if not fits:
            return
        for message, _ in fits:
            message.id = self.block[0]
            self.block[0] += 1
        self.spool.append([m.row() for m, _ in fits])
        self.spooled.extend(m for m, _ in fits)
        self._answer([(d, (message, True)) for message, d in fits])

    @defer.inlineCallbacks
    def _recover(self):
        """Retry until the database answers: settle the in-doubt commit, replay the spool."""
        self._retry_call = None
        try:
            yield self._settle_in_doubt()
            yield self.replay()
        except Exception as e:
            if self._stopped:
                return
            log.warn("the database is still unreachable ({error}); {count} messages in the"
                     " spool, next try in {delay}s", error=str(e) or type(e).__name__,
                     count=len(self.spooled), delay=self._retry_delay)
            self._retry_call = self.store.clock.callLater(self._retry_delay, self._recover)
            self._retry_delay = min(self._retry_delay * 2, 5.0)
            return
        self._retry_delay = 0.1
        log.info("the database is back; the spool is written")
        self._check_drained()

    @defer.inlineCallbacks
    def _settle_in_doubt(self):
        """A commit whose answer was lost is all or nothing: look each message up by its
        nonce, or by sender, time and text; those not found are queued again."""
        batch, found = self.in_doubt, []
        for message, _ in batch:
            if message.nonce is not None:
                where, params = "sender = ? AND nonce = ?", (message.sender, message.nonce)
            else:
                where = "sender = ? AND sent_at = ? AND body = ?"
                params = (message.sender, db_time(message.time), message.body)
            rows = yield self.store.query(
                "SELECT " + MESSAGE_COLUMNS + " FROM messages WHERE " + where, params)
            found.append(tuple(rows[0]) if rows else None)
        self.in_doubt = []
        again, answers = [], []
        for (message, d), row in zip(batch, found):
            if row is None:
                again.append((message, d))
            else:
                stored = Message.from_row(row, message.channel)
                answers.append((d, (stored, db_time(stored.time) == db_time(message.time))))
        self._answer(answers)
        self.queue[:0] = again
        self._schedule()

    @defer.inlineCallbacks
    def replay(self):
        """Write the spooled messages to SQL in order (the ids they carry are ours)."""
        while self.spooled:
            chunk = list(self.spooled)[:MAX_BATCH]
            yield self.store.run("replay spool", self._insert_spooled, [m.row() for m in chunk],
                                 timeout=None, retries=0)
            for _ in chunk:
                self.spooled.popleft()
            self.outage = False     # the database answers: new messages go to it again
            self._schedule()
        if self.spool is not None and self.spool.path.exists():
            self.spool.clear()
        self.outage = False

    def _insert_spooled(self, cursor, rows):
        # After a crash the file is replayed whole: rows already written are skipped
        # by their id, and a nonce stored meanwhile (a resend) by (sender, nonce).
        cursor.executemany(self.store.engine.insert_ignore + " INTO messages ("
                           + MESSAGE_COLUMNS + ", node) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           [tuple(r) + (None,) * (8 - len(r)) + (self.store.node,)
                            for r in rows])
        # Later commits go above what the outage stored (past the rest of its block).
        top = max(r[0] for r in rows)
        cursor.execute("UPDATE message_ids SET next_id = ? WHERE next_id <= ?", (top + 1, top))
        if self.store.search_index is not None:
            self.store.search_index.reindex_later(cursor, [r[0] for r in rows])

    # -- lifecycle ---------------------------------------------------------

    def recover_spool(self):
        """At start: the messages an earlier run spooled, to be replayed first."""
        if self.spool is not None:
            self.spooled.extend(Message.from_row(row) for row in self.spool.recover())

    def idle(self):
        return not (self.queue or self.spooled or self.in_doubt or self._in_flight
                    or self._requeue or self._scheduled is not None)

    @defer.inlineCallbacks
    def stop(self, timeout):
        """Wait up to `timeout` s for the queue to be durable; spool what is left."""
        yield self._wait_then_stop(timeout)
        if self.queue:
            batch, self.queue = self.queue, []
            self._to_spool(batch)
        if self.spooled:
            log.warn("stopping with the database unreachable: {count} messages are kept in"
                     " {path} and will be written at the next start",
                     count=len(self.spooled), path=str(self.spool.path))


class BatchWriter(Draining):
    """Writes rows the caller does not wait for (the auth log) in batches, in order,
    retrying with backoff; during an outage at most `max_pending` rows wait, and
    the oldest beyond that are dropped (and counted in the log)."""

    def __init__(self, store, sql, batch_size=500, max_pending=10000):
        self.store = store
        self.sql = sql
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.pending = deque()
        self.dropped = 0
        self._writing = False
        self._stopped = False
        self._retry_delay = 0.1
        self._retry_call = None
        self._drain_waiters = []

    def add(self, row):
        self.pending.append(row)
        if len(self.pending) > self.max_pending:
            self.pending.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warn("the database is unreachable: {dropped} rows dropped so far ({sql})",
                         dropped=self.dropped, sql=self.sql.split("(")[0])
        self.kick()

    def kick(self):
        if self._stopped or self._writing or self._retry_call is not None or not self.pending:
            return
        self._writing = True
        self.store.clock.callLater(0, self._write_batch)

    def idle(self):
        return not self.pending and not self._writing

    def _write_batch(self):
        self._retry_call = None
        if self._stopped or not self.pending:
            self._writing = False
            self._check_drained(force=True)
            return
        self._writing = True
        rows = [self.pending[i] for i in range(min(self.batch_size, len(self.pending)))]
        d = self.store.run(self.sql.split("(")[0].strip().lower(),
                           lambda cursor: cursor.executemany(self.sql, rows),
                           timeout=None, retries=0)
        d.addCallbacks(self._written, self._failed, callbackArgs=(rows,))

    def _written(self, _, rows):
        for row in rows:
            if self.pending and self.pending[0] is row:
                self.pending.popleft()
        self._retry_delay = 0.1
        self._write_batch()

    def _failed(self, failure):
        self._writing = False
        if self._stopped:
            return
        self._retry_call = self.store.clock.callLater(self._retry_delay, self._write_batch)
        self._retry_delay = min(self._retry_delay * 2, 5.0)

    @defer.inlineCallbacks
    def stop(self, timeout):
        yield self._wait_then_stop(timeout)
        if self.pending:
            log.error("stopping with the database unreachable: {count} rows not written"
                      " ({sql})", count=len(self.pending), sql=self.sql.split("(")[0])


class Checkpoints:
    """The engine's log checkpoints, every checkpoint_interval, in a thread and on a
    connection of their own, so that no commit (and no acknowledgement) waits for one."""

    def __init__(self, engine, clock):
        self.engine = engine
        self.pool = engine.make_pool()
        self.running = None
        self.loop = task.LoopingCall(self.checkpoint)
        self.loop.clock = clock
        self.loop.start(engine.checkpoint_interval, now=False)

    def checkpoint(self):
        if self.running is None:
            # Not through Store.run: a checkpoint cannot run inside a transaction.
            self.running = self.pool.runWithConnection(self.engine.checkpoint)
            self.running.addErrback(self._failed).addBoth(self._done)

    def _failed(self, failure):
        # A busy or missing database is the committing connections' business: they
        # keep their own checkpoint as a bound, and this one tries again next time.
        log.debug("background checkpoint: {error}", error=failure.getErrorMessage())

    def _done(self, _):
        self.running = None

    @defer.inlineCallbacks
    def stop(self):
        self.loop.stop()
        if self.running is not None:
            yield self.running
        self.pool.close()


class Store:
    """The SQL API. `reply_timeout` bounds how long a request waits for the database;
    `shutdown_timeout` how long stop() waits for queued writes; `max_queued` how
    many messages may wait for their commit before more are refused as busy."""

    def __init__(self, engine, clock=None, spool_path=None, *, max_queued,
                 reply_timeout=10.0, shutdown_timeout=5.0, node=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.engine = engine
        self.node = node    # the cluster node name written with each message (None: one server)
        self.clock = clock
        self.pool = None            # every statement but the message log's commits
        self.message_pool = None    # the message log's, so commits never queue behind reads
        self.checkpoints = None     # the background log checkpoints, where the engine has them
        self.search_index = None    # the search index, written off the message path
        self.reply_timeout = reply_timeout
        self.shutdown_timeout = shutdown_timeout
        self.spool = None if spool_path is None else Spool(spool_path)
        self.messages = MessageLog(self, self.spool, max_queued=max_queued)
        self.auth_events = BatchWriter(self, "INSERT INTO auth_log (user_name, event, ip, at)"
                                             " VALUES (?, ?, ?, ?)")

    # -- lifecycle ---------------------------------------------------------

    @defer.inlineCallbacks
    def start(self):
        self.pool = self.engine.make_pool()
        version = yield self.upgrade_schema()
        self.message_pool = self.engine.make_pool(for_messages=True)
        if self.engine.checkpoint_interval is not None:
            self.checkpoints = Checkpoints(self.engine, self.clock)
        self.search_index = search_index_for(self.engine, self.clock, self.pool)
        yield self.search_index.start()
        log.info("database {db} at schema version {version} (durability: {durability})",
                 db=self.engine.describe(), version=version, durability=self.engine.durability)
        self.messages.recover_spool()
        yield self.messages.replay()
        yield self.messages.load_nonces()
        yield self.messages.reserve_block()

    @defer.inlineCallbacks
    def stop(self):
        """Make everything queued durable (in SQL, or the spool if the database is away), then close."""
        yield defer.gatherResults([self.messages.stop(self.shutdown_timeout),
                                   self.auth_events.stop(self.shutdown_timeout)],
                                  consumeErrors=True)
        if self.checkpoints is not None:
            yield self.checkpoints.stop()
            self.checkpoints = None
        if self.search_index is not None:
            yield self.search_index.stop()
            self.search_index = None
        for pool in (self.pool, self.message_pool):
            if pool is not None:
                pool.close()
        self.pool = self.message_pool = None

    def upgrade_schema(self, migrations=None):
        """Apply the schema files newer than the recorded version, each in one transaction
        (on SQLite DDL is transactional, so a file that fails half-way leaves nothing).
        On MySQL under a named lock: nodes starting at once on an empty database would
        otherwise all run the same files (one upgrades, the others then find it done)."""
        migrations = self.engine.migrations() if migrations is None else migrations
        return self.pool.runWithConnection(self._upgrade, migrations)

    def _upgrade(self, connection, migrations):
        """In a pool thread, on one connection (a MySQL lock belongs to its connection)."""
        cursor = self.engine.cursor(connection)
        lock = self.engine.schema_lock()
        if lock is not None:
            cursor.execute("SELECT GET_LOCK(?, ?)", (lock, SCHEMA_LOCK_WAIT))
            if cursor.fetchone()[0] != 1:
                raise RuntimeError(f"another process has been upgrading the schema for"
                                   f" {SCHEMA_LOCK_WAIT} s (the lock {lock!r} is held)")
        try:
            cursor.execute("CREATE TABLE IF NOT EXISTS schema_version"
                           " (version INTEGER NOT NULL)")
            connection.commit()
            cursor.execute("SELECT MAX(version) FROM schema_version")
            current = cursor.fetchone()[0] or 0
            connection.commit()
            for version, script in migrations:
                if version > current:
                    log.info("schema: applying version {version}", version=version)
                    try:
                        self.engine.begin(cursor)
                        for statement in self.engine.split_statements(script):
                            cursor.execute(statement)
                        cursor.execute("INSERT INTO schema_version (version) VALUES (?)",
                                       (version,))
                        connection.commit()
                    except Exception:
                        connection.rollback()
                        raise
                    current = version
            return current
        finally:
            if lock is not None:
                cursor.execute("SELECT RELEASE_LOCK(?)", (lock,))
                cursor.fetchall()
                connection.commit()     # the pool does not end the SELECT's transaction
            cursor.close()

    # -- running statements --------------------------------------------------

    def run(self, description, function, *args, timeout=(), retries=1, ended=None,
            commits=False, readonly=False, pool=None):
        """Run function(cursor, *args) in one transaction in `pool` (the general one by
        default), and fire with its result. `readonly` transactions must not write
        (on SQLite they then take no write lock).

        Every statement goes through here. A failure that means the database is
        unreachable is retried `retries` times (adbapi then opens a fresh
        connection) unless the COMMIT itself failed; the answer is bounded by
        `timeout` seconds (the reply timeout by default; None for background
        writers) and turns into DatabaseUnavailable; slow and failed runs are logged.
        `ended(committed)`, if given, is called in the pool thread once the
        transaction is over (for commits that wait for each other there). A function
        that `commits` ends the transaction itself, with its last statements.
        """
        timeout = self.reply_timeout if timeout == () else timeout
        started = time.monotonic()
        d = self._attempt(pool or self.pool, function, args, ended, commits, readonly, retries)
        if timeout is not None:
            d.addTimeout(timeout, self.clock)
        return d.addCallbacks(self._finished, self._failed,
                              callbackArgs=(description, started),
                              errbackArgs=(description, timeout))

    # Store.run's steps are methods, not closures: a closure that calls itself (the
    # retry) is a reference cycle, and its frame and arguments were then freed by the
    # cyclic collector instead of at once (33 objects per message commit).

    def _attempt(self, pool, function, args, ended, commits, readonly, retries):
        d = pool.runWithConnection(self._transaction, function, args, ended, commits, readonly)
        if retries:
            d.addErrback(self._retry, pool, function, args, ended, commits, readonly,
                         retries - 1)
        return d

    def _retry(self, failure, pool, function, args, ended, commits, readonly, retries):
        if not self._retriable(failure):
            return failure
        return self._attempt(pool, function, args, ended, commits, readonly, retries)

    @staticmethod
    def _finished(result, description, started):
        elapsed = time.monotonic() - started
        if elapsed > SLOW_QUERY:
            log.warn("slow query: {description} took {elapsed:.1f}s",
                     description=description, elapsed=elapsed)
        return result

    def _failed(self, failure, description, timeout):
        if failure.check(defer.TimeoutError):
            failure = DatabaseUnavailable(f"no answer from the database in {timeout}s")
            log.warn("{description}: {error}", description=description, error=failure)
            raise failure
        if self.is_unavailable(failure):
            log.warn("{description}: database unavailable: {error}",
                     description=description, error=failure.getErrorMessage())
        return failure

    def _transaction(self, connection, function, args, ended, commits, readonly):
        """In a pool thread: begin, run, commit; a failed COMMIT is CommitUncertain."""
        committed = False
        try:
            cursor = self.engine.cursor(connection)
            self.engine.begin(cursor, readonly)
            result = function(cursor, *args)
            cursor.close()
            try:
                if not commits:
                    connection.commit()
            except Exception as e:
                if self.engine.is_connection_error(e) and self.engine.name == "mysql":
                    raise CommitUncertain(str(e)) from e
                raise
            committed = True
            return result
        finally:
            if ended is not None:
                ended(committed)

    def _retriable(self, failure):
        return not failure.check(CommitUncertain) and self.is_unavailable(failure)

    def is_unavailable(self, failure):
        """True if `failure` means the database cannot be reached (not a bug, not bad input)."""
        error = failure.value
        return (isinstance(error, (DatabaseUnavailable, ConnectionLost, CommitUncertain))
                or self.engine.is_connection_error(error))

    def query(self, sql, params=()):
        def select(cursor):
            cursor.execute(sql, params)
            return cursor.fetchall()
        return self.run(sql[:60], select, readonly=True)

    def execute(self, sql, params=()):
        return self.run(sql[:60], lambda cursor: cursor.execute(sql, params))

    # -- users -------------------------------------------------------------

    def create_user(self, name, email, password_hash, role="user"):
        """Fails with the engine's IntegrityError if the name (in any case) is taken."""
        return self.execute(
            "INSERT INTO users (name, email, password_hash, role, created_at) VALUES (?, ?, ?, ?, ?)",
            (name, email, password_hash, role, db_time(utcnow())))

    @defer.inlineCallbacks
    def get_user(self, name):
        """(name as registered, password hash, role), or None."""
        rows = yield self.query("SELECT name, password_hash, role FROM users WHERE name = ?",
                                (name,))
        return tuple(rows[0]) if rows else None

    def all_users(self):
        """[(name, role, password hash)] for every account: chatd.accounts keeps them in
        memory (a hash never changes once stored)."""
        return self.query("SELECT name, role, password_hash FROM users")

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
    def membership_ends(self):
        """{(channel id, user name): the admin who removed them, None if they left} for
        the latest end of every membership that ended."""
        rows = yield self.query("SELECT channel_id, user_name, removed_by FROM membership_ends")
        return {(channel_id, user): removed_by for channel_id, user, removed_by in rows}

    @defer.inlineCallbacks
    def create_channel(self, name, private, created_by):
        yield self.execute(
            "INSERT INTO channels (name, private, created_by, created_at) VALUES (?, ?, ?, ?)",
            (name, int(private), created_by, db_time(utcnow())))
        rows = yield self.query("SELECT id FROM channels WHERE name = ?", (name,))
        return rows[0][0]

    def delete_channel(self, channel_id):
        def delete(cursor):
            cursor.execute("DELETE FROM memberships WHERE channel_id = ?", (channel_id,))
            cursor.execute("DELETE FROM membership_ends WHERE channel_id = ?", (channel_id,))
            cursor.execute("DELETE FROM channels WHERE id = ?", (channel_id,))
        return self.run("delete channel", delete)

    def add_member(self, channel_id, name):
        """A new member has read what was said before they joined (their read marker)."""
        def add(cursor):
            cursor.execute(self.engine.insert_ignore +
                           " INTO memberships (channel_id, user_name, joined_at) VALUES (?, ?, ?)",
                           (channel_id, name, db_time(utcnow())))
            newest = self._newest(cursor, channel_id, "")
            if newest is not None:
                self._raise_marker(cursor, name, channel_id, "", newest[0])
        return self.run("add member", add)

    def remove_member(self, channel_id, name, removed_by=None):
        """`name` leaves the channel (removed by the admin `removed_by`, or of their own
        accord if None), and the end is recorded (membership_ends)."""
        def remove(cursor):
            cursor.execute("DELETE FROM memberships WHERE channel_id = ? AND user_name = ?",
                           (channel_id, name))
            cursor.execute("REPLACE INTO membership_ends (channel_id, user_name, removed_by)"
                           " VALUES (?, ?, ?)", (channel_id, name, removed_by))
        return self.run("remove member", remove)

    # -- messages ----------------------------------------------------------

    def save_message(self, message):
        """Make `message` durable; fires with (message as stored, is_new). A repeated
        (sender, nonce) fires with the stored message and is_new False."""
        return self.messages.save(message)

    @defer.inlineCallbacks
    def channel_history(self, channel, channel_id, before=None, limit=50):
        """Up to `limit` messages before id `before`, oldest first, and whether more exist."""
        # Taken before the query: a spooled row replayed while it runs is in one or the other.
        spooled = [m for m in self.messages.spooled if m.channel_id == channel_id]
        rows = yield self._history_rows("messages_by_channel", "channel_id = ?", channel_id,
                                        before, limit)
        stored = [Message(r[0], r[1], r[3], parse_db_time(r[4]), channel=channel,
                          channel_id=channel_id, nonce=r[5], edited=_time_or_none(r[6]),
                          deleted=_time_or_none(r[7])) for r in rows]
        return self._merge(stored, spooled, before, limit)

    @defer.inlineCallbacks
    def private_history(self, user, other, before=None, limit=50):
        key = peer_key(user, other)
        spooled = [m for m in self.messages.spooled
                   if m.recipient is not None and peer_key(m.sender, m.recipient) == key]
        rows = yield self._history_rows("messages_by_peers", "peer_key = ?", key, before, limit)
        stored = [Message(r[0], r[1], r[3], parse_db_time(r[4]), recipient=r[2], nonce=r[5],
                          edited=_time_or_none(r[6]), deleted=_time_or_none(r[7]))
                  for r in rows]
        return self._merge(stored, spooled, before, limit)

    def _history_rows(self, index, where, value, before, limit):
        params = [value]
        if before is not None:
            where += " AND id < ?"
            params.append(before)
        params.append(limit + 1)
        return self.query(f"SELECT id, sender, recipient, body, sent_at, nonce, edited_at,"
                          f" deleted_at FROM messages"
                          f" {self.engine.use_index(index)}"
                          f" WHERE {where} ORDER BY id DESC LIMIT ?",
                          tuple(params))

    @staticmethod
    def _merge(stored, spooled, before, limit):
        """Stored rows plus messages still in the spool, newest `limit`, oldest first."""
        by_id = {m.id: m for m in stored}
        for m in spooled:
            if before is None or m.id < before:
                by_id[m.id] = m
        newest_first = sorted(by_id.values(), key=lambda m: m.id, reverse=True)
        page = newest_first[:limit]
        page.reverse()
        return page, len(newest_first) > limit

    # -- edits and deletions ---------------------------------------------------

    @defer.inlineCallbacks
    def stored_message(self, message_id):
        """The message with that id as stored (its channel name left to the caller), or None."""
        rows = yield self.query("SELECT id, sender, channel_id, recipient, body, sent_at,"
                                " edited_at, deleted_at FROM messages WHERE id = ?", (message_id,))
        if not rows:
            return None
        id, sender, channel_id, recipient, body, sent_at, edited, deleted = rows[0]
        return Message(id, sender, body, parse_db_time(sent_at), channel_id=channel_id,
                       recipient=recipient, edited=_time_or_none(edited),
                       deleted=_time_or_none(deleted))

    @defer.inlineCallbacks
    def messages_of_node(self, node, after, limit=MAX_BATCH):
        """The messages cluster node `node` stored with ids above `after`, oldest first, at
        most `limit` (their channel names left to the caller)."""
        rows = yield self.query("SELECT id, sender, channel_id, recipient, body, sent_at, nonce,"
                                " edited_at, deleted_at FROM messages WHERE id > ? AND node = ?"
                                " ORDER BY id LIMIT ?", (after, node, limit))
        return [Message(id, sender, body, parse_db_time(sent_at), channel_id=channel_id,
                        recipient=recipient, nonce=nonce, edited=_time_or_none(edited),
                        deleted=_time_or_none(deleted))
                for id, sender, channel_id, recipient, body, sent_at, nonce, edited, deleted
                in rows]

    @defer.inlineCallbacks
    def last_message_id(self):
        rows = yield self.query("SELECT MAX(id) FROM messages")
        return rows[0][0] or 0

    def edit_message(self, message_id, author, text, at):
        """Replace the text of `author`'s message, keeping the old one in message_versions;
        fires with False if it is not theirs any more or was deleted meanwhile."""
        def edit(cursor):
            cursor.execute("INSERT INTO message_versions (message_id, body, replaced_at)"
                           " SELECT id, body, ? FROM messages"
                           " WHERE id = ? AND sender = ? AND deleted_at IS NULL",
                           (db_time(at), message_id, author))
            if cursor.rowcount != 1:
                return False
            cursor.execute("UPDATE messages SET body = ?, edited_at = ? WHERE id = ?",
                           (text, db_time(at), message_id))
            if self.search_index is not None:
                self.search_index.reindex_later(cursor, [message_id])
            return True
        return self.run("edit message", edit)

    def delete_message(self, message_id, deleted_by, at):
        """Mark the message deleted (its text stays for the admins' log); fires with False
        if it was deleted already."""
        def delete(cursor):
            cursor.execute("UPDATE messages SET deleted_at = ?, deleted_by = ?"
                           " WHERE id = ? AND deleted_at IS NULL",
                           (db_time(at), deleted_by, message_id))
            return cursor.rowcount == 1
        return self.run("delete message", delete)

    # -- search ------------------------------------------------------------------

    @defer.inlineCallbacks
    def search(self, name, words, channel_ids, place=None, before=None, limit=50):
        """([Message], more_before): messages (not deleted) whose text has every word,
        newest first, in the channels `channel_ids` and `name`'s private conversations,
        or only in `place` ((channel_id, peer_key) as for read markers, which the caller
        checked `name` may read); more_before is the id to search below for more, or
        None. Channel names are left to the caller. The index is brought up to date
        first, and one search looks at SEARCH_SCAN candidates at most (see
        chatd.searchindex), so a page may be short and still have more_before."""
        index = self.search_index
        yield index.index()
        where, params = ["m.deleted_at IS NULL"], []
        if place is not None:
            channel_id, key = place
            where.append("m.peer_key = ?" if key else "m.channel_id = ?")
            params.append(key or channel_id)
        else:
            readable = "m.peer_key IS NOT NULL AND (m.sender = ? OR m.recipient = ?)"
            params += [name, name]
            if channel_ids:
                readable += f" OR m.channel_id IN ({', '.join('?' * len(channel_ids))})"
                params += list(channel_ids)
            where.append(f"({readable})")

        def select(cursor):
            scan = index.scan(cursor, words)
            if scan is None:
                return [], None
            table, column, match, match_params, checks, check_params, few = scan
            if before is not None:
                match += f" AND {column} < ?"
                match_params += (before,)
            lowest = None   # the SEARCH_SCAN-th newest match: this request looks no further
            if not few:
                cursor.execute(f"SELECT {column} FROM {table} WHERE {match}"
                               f" ORDER BY {column} DESC LIMIT 1 OFFSET {SEARCH_SCAN - 1}",
                               match_params)
                row = cursor.fetchone()
                if row is not None:
                    lowest = row[0]
                    match += f" AND {column} >= ?"
                    match_params += (lowest,)
            cursor.execute("SELECT m.id, m.sender, m.channel_id, m.recipient, m.body, m.sent_at,"
                           f" m.nonce, m.edited_at FROM {table}"
                           f" JOIN {index.chat}messages m ON m.id = {column}"
                           f" WHERE {' AND '.join([match] + where + checks)}"
                           f" ORDER BY {column} DESC LIMIT ?",
                           match_params + tuple(params) + check_params + (limit,))
            page = [Message(id, sender, body, parse_db_time(sent_at), channel_id=channel_id,
                            recipient=recipient, nonce=nonce, edited=_time_or_none(edited))
                    for id, sender, channel_id, recipient, body, sent_at, nonce, edited
                    in cursor.fetchall()]
            return page, (page[-1].id if len(page) == limit else lowest)
        return (yield self.run("search", select, readonly=True, pool=index.pool))

    # -- conversations and read markers ----------------------------------------
    # A conversation is (channel_id, '') for a channel, (0, peer_key) for a private one.

    def conversations(self, name, channel_ids):
        """[(channel_id, peer_key, last id, last time, read marker, unread, mentions)] for
        each channel in `channel_ids` and each private conversation `name` has (channel_id
        0); unread counts the messages of others after the marker that are not deleted,
        mentions those of them that name @name (chatd.rules.is_mentioned; channels only)."""
        return self.run("conversations", self._conversations, name, channel_ids,
                        readonly=True)

    def _conversations(self, cursor, name, channel_ids):
        # One query (a login runs it): the read markers (last_read not NULL), then the
        # private conversations, as recipient and as sender (last_read NULL).
        cursor.execute("SELECT channel_id, peer_key, last_read FROM read_markers"
                       " WHERE user_name = ?"
                       " UNION ALL SELECT DISTINCT 0, peer_key, NULL FROM messages"
                       f" {self.engine.use_index('messages_by_recipient')} WHERE recipient = ?"
                       " UNION ALL SELECT DISTINCT 0, peer_key, NULL FROM messages"
                       f" {self.engine.use_index('messages_by_sender')}"
                       " WHERE sender = ? AND peer_key IS NOT NULL", (name, name, name))
        markers, keys = {}, set()
        for channel_id, key, last in cursor.fetchall():
            if last is None:
                keys.add(key)
            else:
                markers[(channel_id, key)] = last
        places = [(channel_id, "") for channel_id in channel_ids] + [(0, k) for k in sorted(keys)]
        return [place + summary for place, summary
                in zip(places, self._summaries(cursor, name, places, markers))]

    def mark_read(self, name, channel_id, key, upto):
        """Move `name`'s marker forward to the newest message at or before `upto`;
        fires with (the marker, unread after it, mentions among those)."""
        return self.run("mark read", self._mark_read, name, channel_id, key, upto)

    def _mark_read(self, cursor, name, channel_id, key, upto):
        newest = self._newest(cursor, channel_id, key, upto)
        if newest is not None:
            self._raise_marker(cursor, name, channel_id, key, newest[0])
        cursor.execute("SELECT last_read FROM read_markers WHERE user_name = ?"
                       " AND channel_id = ? AND peer_key = ?", (name, channel_id, key))
        row = cursor.fetchone()
        place = (channel_id, key)
        (_, _, marker, unread, mentions), = self._summaries(
            cursor, name, [place], {place: row[0] if row else 0})
        return marker, unread, mentions

    def _raise_marker(self, cursor, name, channel_id, key, message_id):
        cursor.execute(self.engine.insert_raising(
            "read_markers", ("user_name", "channel_id", "peer_key"), "last_read"),
            (name, channel_id, key, message_id))

    def _place(self, channel_id, key):
        """(index hint, WHERE clause, its value) that select one conversation's messages."""
        if key:
            return self.engine.use_index("messages_by_peers"), "peer_key = ?", key
        return self.engine.use_index("messages_by_channel"), "channel_id = ?", channel_id

    def _newest(self, cursor, channel_id, key, upto=None):
        """(id, time) of the conversation's newest message (at or before `upto`), or None."""
        hint, where, value = self._place(channel_id, key)
        if upto is not None:
            where += " AND id <= ?"
        cursor.execute(f"SELECT id, sent_at FROM messages {hint} WHERE {where}"
                       " ORDER BY id DESC LIMIT 1", (value,) + (() if upto is None else (upto,)))
        row = cursor.fetchone()
        return None if row is None else (row[0], parse_db_time(row[1]))

    def _summaries(self, cursor, name, places, markers):
        """[(last id, last time, marker, unread, mentions)] of each (channel_id, peer_key)
        in `places`: unread counts the newest UNREAD_COUNTED messages of others after the
        marker (`markers`, default 0) that are not deleted, mentions those of them that
        name @name (chatd.rules.is_mentioned; channels only). The newest ids come
        SUMMARIES_PER_QUERY places per query, and only a conversation with a message
        after its marker is counted: a user with hundreds of private conversations, most
        of them read, logs in with a few round trips, not two per conversation."""
        newest = {}
        for start in range(0, len(places), SUMMARIES_PER_QUERY):
            chunk = places[start:start + SUMMARIES_PER_QUERY]
            branches, params = [], []
            for n, place in enumerate(chunk):
                hint, where, value = self._place(*place)
                branches.append(f"SELECT {n}, (SELECT MAX(id) FROM messages {hint} WHERE {where})")
                params.append(value)
            cursor.execute(" UNION ALL ".join(branches), tuple(params))
            newest.update((chunk[n], id) for n, id in cursor.fetchall() if id is not None)
        times = {}
        ids = list(newest.values())
        for start in range(0, len(ids), SUMMARIES_PER_QUERY):
            chunk = ids[start:start + SUMMARIES_PER_QUERY]
            cursor.execute(f"SELECT id, sent_at FROM messages WHERE id IN"
                           f" ({', '.join('?' * len(chunk))})", tuple(chunk))
            times.update((id, parse_db_time(at)) for id, at in cursor.fetchall())
        summaries = []
        for place in places:
            last_id, marker = newest.get(place), markers.get(place, 0)
            unread, mentions = 0, 0
            if last_id is not None and last_id > marker:
                unread, mentions = self._unread(cursor, name, place, marker)
            summaries.append((last_id, times.get(last_id), marker, unread, mentions))
        return summaries

    def _unread(self, cursor, name, place, marker):
        """(unread, mentions) in `place` after `marker`: one pass counts the unread and
        the candidates for a mention (LIKE '%@name%', any case on both engines); only
        if there are any does a second pass fetch them for the rule to decide
        (chatd.rules.is_mentioned). Most unread messages name nobody, so a login
        reads each conversation's unread messages once."""
        value = self._place(*place)[2]
        if place[1]:
            cursor.execute(f"SELECT COUNT(*) FROM ({self._unread_sql(place)}) unread",
                           (value, marker, name))
            return cursor.fetchone()[0], 0
        pattern = "%@" + name.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"
        cursor.execute("SELECT COUNT(*), COALESCE(SUM(CASE WHEN body LIKE ? ESCAPE '!'"
                       f" THEN 1 ELSE 0 END), 0) FROM ({self._unread_sql(place)}) unread",
                       (pattern, value, marker, name))
        unread, candidates = cursor.fetchone()
        if not candidates:
            return unread, 0
        cursor.execute(f"SELECT body FROM ({self._unread_sql(place)}) unread"
                       " WHERE body LIKE ? ESCAPE '!'", (value, marker, name, pattern))
        return unread, sum(1 for (body,) in cursor.fetchall() if is_mentioned(body, name))

    def _unread_sql(self, place):
        """The newest UNREAD_COUNTED messages of others in `place` after a marker
        (parameters: the place's value, the marker, the user)."""
        hint, where, _ = self._place(*place)
        return (f"SELECT body FROM messages {hint}"
                f" WHERE {where} AND id > ? AND sender <> ? AND deleted_at IS NULL"
                f" ORDER BY id DESC LIMIT {UNREAD_COUNTED}")

    # -- moderation: join requests, bans, kicks, audit log, message log ------
    # (used by chatd/moderation.py; times are written with db_time, read with parse_db_time)

    def _insert_returning_id(self, sql, params):
        """Run one INSERT and fire with the new row's id."""
        def insert(cursor):
            cursor.execute(sql, params)
            return cursor.lastrowid
        return self.run(sql.split("(")[0].strip().lower(), insert)

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
        """Rows (id, sender, channel_id, recipient, body, sent_at, edited_at, deleted_at,
        deleted_by, versions), newest `limit` in [since, until), oldest first; `body` is
        the current text (kept when deleted) and `versions` the earlier ones, oldest first,
        as [(body, replaced_at)]. Every acknowledged message is committed, except
        those spooled during an outage, which are added from memory."""
        where, params = ["sent_at >= ?", "sent_at < ?"], [db_time(since), db_time(until)]
        if sender is not None:
            where.append("sender = ?")
            params.append(sender)
        if channel_id is not None:
            where.append("channel_id = ?")
            params.append(channel_id)
        spooled = [m for m in self.messages.spooled
                   if since <= m.time < until and sender in (None, m.sender)
                   and channel_id in (None, m.channel_id)]
        rows = yield self.query(
            "SELECT id, sender, channel_id, recipient, body, sent_at, edited_at, deleted_at,"
            " deleted_by FROM messages WHERE "
            + " AND ".join(where) + " ORDER BY id DESC LIMIT ?", tuple(params) + (limit,))
        by_id = {row[0]: tuple(row) for row in rows}
        for m in spooled:
            by_id[m.id] = (m.id, m.sender, m.channel_id, m.recipient, m.body, m.time,
                           None, None, None)
        page = sorted(by_id.values())[-limit:]
        versions = {}
        edited = [row[0] for row in page if row[6] is not None]
        if edited:
            found = yield self.query(
                "SELECT message_id, body, replaced_at FROM message_versions WHERE message_id IN ("
                + ", ".join("?" * len(edited)) + ") ORDER BY id", tuple(edited))
            for message_id, body, replaced_at in found:
                versions.setdefault(message_id, []).append((body, replaced_at))
        return [row + (versions.get(row[0], []),) for row in page]
