"""Parsing and dispatch, one connection on a StringTransport (the server and its database are real)."""

import json

import pytest
from twisted.internet.testing import StringTransport

from chatd.protocol import ACTIONS, ChatFactory


@pytest.fixture
def connection(sqlite_server):
    protocol = ChatFactory(sqlite_server).buildProtocol(None)
    transport = StringTransport(peerAddress=None)
    protocol.makeConnection(transport)
    protocol.transport = transport
    yield protocol, transport
    protocol.connectionLost(None)


def replies(transport):
    lines = transport.value().splitlines()
    transport.clear()
    return [json.loads(line) for line in lines]


def feed(protocol, transport, raw):
    protocol.dataReceived(raw)
    return replies(transport)


def test_every_action_has_a_handler(connection):
    protocol, _ = connection
    for key, action in ACTIONS.items():
        assert action.command is not None or callable(getattr(protocol, action.handler_name)), key


def test_lines_split_across_packets_and_crlf(connection):
    protocol, transport = connection
    assert feed(protocol, transport, b'{"list_chan') == []
    out = feed(protocol, transport, b'nels": ""}\r\n')
    assert out == [{"reply_to": "list_channels",
                    "error": "Log in first (send user:pwd), or register an account."}]


def test_several_lines_in_one_packet_are_answered_in_order(connection):
    protocol, transport = connection
    out = feed(protocol, transport, b'{"join": "x", "ref": 1}\n\n{"leave": "x", "ref": "two"}\n')
    assert [(r["reply_to"], r["ref"]) for r in out] == [("join", 1), ("leave", "two")]


def test_ref_must_be_a_string_or_integer(connection):
    protocol, transport = connection
    out = feed(protocol, transport, b'{"list_users": "", "ref": [1]}\n')
    assert out == [{"reply_to": None, "error": "'ref' must be a string or an integer."}]


def test_claim_before_login_must_match_the_login_name(connection):
    protocol, transport = connection
    out = feed(protocol, transport, b'{"user:pwd": "alice:secret-password", "user": "bob"}\n')
    assert "cannot speak as 'bob'" in out[0]["error"]


def test_unknown_action_lists_the_known_ones(connection):
    protocol, transport = connection
    out = feed(protocol, transport, b'{"hello": "world"}\n')
    assert out[0]["reply_to"] is None and "channel_message" in out[0]["error"]


def test_oversized_line_is_refused_before_parsing(connection):
    protocol, transport = connection
    protocol.dataReceived(b"{" + b" " * protocol.MAX_LENGTH + b"}\n")
    out = [json.loads(line) for line in transport.value().splitlines()]
    assert out[0]["event"] == "disconnect" and out[0]["kind"] == "abuse"
    assert transport.disconnecting


@pytest.mark.parametrize("line", [
    '{"channel_message": "half \\ud800", "channel": "general"}'.encode(),
    b'{"channel_message": "half \xed\xa0\x80", "channel": "general"}',     # raw, in UTF-8
    '{"channel_message": "half \\udfff", "channel": "general"}'.encode("utf-16-le"),
    '{"channel_message": "half \ud800", "channel": "general"}'.encode("utf-16-le",
                                                                       "surrogatepass"),
    '{"channel_message": "half \ud800", "channel": "general"}'.encode("utf-32",
                                                                       "surrogatepass"),
])
def test_a_lone_surrogate_is_refused_however_the_line_spells_it(connection, line):
    """The look for one is skipped only on a UTF-8 line with no escape and no 0xED byte."""
    protocol, transport = connection
    out = feed(protocol, transport, line + b"\n")
    assert "lone surrogate" in out[0]["error"], line
