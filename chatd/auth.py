"""Account checks (the rules themselves are in chatd/rules.py) and password hashing.

bcrypt is slow on purpose, so it always runs in a thread, and a semaphore
bounds how many hashes run at once: a login storm then waits its turn instead
of starving the reactor's other work of CPU.
"""

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


class PasswordHasher:
    def __init__(self, rounds, concurrency):
        self.rounds = rounds
        self.concurrency = concurrency
        self._slots = defer.DeferredSemaphore(concurrency)
        # Checked when the account does not exist, so a wrong name costs the
        # same time as a wrong password and does not reveal which accounts exist.
        self._dummy_hash = bcrypt.hashpw(b"no such account", bcrypt.gensalt(rounds))

    @property
    def queued(self):
        """How many hashes or checks wait for a free slot."""
        return len(self._slots.waiting)

    @property
    def running(self):
        """How many hashes or checks run now (at most `concurrency`)."""
        return self.concurrency - self._slots.tokens

    def hash(self, password):
        """Deferred firing with the hash (a str) of `password`."""
        salt = bcrypt.gensalt(self.rounds)
        return self._slots.run(threads.deferToThread, bcrypt.hashpw, password.encode(), salt
                               ).addCallback(bytes.decode)

    def check(self, password, password_hash):
        """Deferred firing True if `password` matches; pass None for a missing account."""
        if password_hash is None:
            d = self._slots.run(threads.deferToThread, bcrypt.checkpw,
                                password.encode(), self._dummy_hash)
            return d.addCallback(lambda _: False)
        return self._slots.run(threads.deferToThread, bcrypt.checkpw,
                               password.encode(), password_hash.encode())
