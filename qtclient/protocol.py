"""The chatd wire protocol as a Twisted ``LineReceiver``: one JSON object per line.

Knows nothing about Qt so that it can be tested (and reused) on its own. Replies
are matched to requests by the ``ref`` field; everything else the server sends
(relayed messages, events, replies nobody waits for) goes to the receiver.
"""

import itertools
import json

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

# The server caps *incoming* lines at 16 KiB, but what it sends back can be much
# longer: a history page holds up to 200 messages of up to 4,000 characters.
MAX_RECEIVED_LINE = 16 * 1024 * 1024


class ServerError(Exception):
    """The server answered a request with an ``error``; ``reply`` is the whole line."""

    def __init__(self, reply):
        super().__init__(reply.get("error", "The server refused the request."))
        self.reply = reply

    @property
    def message(self):
        return str(self)


class ChatProtocol(LineReceiver):
    """Speaks chatd's JSON lines for one connection.

    ``receiver`` gets three calls: ``connection_made(protocol)``,
    ``server_line(obj)`` for every line that is not the awaited reply to a
    request, and ``connection_lost(protocol, reason)``.
    """

    delimiter = b"\n"
    MAX_LENGTH = MAX_RECEIVED_LINE

    def __init__(self, receiver):
        self.receiver = receiver
        self._refs = itertools.count(1)
        self._waiting = {}

    def connectionMade(self):
        self.receiver.connection_made(self)

    def connectionLost(self, reason=Failure(ConnectionDone())):
        waiting, self._waiting = self._waiting, {}
        for deferred in waiting.values():
            deferred.errback(reason)
        self.receiver.connection_lost(self, reason)

    def lineReceived(self, line):
        try:
            obj = json.loads(line.rstrip(b"\r").decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return  # A server that sends garbage is not worth crashing over.
        if not isinstance(obj, dict):
            return
        deferred = self._waiting.pop(obj.get("ref"), None) if "reply_to" in obj else None
        if deferred is None:
            self.receiver.server_line(obj)
        elif "error" in obj:
            deferred.errback(ServerError(obj))
        else:
            deferred.callback(obj)

    def lineLengthExceeded(self, line):
        self.transport.loseConnection()

    def send(self, obj):
        """Send one request without waiting for a reply (e.g. heartbeats)."""
        self.sendLine(json.dumps(obj, ensure_ascii=False).encode("utf-8"))

    def request(self, action, value="", **fields):
        """Send ``{action: value, **fields}``; the Deferred fires with the reply
        line or fails with :class:`ServerError`."""
        ref = next(self._refs)
        deferred = defer.Deferred()
        self._waiting[ref] = deferred
        self.send({action: value, **fields, "ref": ref})
        return deferred
