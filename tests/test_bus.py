"""The bus (chatd/bus.py) in one process: real LocalBus, real Hub and Sessions
on a Clock. A bus that sends everything through JSON, as one on a network
must, runs the hub's deliveries and controls unchanged.
"""

import json
from datetime import datetime

import pytest
from twisted.internet.task import Clock

from chatd.accounts import Accounts
from chatd.bus import ADMINS, CONNECTIONS, LocalBus, encode, user_topic
from chatd.hub import Channel, Hub
from chatd.store import Message
from test_presence import RecordingConnection


class Subscriber:
    """Records what the bus hands it, in order."""

    def __init__(self, id, bus=None):
        self.id, self.bus, self.got = id, bus, []

    def deliver(self, topic, line):
        self.got.append(("deliver", topic, line))

    def control(self, topic, action, data):
        self.got.append(("control", topic, action, data))
        if action == "leave":
            self.bus.unsubscribe(topic, self)


def test_a_publish_is_encoded_once_and_the_same_bytes_reach_everyone_but_the_excluded():
    bus = LocalBus()
    subscribers = [Subscriber(f"s{n}") for n in range(3)]
    for subscriber in subscribers:
        bus.subscribe(("channel", "general"), subscriber)
    bus.publish(("channel", "general"), {"event": "member", "user": "é"}, exclude="s1")
    first, excluded, third = subscribers
    assert excluded.got == []
    assert first.got == [("deliver", ("channel", "general"), encode({"event": "member",
                                                                     "user": "é"}))]
    assert first.got[0][2] is third.got[0][2]           # one encoding, shared
    bus.publish(("channel", "random"), {"nobody": "listens"})
    assert len(first.got) == 1


class ManySubscriber(Subscriber):
    def deliver_many(self, topic, lines, chunk):
        self.got.append(("deliver_many", topic, lines, chunk))


def test_publish_many_hands_each_subscriber_the_lines_once_and_joined():
    bus = LocalBus()
    subscribers = [ManySubscriber(f"s{n}") for n in range(2)]
    for subscriber in subscribers:
        bus.subscribe(("members", "general"), subscriber)
    bus.publish_many(("members", "general"), [{"n": 1}, {"n": 2}, {"n": 3}])
    (kind, _, lines, chunk), = subscribers[0].got
    assert kind == "deliver_many" and lines == [encode({"n": n}) for n in (1, 2, 3)]
    assert chunk == b"".join(lines) and subscribers[1].got[0][3] is chunk
    bus.publish_many(("members", "general"), [{"n": 4}])     # one line: a plain deliver
    assert subscribers[0].got[-1] == ("deliver", ("members", "general"), encode({"n": 4}))


def test_publish_and_control_keep_their_order_on_a_topic():
    bus = LocalBus()
    subscriber = Subscriber("s", bus)
    bus.subscribe(user_topic("bob"), subscriber)
    bus.publish(user_topic("bob"), {"n": 1})
    bus.control(user_topic("bob"), "role", {"role": "admin"})
    bus.publish(user_topic("bob"), {"n": 2})
    assert [g[0] for g in subscriber.got] == ["deliver", "control", "deliver"]
    assert [json.loads(g[2])["n"] for g in subscriber.got if g[0] == "deliver"] == [1, 2]


def test_subscriptions_are_idempotent_and_belong_to_their_subscriber():
    bus = LocalBus()
    mine, impostor = Subscriber("same-id", bus), Subscriber("same-id", bus)
    bus.subscribe(ADMINS, mine)
    bus.subscribe(ADMINS, mine)
    bus.unsubscribe(ADMINS, impostor)           # another object with the same id: no effect
    bus.publish(ADMINS, {"x": 1})
    assert len(mine.got) == 1
    bus.unsubscribe(ADMINS, mine)
    bus.unsubscribe(ADMINS, mine)
    bus.publish(ADMINS, {"x": 2})
    assert len(mine.got) == 1


def test_a_subscriber_may_leave_while_a_control_is_being_delivered():
    bus = LocalBus()
    leaving = [Subscriber(f"s{n}", bus) for n in range(3)]
    for subscriber in leaving:
        bus.subscribe(CONNECTIONS, subscriber)
    bus.control(CONNECTIONS, "leave", {})
    assert all(len(s.got) == 1 for s in leaving)
    bus.control(CONNECTIONS, "leave", {})
    assert all(len(s.got) == 1 for s in leaving)


