"""The rules for names, passwords, email addresses and message size, written once.

The server enforces them (chatd/auth.py turns a problem into a ChatError) and
the desktop client checks the same rules as you type, so this module imports
neither Twisted nor Qt. Each `*_problem` function returns None when the value
is fine, else the sentence to show, which is the same on both sides.
"""

import functools
import re
import unicodedata
from importlib import resources

NAME_RULE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{1,31}\Z")
CHANNEL_RULE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}\Z")
EMAIL_RULE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+\Z")
EMAIL_MAX = 254
PASSWORD_MIN, PASSWORD_MAX = 8, 128
MAX_MESSAGE = 4000      # characters; the server's --max-message default
MAX_NONCE = 64          # characters in a message's resend key (its "nonce")
WORD_RULE = re.compile(r"\w+")   # what a search and the search index call a word
SEARCH_MIN_WORD = 3     # shorter words are not searched for: they would match almost everything
WORD_KEY_MAX = 64       # characters of a word that MariaDB's word index keeps
# Unicode categories that print nothing: spaces, separators, controls, format
# characters (zero-width space U+200B, word joiner U+2060, BOM U+FEFF, ...).
BLANK_CATEGORIES = {"Zs", "Zl", "Zp", "Cc", "Cf"}
# Letters that render as blank space (Hangul and braille fillers).
BLANK_LETTERS = set("\u115f\u1160\u3164\uffa0\u2800")


def name_problem(name):
    if not NAME_RULE.match(name):
        return ("A name is 2 to 32 characters: a letter first, then letters, digits, "
                "'_', '.' or '-'.")
    return None


def channel_name_problem(name):
    if not CHANNEL_RULE.match(name):
        return ("A channel name is 1 to 32 characters: lowercase letters, digits, '_' or '-', "
                "starting with a letter or digit.")
    return None


@functools.lru_cache(maxsize=8192)     # the same few names are folded again and again
def fold(name):
    """The one form in which names (accounts and channels) are compared: NFKC, then casefold.

    Every comparison of two names goes through this, on the server and in the
    client, so no two parts of the code disagree on whether two names are the same.
    """
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def _key(name, problem):
    """fold(name) if `name` is a name at all, else None.

    Folding is many-to-one ('\u017f' folds to 's', the Kelvin sign to 'k'), so the
    rules are applied to the folded form *and* only ASCII is admitted as given:
    a character that only becomes a valid one by folding names nothing.
    """
    if not isinstance(name, str) or not name.isascii():
        return None
    folded = fold(name)
    return folded if problem(folded) is None else None


def name_key(name):
    """The key an account name is looked up by, or None if it cannot be an account's."""
    return _key(name, name_problem)


def channel_key(name):
    """The key a channel name is looked up by ('General' finds 'general'), or None."""
    return _key(name, channel_name_problem)


# Characters that look alike, after Unicode TR39's confusables (a small table:
# the look-alikes among the characters names may use, and the Cyrillic and Greek
# letters that pass for Latin ones). Applied to the folded name.
CONFUSABLE_SEQUENCES = (("rn", "m"), ("vv", "w"))
CONFUSABLE_CHARACTERS = str.maketrans({
    "1": "l", "i": "l", "0": "o", "_": "-", ".": "-",
    # Cyrillic
    "\u0430": "a", "\u0435": "e", "\u043e": "o", "\u0440": "p", "\u0441": "c",
    "\u0443": "y", "\u0445": "x", "\u0456": "l", "\u0458": "j", "\u0455": "s",
    "\u04bb": "h", "\u0501": "d", "\u0432": "b", "\u043a": "k", "\u043c": "m",
    "\u043d": "h", "\u0442": "t",
    # Greek
    "\u03bf": "o", "\u03b1": "a", "\u03bd": "v", "\u03c1": "p", "\u03b9": "l",
    "\u03ba": "k", "\u03c5": "u", "\u03c7": "x", "\u03b5": "e", "\u03c4": "t",
})


def skeleton(name):
    """What a name looks like: equal skeletons are names a reader could take for each other
    ('AIice' and 'alice', 'rnallory' and 'mallory', 'b0b' and 'bob')."""
    text = fold(name).translate(CONFUSABLE_CHARACTERS)
    for sequence, replacement in CONFUSABLE_SEQUENCES:
        text = text.replace(sequence, replacement)
    return text


def email_problem(email):
    if len(email) > EMAIL_MAX or not EMAIL_RULE.match(email):
        return "That email address does not look right; use the form name@example.org."
    return None


@functools.cache
def common_passwords():
    """The bundled list of the most common passwords (lowercased), loaded once."""
    text = resources.files("chatd").joinpath("common-passwords.txt").read_text("utf-8")
    return frozenset(line for line in text.splitlines() if line and not line.startswith("#"))


def password_problem(name, password):
    """Length, not the name, and not one of the passwords attackers try first."""
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        return f"A password is {PASSWORD_MIN} to {PASSWORD_MAX} characters long."
    if password.casefold() == name.casefold():
        return "The password must not be your name: it is the first one anybody would try."
    if password.lower() in common_passwords():
        return ("That password is one of the most common ones, which attackers try first; "
                "pick a longer or less usual one.")
    return None


def is_blank(text):
    """True if `text` shows nothing: only spaces and invisible characters."""
    return all(c.isspace() or c in BLANK_LETTERS or unicodedata.category(c) in BLANK_CATEGORIES
               for c in text)


def message_problem(text, limit=MAX_MESSAGE):
    if len(text) > limit:
        return f"A message is at most {limit} characters; this one has {len(text)}."
    return None


def search_words(text):
    """The words a search for `text` looks for, as typed (the client highlights them)."""
    return [w for w in WORD_RULE.findall(text) if len(w) >= SEARCH_MIN_WORD]


def word_key(word):
    """The form in which MariaDB's word index keeps a word and looks it up: any case,
    accents dropped (as SQLite's FTS5 tokenizer does), at most WORD_KEY_MAX characters."""
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))[:WORD_KEY_MAX]


def indexed_words(text):
    """The distinct word keys under which a message's text is found."""
    if text.isascii():  # most chat text: word_key is lower() there, and 4x cheaper
        return {w.lower()[:WORD_KEY_MAX] for w in search_words(text)}
    return {word_key(w) for w in search_words(text)}


def is_mentioned(text, name):
    """Whether `text` names `name` as @name (any case, not inside a longer name): a
    mention, which the server counts apart and the client notifies."""
    return re.search(rf"(?<![\w@])@{re.escape(name)}(?![\w]|[.-]\w)", text,
                     re.IGNORECASE) is not None
