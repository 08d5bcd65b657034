"""Account checks (the rules themselves are in chatd/rules.py) and password hashing.

bcrypt is slow on purpose, so it always runs in a thread, at most
`concurrency` at once: a login storm then waits its turn instead of starving
the reactor's other work of CPU. The queue of those waiting is bounded too:
past `queue_limit`, a request is refused at once with BUSY rather than
waiting for seconds behind a spray. Priority requests (the logins of accounts
from an address they logged in from before) go first, and take the place of
the newest ordinary waiter when the queue is full.
"""

from collections import deque

import bcrypt
from twisted.internet import defer, threads

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
    def __init__(self, rounds, concurrency, queue_limit=None):
        self.rounds = rounds
        self.concurrency = concurrency
        self.queue_limit = queue_limit      # None: unbounded
        self.running = 0                    # hashes or checks running now (<= concurrency)
        self._waiting = {True: deque(), False: deque()}     # priority? -> [(Deferred, call)]
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
        call = (function, args)
        if self.running < self.concurrency:
            return self._start(call)
        if self.queue_limit is not None and self.queued >= self.queue_limit:
            ordinary = self._waiting[False]
            if not priority or not ordinary:
                self.refused += 1
                return defer.fail(ChatError(BUSY))
            bumped, _ = ordinary.pop()      # the newest ordinary waiter makes room
            self.refused += 1
            bumped.errback(ChatError(BUSY))
        d = defer.Deferred()
        self._waiting[priority].append((d, call))
        return d

    def _start(self, call):
        function, args = call
        self.running += 1
        d = threads.deferToThread(function, *args)
        d.addBoth(self._finished)
        return d

    def _finished(self, result):
        self.running -= 1
        for priority in (True, False):
            if self._waiting[priority]:
                waiter, call = self._waiting[priority].popleft()
                self._start(call).chainDeferred(waiter)
                break
        return result
