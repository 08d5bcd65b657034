"""The shared rules (chatd/rules.py): weak passwords are refused, on a real server too."""

import subprocess
import sys

from twisted.internet import defer

from chatd import rules
from support import PASSWORD, connect, error, ok


def test_the_most_common_passwords_are_refused_whatever_their_case():
    for weak in ("password", "12345678", "Password1", "QWERTYUIOP", "iloveyou"):
        assert "most common" in rules.password_problem("alice", weak), weak
    assert rules.password_problem("alice", PASSWORD) is None
    assert len(rules.common_passwords()) == 5000


def test_a_password_equal_to_the_name_is_refused_with_the_reason():
    problem = rules.password_problem("Dave.Smith", "dave.SMITH")
    assert problem.startswith("The password must not be your name: ")
    assert rules.password_problem("dave", "dave-smith-1989") is None


def test_length_is_checked_first_and_named():
    assert rules.password_problem("alice", "short") == "A password is 8 to 128 characters long."
    assert "8 to 128" in rules.password_problem("alice", "x" * 129)


def test_message_size_rule_is_the_servers_sentence():
    assert rules.message_problem("x" * rules.MAX_MESSAGE) is None
    assert rules.message_problem("x" * 11, limit=10) == (
        "A message is at most 10 characters; this one has 11.")


def test_the_rules_import_without_twisted_or_qt():
    """The desktop client imports them; so may any other front end."""
    code = ("import sys; sys.modules['twisted'] = None; sys.modules['PyQt6'] = None; "
            "import chatd.rules as r; print(r.password_problem('a', 'password'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert "most common" in out


@defer.inlineCallbacks
def test_register_refuses_common_passwords_and_the_name(server):
    client = yield connect(server)
    for name, password in (("alice", "password"), ("alice", "12345678"),
                           ("bobsmith", "BobSmith")):
        reply = yield client.request({"register": name, "password": password,
                                      "email": f"{name}@example.org"})
        assert error(reply) == rules.password_problem(name, password)
    ok((yield client.request({"register": "alice", "password": PASSWORD,
                              "email": "alice@example.org"})))
    rows = yield server.store.query("SELECT name FROM users")
    assert [r[0] for r in rows] == ["alice"]


def test_search_words_and_the_keys_the_word_index_keeps():
    """A search and the index agree on what a word is: 3 letters or more, any case, no
    accents, cut at WORD_KEY_MAX characters."""
    assert rules.search_words("to be, or NOT to bé — that's it") == ["NOT", "that"]
    assert rules.indexed_words("Crème BRÛLÉE, crème brulee!") == {"creme", "brulee"}
    assert rules.indexed_words("Release NOTES, release it") == {"release", "notes"}
    assert rules.word_key("Straße") == "strasse"
    long = "x" * (rules.WORD_KEY_MAX + 10)
    assert rules.indexed_words(long) == {"x" * rules.WORD_KEY_MAX} == {rules.word_key(long)}
