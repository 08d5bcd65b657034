"""Property-based fuzzing of a live server over real TCP (hypothesis).

Each property throws generated input at one running server (one per test) and
checks, after every example:

- the server still answers a well-formed request (on the same connection, or
  on a fresh one if it closed the connection, which only an over-long line may do);
- every line it sent is a JSON object, with no traceback or exception name in it,
  and nothing was logged as a failure (no "Something went wrong");
- a connection that is not logged in never receives a message, never creates
  one, and never gets a session;
- two bystanders, logged in and talking in #general the whole time, receive
  every one of their messages, in order, and nothing "from" them they did not send.

The budget is CHATD_FUZZ_EXAMPLES examples per property (default 200); see
docs/security.md.
"""

import json
import os
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher

from chatd.protocol import ACTIONS
from support import (LIMITS_LIFTED, PASSWORD, connect, login, look_at, register, start_server,
                     stop_server, wait)

FUZZ_EXAMPLES = int(os.environ.get("CHATD_FUZZ_EXAMPLES", "200"))
fuzz = settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])

PROBE = "fuzz-probe"
# The fuzzer knows mallory's password (PASSWORD), never the bystanders'.
BYSTANDER_PASSWORD = "bystanders keep this one secret"
LEAK_MARKERS = re.compile(
    r'Traceback|File "|\b\w+(Error|Exception)\b|Something went wrong')
MESSAGE_KEYS = ("channel_message", "private_message")


# -- strategies ------------------------------------------------------------------------

MAX_LINE = 16384
names = st.sampled_from(["alice", "bob", "mallory", "ALICE", "Bob", "root", "", "nobody",
                         "general", "secret"])
surrogate_text = st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
                         min_size=1, max_size=3)
texts = st.one_of(st.text(max_size=40), surrogate_text,
                  st.text(max_size=10).map(lambda t: t + "\x00" + t), names,
                  st.sampled_from(["help", "/help", "ban bob", "kick alice", "log user alice",
                                   "alice:" + PASSWORD, "mallory:" + PASSWORD, "online", "away"]))
huge_numbers = st.one_of(st.integers(), st.integers(min_value=2**63 - 2, max_value=2**70),
                         st.integers(min_value=-2**70, max_value=-2**63 + 2),
                         st.just(10**300), st.just(-(10**300)))
scalars = st.one_of(st.none(), st.booleans(), huge_numbers,
                    st.floats(allow_nan=True, allow_infinity=True), texts)
json_values = st.recursive(
    scalars, lambda children: st.one_of(st.lists(children, max_size=4),
                                        st.dictionaries(st.one_of(texts, st.sampled_from(
                                            list(ACTIONS))), children, max_size=4)),
    max_leaves=12)
deep_nesting = st.integers(min_value=1, max_value=MAX_LINE // 2 - 2).flatmap(
    lambda n: st.sampled_from([b"[" * n + b"]" * n, b'{"a":' * n + b"1" + b"}" * n,
                               b"[" * n]))


def as_line(value):
    return json.dumps(value, allow_nan=True).encode()


raw_lines = st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=40).map(lambda b: b + b"\x00" + b),
    st.binary(max_size=40).map(lambda b: b"\xff\xfe" + b + b"\xc3\x28\xed\xa0\x80"),
    st.tuples(st.binary(min_size=1, max_size=8), st.integers(min_value=1, max_value=6000)).map(
        lambda t: t[0] * t[1]),                         # long lines, some over the limit
    st.text(max_size=100).map(str.encode),
    json_values.map(as_line).map(lambda b: b[:-1] if len(b) > 1 else b),   # cut short
    deep_nesting,
)
# Every declared field, the two every request may carry, and one no action has.
field_names = st.sampled_from(sorted({f.name for a in ACTIONS.values() for f in a.fields}
                                     | {"user", "ref", "colour"}))


