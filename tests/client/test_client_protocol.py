"""The wire layer and the model's pure parts, without a server: StringTransport and a fake clock."""

import json
from datetime import datetime, timezone

import pytest
from twisted.internet import task
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from qtclient.entities import ChatMessage, Conversation
from qtclient.model import ActivityMonitor, ServerAddress, field_of_error, parse_address
from qtclient.protocol import ChatProtocol, ServerError


class Receiver:
    def __init__(self):
        self.lines, self.lost = [], []

    def connection_made(self, protocol):
        pass

    def server_line(self, line):
        self.lines.append(line)

    def connection_lost(self, protocol, reason):
        self.lost.append(reason)


@pytest.fixture
def wire():
    receiver = Receiver()
    protocol = ChatProtocol(receiver)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport, receiver


def sent(transport):
    return [json.loads(line) for line in transport.value().splitlines()]


def test_request_is_one_json_line_with_a_ref_and_its_reply_fires_the_deferred(wire):
    protocol, transport, receiver = wire
    first = protocol.request("join", "general")
    second = protocol.request("leave", "random")
    assert sent(transport) == [{"join": "general", "ref": 1}, {"leave": "random", "ref": 2}]
    replies = []
    second.addCallback(replies.append)
    first.addCallback(replies.append)
    protocol.dataReceived(b'{"reply_to": "leave", "ok": true, "ref": 2}\n'
                          b'{"reply_to": "join", "ok": true, "status": "joined", "ref": 1}\r\n')
    assert [r["reply_to"] for r in replies] == ["leave", "join"]
    assert receiver.lines == []


def test_error_reply_fails_with_the_servers_message(wire):
    protocol, _, _ = wire
    failures = []
    protocol.request("join", "genral").addErrback(failures.append)
    protocol.dataReceived(b'{"reply_to": "join", "error": "There is no channel named \'genral\'.", "ref": 1}\n')
    assert failures[0].check(ServerError)
    assert failures[0].value.message == "There is no channel named 'genral'."


def test_events_relays_and_unawaited_replies_go_to_the_receiver(wire):
    protocol, _, receiver = wire
    protocol.dataReceived(
        b'{"event": "unread", "channel": "general", "count": 2}\n'
        b'{"reply_to": "presence", "error": "Give channel or other_user, not both."}\n'
        b'not json\n[1, 2]\n')
    assert receiver.lines == [
        {"event": "unread", "channel": "general", "count": 2},
        {"reply_to": "presence", "error": "Give channel or other_user, not both."}]


def test_lost_connection_fails_waiting_requests(wire):
    protocol, _, receiver = wire
    failures = []
    protocol.request("list_users").addErrback(failures.append)
    protocol.connectionLost(Failure(ConnectionLost()))
    assert failures[0].check(ConnectionLost)
    assert len(receiver.lost) == 1


def test_history_pages_longer_than_the_servers_input_limit_are_accepted(wire):
    protocol, _, receiver = wire
    big = {"event": "members", "channel": "c", "members": [{"user": "x" * 30, "status": "online"}] * 3000}
    protocol.dataReceived(json.dumps(big).encode() + b"\n")
    assert receiver.lines == [big]


@pytest.mark.parametrize("text, expected", [
    ("localhost:7000", ServerAddress("localhost", 7000)),
    ("chat.example.org", ServerAddress("chat.example.org", 7878)),
    ("[::1]:9000", ServerAddress("::1", 9000)),
    (" 127.0.0.1:1 ", ServerAddress("127.0.0.1", 1)),
    ("tls://chat.example.org:7879", ServerAddress("chat.example.org", 7879, tls=True)),
    ("TLS://chat.example.org", ServerAddress("chat.example.org", 7878, tls=True)),
    ("tcp://localhost:7000", ServerAddress("localhost", 7000)),
])
def test_parse_address(text, expected):
    assert parse_address(text) == expected
    assert parse_address(str(expected)) == expected


@pytest.mark.parametrize("text", ["", "host:", "host:port", ":80", "host:70000", "tls://",
                                  "http://host:80"])
def test_parse_address_refuses_what_is_not_an_address(text):
    with pytest.raises(ValueError):
        parse_address(text)


@pytest.mark.parametrize("message, field", [
    ("The name 'alice' is taken. Pick another one.", "name"),
    ("The email must look like someone@example.org.", "email"),
    ("The password must not be the name.", "password"),
    ("Missing field 'email'.", "email"),
    ("Something else went wrong.", ""),
])
def test_register_errors_are_attached_to_their_field(message, field):
    assert field_of_error(message) == field


def test_private_message_belongs_to_the_other_persons_conversation_on_both_sides():
    line = {"private_message": "psst", "user": "alice", "other_user": "bob", "id": 7,
            "time": "2026-11-24T13:20:02.456Z"}
    assert ChatMessage.from_line(line, "alice").conversation == Conversation.private("bob")
    assert ChatMessage.from_line(line, "bob").conversation == Conversation.private("alice")
    assert ChatMessage.from_line(line, "bob").time == datetime(
        2026, 11, 24, 13, 20, 2, 456000, tzinfo=timezone.utc)


def test_activity_monitor_goes_away_after_the_idle_time_and_reports_coming_back(qtbot):
    clock = task.Clock()
    monitor = ActivityMonitor(clock, away_after=60)
    resumed = []
    monitor.activityResumed.connect(lambda: resumed.append(clock.seconds()))
    clock.advance(59)
    monitor.touch()
    clock.advance(59)
    assert monitor.status == "online" and resumed == []
    clock.advance(1)
    assert monitor.status == "away"
    monitor.touch()
    assert monitor.status == "online" and resumed == [119]


def test_chatd_client_refuses_a_missing_certificate_file_before_opening_a_window(capsys):
    from qtclient.app import main
    with pytest.raises(SystemExit) as exit_info:
        main(["--ca-file", "/nonexistent/server.pem"])
    assert exit_info.value.code == 2
    assert "--ca-file: no such file: /nonexistent/server.pem" in capsys.readouterr().err
