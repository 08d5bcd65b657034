"""Account checks (the rules themselves are in chatd/rules.py) and password hashing.

bcrypt is slow on purpose, so it always runs in a thread, at most
`concurrency` at once: a login storm then waits its turn instead of starving
the reactor's other work of CPU. The queue of those waiting is bounded too:
past `queue_limit`, a request is refused at once with BUSY rather than
waiting for seconds behind a spray. Priority requests (the logins of accounts
from an address they logged in from before) go first, and take the place of
the newest ordinary waiter when the queue is full.
"""

import queue
import threading
from collections import deque

import bcrypt
from twisted.internet import defer
from twisted.python.failure import Failure

from chatd import rules


class ChatError(Exception):
    """A request that cannot be done; the message is shown to the person who asked."""


def _refuse(problem):
    if problem is not None:
        raise ChatError(problem)


def check_name(name):
    _refuse(rules.name_problem(name))


def check_channel_name(name):
    _refuse(rules.channel_name_problem(name))


def check_email(email):
    _refuse(rules.email_problem(email))


def check_password(name, password):
    _refuse(rules.password_problem(name, password))


BUSY = "The server is busy; try again in a moment."


class PasswordHasher:
    """bcrypt in `concurrency` threads of its own, fed from two bounded waiting lines.

    A thread that finishes takes the next waiter itself, without a round trip
    through the reactor: in a login storm the reactor is busy, and handing each
    next check over from there left the bcrypt threads idle between checks
    (10,000 logins at cost 4 kept them under half busy). The reactor still
    decides who waits and who is refused, so `running` and `queued` mean what
    they did: checks computing or handed over (at most `concurrency`), and
    checks waiting for one of those.
    """

    def __init__(self, rounds, concurrency, queue_limit=None):
        from twisted.internet import reactor
        self._reactor = reactor
        self.rounds = rounds
        self.concurrency = concurrency
        self.queue_limit = queue_limit      # None: unbounded
        self.running = 0                    # hashes or checks running now (<= concurrency)
        self._waiting = {True: deque(), False: deque()}     # priority? -> [(Deferred, call)]
        self._lock = threading.Lock()       # running and _waiting, shared with the threads
        self._handed = queue.SimpleQueue()  # (Deferred, call) for an idle thread; None stops
        self._threads = []                  # started at the first use
        self.refused = 0                    # requests refused with BUSY so far
        # Checked when the account does not exist, so a wrong name costs the
        # same time as a wrong password and does not reveal which accounts exist.
        self._dummy_hash = bcrypt.hashpw(b"no such account", bcrypt.gensalt(rounds))

    @property
    def queued(self):
        """How many hashes or checks wait for a free slot."""
        return len(self._waiting[True]) + len(self._waiting[False])

    def hash(self, password, priority=False):
        """Deferred firing with the hash (a str) of `password`; ChatError(BUSY) if full."""
        salt = bcrypt.gensalt(self.rounds)
        return self._run(priority, bcrypt.hashpw, password.encode(), salt
                         ).addCallback(bytes.decode)

    def check(self, password, password_hash, priority=False):
        """Deferred firing True if `password` matches; pass None for a missing account."""
        if password_hash is None:
            d = self._run(priority, bcrypt.checkpw, password.encode(), self._dummy_hash)
            return d.addCallback(lambda _: False)
        return self._run(priority, bcrypt.checkpw, password.encode(), password_hash.encode())

    def _run(self, priority, function, *args):
        d = defer.Deferred()
        bumped = None
        with self._lock:
            if self.running < self.concurrency:
                self.running += 1
                self._start_threads()
                self._handed.put((d, (function, args)))
                return d
            if self.queue_limit is not None and self.queued >= self.queue_limit:
                ordinary = self._waiting[False]
                if not priority or not ordinary:
                    self.refused += 1
                    return defer.fail(ChatError(BUSY))
                bumped, _ = ordinary.pop()      # the newest ordinary waiter makes room
                self.refused += 1
            self._waiting[priority].append((d, (function, args)))
        if bumped is not None:
            bumped.errback(ChatError(BUSY))
        return d

    def _start_threads(self):
        while len(self._threads) < self.concurrency:
            thread = threading.Thread(target=self._work, name=f"bcrypt-{len(self._threads)}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def _work(self):
        job = self._handed.get()
        while job is not None:
            d, (function, args) = job
            try:
                result = function(*args)
            except BaseException:
                self._reactor.callFromThread(d.errback, Failure())
            else:
                self._reactor.callFromThread(d.callback, result)
            with self._lock:
                job = self._next_waiter()
            if job is None:
                job = self._handed.get()

    def _next_waiter(self):
        """The next waiter (priority first) for this slot, or None and the slot is freed."""
        for priority in (True, False):
            if self._waiting[priority]:
                return self._waiting[priority].popleft()
        self.running -= 1
        return None

    def stop(self):
        """Let the threads end after the checks handed over (at service stop; not waited
        for: a check at a high cost takes a while, and the reactor must not block)."""
        threads, self._threads = self._threads, []
        for _ in threads:
            self._handed.put(None)
