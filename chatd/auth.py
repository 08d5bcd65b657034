"""Account rules and password hashing.

bcrypt is slow on purpose, so it always runs in a thread, and a semaphore
bounds how many hashes run at once: a login storm then waits its turn instead
of starving the reactor's other work of CPU.
"""

import re
import unicodedata

import bcrypt
from twisted.internet import defer, threads

NAME_RULE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{1,31}\Z")
CHANNEL_RULE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}\Z")
EMAIL_RULE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+\Z")
PASSWORD_MIN, PASSWORD_MAX = 8, 128
# Unicode categories that print nothing: spaces, separators, controls, format
# characters (zero-width space U+200B, word joiner U+2060, BOM U+FEFF, ...).
BLANK_CATEGORIES = {"Zs", "Zl", "Zp", "Cc", "Cf"}
# Letters that render as blank space (Hangul and braille fillers).
BLANK_LETTERS = set("\u115f\u1160\u3164\uffa0\u2800")


class ChatError(Exception):
    """A request that cannot be done; the message is shown to the person who asked."""


def is_blank(text):
    """True if `text` shows nothing: only spaces and invisible characters."""
    return all(c.isspace() or c in BLANK_LETTERS or unicodedata.category(c) in BLANK_CATEGORIES
               for c in text)


def check_name(name):
    if not NAME_RULE.match(name):
        raise ChatError(
            "A name is 2 to 32 characters: a letter first, then letters, digits, '_', '.' or '-'.")


def check_channel_name(name):
    if not CHANNEL_RULE.match(name):
        raise ChatError(
            "A channel name is 1 to 32 characters: lowercase letters, digits, '_' or '-', "
            "starting with a letter or digit.")


def check_email(email):
    if len(email) > 254 or not EMAIL_RULE.match(email):
        raise ChatError("That email address does not look right; use the form name@example.org.")


def check_password(name, password):
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise ChatError(f"A password is {PASSWORD_MIN} to {PASSWORD_MAX} characters long.")
    if password.casefold() == name.casefold():
        raise ChatError("The password must not be your name.")


class PasswordHasher:
    def __init__(self, rounds=12, concurrency=2):
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
