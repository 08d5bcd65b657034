"""Flood and abuse limits: request rate per connection, login backoff, unsent output,
open connections, throttled log lines.

Everything here runs on a clock (the reactor, or twisted.internet.task.Clock in
tests) and keeps a bounded amount of state: a token bucket per connection, one
small record per account or IP with recent failed logins.
"""

import math
from collections import Counter

from twisted.internet import defer
from twisted.internet.abstract import FileDescriptor

from chatd.auth import ChatError

TOO_FAST = "You are sending too fast; wait a moment."
FLOOD_WINDOW = 10.0             # seconds in which --flood-strikes refusals end the connection
HEARTBEAT_COST = 0.25           # a `presence` line costs a quarter of a request
LOGIN_BACKOFF_START = 1.0       # seconds of backoff at the --login-failures'th failure
LOGIN_FORGET_AFTER = 3600.0     # a failure record is forgotten after an hour without failures


class TokenBucket:
    """`burst` tokens to start with, refilled at `rate` per second, never above `burst`."""

    def __init__(self, clock, rate, burst):
        self.clock = clock
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self._updated = clock.seconds()

    def take(self, cost=1.0):
        """Take `cost` tokens if there are enough; False (and nothing taken) otherwise."""
        now = self.clock.seconds()
        self.tokens = min(self.burst, self.tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True


class FloodGuard:
    """One connection's request budget, and its patience with a client that ignores refusals."""

    ALLOW, REFUSE, DISCONNECT = "allow", "refuse", "disconnect"

    def __init__(self, clock, rate, burst, strikes):
        self.clock = clock
        self.bucket = TokenBucket(clock, rate, burst)
        self.strikes = strikes
        self._refusals = []     # times of recent refusals (a list: an empty deque is 760 bytes)

    def check(self, cost=1.0):
        """ALLOW the request, REFUSE it, or DISCONNECT: `strikes` refusals within FLOOD_WINDOW."""
        if self.bucket.take(cost):
            return self.ALLOW
        now = self.clock.seconds()
        self._refusals.append(now)
        while self._refusals and self._refusals[0] <= now - FLOOD_WINDOW:
            del self._refusals[0]
        return self.DISCONNECT if len(self._refusals) >= self.strikes else self.REFUSE


class LoginThrottle:
    """Exponential backoff after repeated failed logins, per account and per IP.

    After `threshold` failures in a row for a key, logins for it are refused for
    LOGIN_BACKOFF_START seconds, doubling at each further failure up to `cap`;
    a successful login clears the account's and the IP's record. A refused
    attempt is not a failure (it does not lengthen the wait) and costs no bcrypt.
    """

    def __init__(self, clock, threshold, cap):
        self.clock = clock
        self.threshold = threshold
        self.cap = cap
        self._records = {}      # ("user", casefolded name) | ("ip", ip) -> [failures, last, until]
        self._sweep_at = 1000

    @staticmethod
    def keys(name, ip):
        return [("user", name.casefold()), ("ip", ip)]

    def wait(self, name, ip):
        """Seconds until `name` may try again from `ip` (0 if now)."""
        now = self.clock.seconds()
        waits = [record[2] - now for record in map(self._records.get, self.keys(name, ip))
                 if record is not None]
        return max([0.0] + waits)

    def check(self, name, ip):
        """Raise ChatError during a backoff, before any bcrypt or SQL work."""
        seconds = self.wait(name, ip)
        if seconds > 0:
            raise ChatError(f"Too many failed logins; try again in {math.ceil(seconds)} s.")

    def failed(self, name, ip):
        """Count one failure for the account and the IP; returns the backoff now due (s)."""
        now = self.clock.seconds()
        self._sweep(now)
        longest = 0.0
        for key in self.keys(name, ip):
            record = self._records.get(key)
            if record is None or now - record[1] > LOGIN_FORGET_AFTER:
                record = self._records[key] = [0, now, now]
            record[0] += 1
            record[1] = now
            if record[0] >= self.threshold:
                delay = min(self.cap, LOGIN_BACKOFF_START * 2 ** (record[0] - self.threshold))
                record[2] = now + delay
                longest = max(longest, delay)
        return longest

    def succeeded(self, name, ip):
        for key in self.keys(name, ip):
            self._records.pop(key, None)

    def _sweep(self, now):
        """Forget stale records; amortised, so memory follows the recent failure rate."""
        if len(self._records) < self._sweep_at:
            return
        for key, record in list(self._records.items()):
            if now - record[1] > LOGIN_FORGET_AFTER and record[2] <= now:
                del self._records[key]
        self._sweep_at = max(1000, 2 * len(self._records))


def unsent_bytes(transport):
    """Bytes written to `transport` that the peer has not yet taken (None if unknown).

    Twisted's socket transports (FileDescriptor) keep unsent data in
    `dataBuffer` (from `offset` on) plus the not-yet-joined `_tempDataBuffer`
    (`_tempDataLen` bytes). A TLS connection (TLSMemoryBIOProtocol) writes its
    ciphertext to the TCP transport below it (`.transport`), and holds cleartext
    in `_appSendBuffer` during its handshake and in its small-write aggregator
    (`_aggregator._buffer`, up to 64 kB, flushed at the next reactor turn).
    """
    return _output_bytes(transport, sent_too=False)


def held_bytes(transport):
    """Bytes of output `transport` keeps in memory (None if unknown): the unsent
    bytes, plus the part of its current buffer already sent, which Twisted frees
    only once less than its SEND_LIMIT (128 kB) of that buffer is left to send."""
    return _output_bytes(transport, sent_too=True)


def _output_bytes(transport, sent_too):
    held = 0
    while transport is not None:
        # isinstance, not hasattr: a TLS wrapper forwards unknown attributes to its transport.
        if isinstance(transport, FileDescriptor):
            sent = 0 if sent_too else transport.offset
            return held + len(transport.dataBuffer) - sent + transport._tempDataLen
        held += sum(map(len, getattr(transport, "_appSendBuffer", ())))
        held += sum(map(len, getattr(getattr(transport, "_aggregator", None), "_buffer", ())))
        transport = getattr(transport, "transport", None)
    return None


# Connections the kernel holds for chatd before they are accepted. Twisted's 50
# overflows in a login storm (every client reconnecting after a restart): the
# kernel then drops the SYNs, and each such client waits a 1 s retransmit.
# Linux caps it at net.core.somaxconn (4096 by default).
LISTEN_BACKLOG = 4096
FD_HEADROOM = 64        # descriptors kept for the database, logs, the manhole and the spool
SHUTDOWN_WAIT = 5.0     # seconds stopService waits for clients to take the goodbye and close


def default_max_connections():
    """The connection cap below this process's descriptor limit (RLIMIT_NOFILE, soft)."""
    import resource
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(1, soft - FD_HEADROOM)


class ConnectionCount:
    """Open connections, in all and per address group (an IPv4 address or an IPv6 /64).

    A connection counts from accept to connectionLost, while it closes too, so
    refused connections still waiting to take their goodbye cannot push the
    process past its descriptor limit either.
    """

    def __init__(self, clock):
        self.clock = clock
        self.total = 0
        self.per_group = Counter()
        self._empty_waiters = []

    def add(self, group):
        self.total += 1
        self.per_group[group] += 1

    def remove(self, group):
        self.total -= 1
        self.per_group[group] -= 1
        if not self.per_group[group]:
            del self.per_group[group]
        if not self.total:
            waiters, self._empty_waiters = self._empty_waiters, []
            for d in waiters:
                d.callback(True)

    def until_empty(self, timeout):
        """Deferred firing True once no connection is open, or False after `timeout` s."""
        if not self.total:
            return defer.succeed(True)
        d = defer.Deferred()
        self._empty_waiters.append(d)

        def give_up():
            if d in self._empty_waiters:
                self._empty_waiters.remove(d)
                d.callback(False)
        call = self.clock.callLater(timeout, give_up)
        d.addBoth(lambda result: (call.active() and call.cancel(), result)[1])
        return d


class LogThrottle:
    """At most one log line per `key` every `interval` seconds; counts what it held back."""

    def __init__(self, clock, interval=60.0):
        self.clock = clock
        self.interval = interval
        self._next = {}         # key -> (time the next line may be logged, lines held back)

    def allow(self, key):
        """(True, lines held back since the last one) if a line may be logged now, else (False, 0)."""
        now = self.clock.seconds()
        if len(self._next) > 1000:
            self._next = {k: v for k, v in self._next.items() if v[0] > now}
        at, held = self._next.get(key, (0.0, 0))
        if now < at:
            self._next[key] = (at, held + 1)
            return False, 0
        self._next[key] = (now + self.interval, 0)
        return True, held