class WireBus(LocalBus):
    """Every topic, payload and control goes through JSON, as on a network bus;
    anything not plain JSON data fails here."""

    def __init__(self):
        super().__init__()
        self.sent = []

    @staticmethod
    def _wire(value):
        return json.loads(json.dumps(value, allow_nan=False))

    def publish(self, topic, payload, exclude=None):
        self.sent.append(("publish", topic, payload))
        super().publish(tuple(self._wire(topic)), self._wire(payload), self._wire(exclude))

    def publish_many(self, topic, payloads):
        self.sent.append(("publish_many", topic, payloads))
        super().publish_many(tuple(self._wire(topic)), self._wire(payloads))

    def control(self, topic, action, data):
        self.sent.append(("control", topic, action))
        super().control(tuple(self._wire(topic)), self._wire(action), self._wire(data))


@pytest.fixture
def wire_hub():
    bus = WireBus()
    hub = Hub(store=None, accounts=Accounts(None, None, None), clock=Clock(),
              max_message=4000, presence_timeout=15.0, bus=bus)
    hub.channels["general"] = Channel(1, "general", False)
    return hub, bus


def log_in(hub, name, ip="127.0.0.1", role="user", member=True):
    hub.accounts.add(name, role)
    if member:
        hub.channels["general"].members.add(name)
    connection = RecordingConnection()
    connection.ip = ip
    hub.add_connection(connection)
    return hub.start_session(connection, name, ip), connection


def message(id, sender, channel=None, recipient=None):
    return Message(id, sender, f"text {id}", datetime(2026, 12, 1), channel=channel,
                   channel_id=1 if channel else None, recipient=recipient)


def test_the_hub_runs_unchanged_on_a_bus_that_serialises_everything(wire_hub):
    hub, bus = wire_hub
    alice, alice_out = log_in(hub, "alice", role="admin")
    bob, bob_out = log_in(hub, "bob")
    carol, carol_out = log_in(hub, "carol", member=False)
    hub.presence.heartbeat(alice, "online", channel="general")

    hub.relay([message(1, "alice", channel="general")])
    assert alice_out.events()[-1]["channel_message"] == "text 1"
    assert bob_out.events()[-1] == {"event": "unread", "channel": "general", "count": 1}
    assert not any("channel_message" in e or e.get("event") == "unread"
                   for e in carol_out.events())

    hub.relay([message(2, "carol", recipient="bob")])
    assert bob_out.events()[-1]["private_message"] == "text 2"
    assert carol_out.events()[-1]["private_message"] == "text 2"

    hub.add_member(hub.channels["general"], "carol")
    hub.relay([message(3, "alice", channel="general")])
    assert carol_out.events()[-1] == {"event": "unread", "channel": "general", "count": 1}
    hub.remove_member(hub.channels["general"], "carol")
    hub.relay([message(4, "alice", channel="general")])
    assert [e["count"] for e in carol_out.events() if e.get("event") == "unread"] == [1]

    bus.control(user_topic("bob"), "role", {"role": "admin"})
    bus.publish(ADMINS, {"event": "join_request", "channel": "secret", "user": "x", "id": 1})
    assert bob_out.events()[-1]["event"] == alice_out.events()[-1]["event"] == "join_request"
    assert carol_out.events()[-1]["event"] != "join_request"

    # A commit's messages: a viewer gets them in one write, a member looking elsewhere
    # one unread count per message, and each private message reaches both ends.
    alice_writes, bob_seen = len(alice_out.lines), len(bob_out.events())
    unread = bob.unread["general"]
    hub.relay([message(5, "alice", channel="general"), message(6, "bob", recipient="carol"),
               message(7, "bob", channel="general")])
    assert len(alice_out.lines) == alice_writes + 1
    assert [e["channel_message"] for e in alice_out.events()[-2:]] == ["text 5", "text 7"]
    bob_new = bob_out.events()[bob_seen:]
    assert [e["count"] for e in bob_new if e.get("event") == "unread"] == [unread + 1, unread + 2]
    assert [e["private_message"] for e in bob_new if "private_message" in e] == ["text 6"]
    assert carol_out.events()[-1]["private_message"] == "text 6"

    newer, newer_out = log_in(hub, "bob")               # newest login wins
    assert ("disconnect", "replaced") in bob_out.lines and hub.sessions["bob"] is newer
    assert ("disconnect", "replaced") not in newer_out.lines
    assert bob.topics == set()                          # the old session left every topic

    dave, dave_out = log_in(hub, "dave", ip="192.0.2.7", member=False)
    bus.control(CONNECTIONS, "close", {"network": "192.0.2.0/24", "kind": "banned",
                                       "reason": "Connections from 192.0.2.0/24 are banned."})
    assert dave_out.lines[-1] == ("disconnect", "banned")
    assert all(("disconnect", "banned") not in out.lines
               for out in (alice_out, newer_out, carol_out))
    assert ("control", user_topic("bob"), "close") in bus.sent
