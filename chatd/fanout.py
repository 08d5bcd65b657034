"""Fan-out: who receives what is published on a topic.

Topics are ("channel", name) for the people looking at a channel and
("peer", name) for the people looking at a private conversation with `name`.
A payload is encoded once and the same bytes are written to every subscriber.
This is the one seam a multi-node deployment would replace with a message bus
(Redis pub/sub, NATS): the hub and the protocol only call these four methods.
"""

import json


def encode(payload):
    """One protocol line: compact JSON, UTF-8, newline-terminated."""
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class LocalFanout:
    def __init__(self):
        self._topics = {}

    def subscribe(self, topic, session):
        self._topics.setdefault(topic, {})[session.name] = session

    def unsubscribe(self, topic, session):
        subscribers = self._topics.get(topic)
        if subscribers is not None and subscribers.get(session.name) is session:
            del subscribers[session.name]
            if not subscribers:
                del self._topics[topic]

    def subscribers(self, topic):
        """name -> session for everyone subscribed to `topic` (do not mutate)."""
        return self._topics.get(topic, {})

    def publish(self, topic, payload, exclude=None):
        subscribers = self._topics.get(topic)
        if not subscribers:
            return
        line = encode(payload)
        for session in list(subscribers.values()):
            if session is not exclude:
                session.write(line)