@st.composite
def requests(draw):
    """A known action with random field values and types, often with a forged `user`."""
    action = draw(st.sampled_from(list(ACTIONS)))
    request = {action: draw(st.one_of(texts, json_values))}
    for field in draw(st.lists(field_names, max_size=4, unique=True)):
        request[field] = draw(st.one_of(texts, json_values, names))
    return request


# -- the arena: one server, two bystanders, the fuzzing account -------------------------


class Arena:
    def __init__(self, server):
        self.server = server
        self.failures = []
        self.alice = wait(login(server, "alice", BYSTANDER_PASSWORD))
        self.bob = wait(login(server, "bob", BYSTANDER_PASSWORD))
        for client in (self.alice, self.bob):
            wait(look_at(client, "general"))
        wait(register(server, "mallory"))
        mallory = wait(login(server, "mallory", register_first=False))
        wait(mallory.request({"join": "general"}))
        self.close(mallory)
        self.said = []          # (speaker, text) of every bystander message, in order

    def observe(self, event):
        if event.get("log_failure") is not None or event.get("log_level").name in (
                "warn", "error", "critical"):
            self.failures.append(event)

    @staticmethod
    def close(client):
        if client.transport.connected:
            client.transport.loseConnection()
        wait(client.closed)

    def bystanders_talk(self):
        # Heartbeats, as a real client sends every 5 s: a long run outlasts --presence-timeout.
        for client in (self.alice, self.bob):
            client.send({"presence": "online", "channel": "general"})
        speaker = self.alice if len(self.said) % 2 == 0 else self.bob
        text = f"bystander line {len(self.said)}"
        self.said.append((speaker.name, text))
        speaker.send({"channel_message": text, "channel": "general"})

    def throw(self, lines, logged_in):
        """Send `lines` (bytes, newline-joined) on a fresh connection, then check everything."""
        client = wait(login(self.server, "mallory", register_first=False) if logged_in
                      else connect(self.server))
        next_id = self.server.store.messages.accepted["mallory"]
        client.inbox_raw = []
        original = client.lineReceived

        def record(line):
            client.inbox_raw.append(line)
            try:
                original(line)
            except ValueError:
                pass        # not JSON: reported by the check below
        client.lineReceived = record
        client.send_raw(b"\n".join(lines) + b"\n")
        client.send({"list_channels": "", "ref": PROBE})
        answered = client.wait_for(lambda m: m.get("ref") == PROBE
                                   or m.get("event") == "disconnect")
        answered.addErrback(lambda failure: None)   # closed without a word: caught below
        answer, _ = wait(defer.DeferredList([answered, client.closed], fireOnOneCallback=True))
        assert answer is not None, "the server closed the connection without saying why"
        self.bystanders_talk()
        for raw in client.inbox_raw:
            check_server_line(raw)
        if not logged_in:
            self.check_logged_out(client, [json.loads(raw) for raw in client.inbox_raw], next_id)
        if answer.get("event") == "disconnect":
            assert answer["kind"] in ("abuse", "replaced"), answer
            assert answer["kind"] == "replaced" or any(len(line) > MAX_LINE for line in lines)
            wait(client.closed)
            fresh = wait(connect(self.server))
            probe = wait(fresh.request({"list_channels": ""}))
            assert "reply_to" in probe, probe
            self.close(fresh)
        else:
            assert answer["reply_to"] == "list_channels", answer
        assert not self.failures, [formatEvent(e) for e in self.failures]
        self.close(client)

    def check_logged_out(self, client, received, next_id):
        """Nothing reaches or comes from a connection until it logs in (as mallory, if ever)."""
        logins = [i for i, m in enumerate(received)
                  if m.get("reply_to") == "user:pwd" and m.get("ok")]
        if logins:      # the fuzzer guessed mallory's login: from there on it may talk
            assert all(received[i]["user"] == "mallory" for i in logins), received
            received = received[:logins[0]]
        assert not [m for m in received if any(k in m for k in MESSAGE_KEYS)], received
        assert not [m for m in received if m.get("event") not in (None, "disconnect")]
        if not logins:
            assert self.server.store.messages.accepted["mallory"] == next_id, "a message was created"
            server_side = client_server_side(self.server, client)
            assert all(s.connection is not server_side for s in self.server.hub.sessions.values())

    def check_bystanders(self):
        """Both bystanders got every bystander message, each speaker's in the order sent,
        both in the same order (the order stored), and nothing forged."""
        for client in (self.alice, self.bob):
            ok = wait(client.request({"channel_message": "still fine", "channel": "general"}))
            assert ok.get("ok"), ok
        heard_by = []
        for client in (self.alice, self.bob):
            heard = [(m["user"], m["channel_message"]) for m in client.inbox
                     if m.get("channel") == "general" and "channel_message" in m
                     and m["user"] in ("alice", "bob") and m["channel_message"] != "still fine"]
            assert sorted(heard) == sorted(self.said), heard
            for speaker in ("alice", "bob"):
                assert [h for h in heard if h[0] == speaker] == \
                    [s for s in self.said if s[0] == speaker], heard
            heard_by.append(heard)
        assert heard_by[0] == heard_by[1]
        wait(self.server.store.messages.drained())
        rows = wait(self.server.store.query(
            "SELECT sender, body FROM messages WHERE sender IN ('alice', 'bob') ORDER BY id"))
        # "still fine" was sent while the last bystander lines may still have been
        # waiting for their commit, so it can sort among them: leave it out.
        stored = [tuple(r) for r in rows if r[1] != "still fine"]
        assert stored[:len(self.said)] == heard_by[0]


