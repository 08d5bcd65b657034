"""The bus: every delivery and every control action goes through it.

Topics are tuples of strings, which a bus on a network spells as subjects:

    ("members", channel)    the online members of a channel (channel messages:
                            each member session shows the message if it looks
                            at the channel, else counts it as unread)
    ("channel", channel)    the sessions looking at a channel (member-list events)
    ("peer", name)          the sessions looking at a private conversation with
                            `name` (that user's status)
    ("user", name)          every session of one user (private messages, notices,
                            and controls: close, role, joined/left a channel)
    ("admins",)             every admin session (join-request notices)
    ("connections",)        every node's table of open connections (control:
                            close the connections from an address or range)
    ("state",)              changes of the shared state, for the other nodes

Two calls put something on a topic; both take only plain JSON data (dicts,
lists, strings, numbers, booleans, None), so a bus on a network can serialise
them as they are:

    publish(topic, payload, exclude=None)   a line for the clients: encoded
        once per publish, and each subscriber gets the same bytes through
        `subscriber.deliver(topic, line)`; `exclude` is a subscriber id that
        is skipped (the session whose own change it announces).
    publish_many(topic, payloads)           several lines in order (a commit's
        messages to one channel): a subscriber may get them in one call,
        `subscriber.deliver_many(topic, lines, chunk)` (`chunk` the lines
        joined), so a viewer costs one call per commit, not one per message.
    control(topic, action, data)            an instruction: each subscriber's
        `control(topic, action, data)` acts on it (`action` a string, `data`
        a dict).

A subscriber has a string `id`, unique across every node (sessions use a
random one), and `deliver` and/or `control` for the topics it listens to.
`subscribe(topic, subscriber)` and `unsubscribe(topic, subscriber)` are
idempotent. Nobody asks the bus who subscribes to what: who looks at what is
presence state (chatd/presence.py), kept from the events it publishes.

What an implementation must provide:
- Order per topic: everything published or sent on one topic reaches each of
  its subscribers in the order it was put there (a `left` control and the
  notice that follows it, messages of one channel). Across topics nothing is
  promised.
- Delivery at most once to each subscriber: a retry must not show a message
  twice (a bus with at-least-once transport deduplicates before `deliver`).
  A subscriber that subscribes after a publish need not receive it.
- No waiting: publish, control, subscribe and unsubscribe return at once and
  never block the reactor; what goes over a network is sent afterwards, in
  order. LocalBus delivers synchronously, before publish returns.
"""

import json


# Made once: json.dumps given any option builds a new JSONEncoder per call, and this
# runs for every line sent. Payloads are plain data built here, never circular.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)


def encode(payload):
    """One protocol line: compact JSON, UTF-8, newline-terminated."""
    return _ENCODER.encode(payload).encode() + b"\n"


def members_topic(channel):
    return ("members", channel)


def channel_topic(channel):
    return ("channel", channel)


def peer_topic(name):
    return ("peer", name)


def user_topic(name):
    return ("user", name)


ADMINS = ("admins",)
CONNECTIONS = ("connections",)
# The state every node keeps in memory (accounts, logins, bans, channels, join
# requests): the node where it changed tells the others here, as controls.
# In one process nobody listens; chatd/cluster.py applies other nodes' ones.
STATE = ("state",)


class LocalBus:
    """The bus inside one process: topic -> {subscriber id: subscriber}."""

    def __init__(self):
        self._topics = {}

    @property
    def local(self):
        """The bus of this process's subscribers only (NatsBus has one of its own)."""
        return self

    def subscribe(self, topic, subscriber):
        self._topics.setdefault(topic, {})[subscriber.id] = subscriber

    def unsubscribe(self, topic, subscriber):
        subscribers = self._topics.get(topic)
        if subscribers is not None and subscribers.get(subscriber.id) is subscriber:
            del subscribers[subscriber.id]
            if not subscribers:
                del self._topics[topic]

    def publish(self, topic, payload, exclude=None):
        subscribers = self._topics.get(topic)
        if not subscribers:
            return
        line = encode(payload)
        for subscriber in list(subscribers.values()):
            if subscriber.id != exclude:
                subscriber.deliver(topic, line)

    def publish_many(self, topic, payloads):
        subscribers = self._topics.get(topic)
        if not subscribers:
            return
        if len(payloads) == 1:
            self.publish(topic, payloads[0])
            return
        lines = [encode(payload) for payload in payloads]
        chunk = b"".join(lines)
        for subscriber in list(subscribers.values()):
            subscriber.deliver_many(topic, lines, chunk)

    def control(self, topic, action, data):
        for subscriber in list(self._topics.get(topic, {}).values()):
            subscriber.control(topic, action, data)