def client_server_side(server, client):
    """The server's protocol instance for `client`'s connection (matched by port)."""
    port = client.transport.getHost().port
    for connection in server.hub.connections:
        if connection.transport.getPeer().port == port:
            return connection
    return None


def check_server_line(raw):
    """A line from the server: a JSON object, with no trace of a Python exception."""
    text = raw.decode("utf-8")
    message = json.loads(text)
    assert isinstance(message, dict), text
    if any(key in message for key in MESSAGE_KEYS) or message.get("reply_to") in (
            "get_channel", "get_private", "search") or message.get("event") == "message_edited":
        return      # relayed user text may contain anything
    message.pop("ref", None)    # the client's own value, echoed as it was sent
    assert not LEAK_MARKERS.search(json.dumps(message, ensure_ascii=False)), text


def run_arena(database):
    """Build an Arena on a running server, watch the log, check the bystanders at the end."""
    server = start_server(database, **LIMITS_LIFTED)
    arena = Arena(server)
    globalLogPublisher.addObserver(arena.observe)
    try:
        yield arena
        if arena.said:
            arena.check_bystanders()
        assert not arena.failures, [formatEvent(e) for e in arena.failures]
    finally:
        globalLogPublisher.removeObserver(arena.observe)
        stop_server(server)


@pytest.fixture
def sqlite_arena(sqlite_database):
    yield from run_arena(sqlite_database)


@pytest.fixture
def arena(database):
    yield from run_arena(database)


# -- properties --------------------------------------------------------------------------


@fuzz
@given(lines=st.lists(raw_lines, min_size=1, max_size=4), logged_in=st.booleans())
def test_random_bytes_never_break_the_server(sqlite_arena, lines, logged_in):
    sqlite_arena.throw(lines, logged_in)


@fuzz
@given(values=st.lists(json_values, min_size=1, max_size=4), logged_in=st.booleans())
def test_random_json_values_get_an_error_line_each(sqlite_arena, values, logged_in):
    sqlite_arena.throw([as_line(v) for v in values], logged_in)


@fuzz
@given(batch=st.lists(requests(), min_size=1, max_size=5))
def test_random_requests_before_login_do_nothing(sqlite_arena, batch):
    sqlite_arena.throw([as_line(r) for r in batch], logged_in=False)


@fuzz
@given(batch=st.lists(requests(), min_size=1, max_size=5))
def test_random_requests_after_login_never_break_storage_or_bystanders(arena, batch):
    arena.throw([as_line(r) for r in batch], logged_in=True)
