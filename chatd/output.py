"""The write path: what is due to one connection within a reactor turn goes out in one send.

A fan-out writes one line to each of many connections, and a busy connection
gets several lines in one turn (messages of a burst, their replies). Twisted's
`transport.write` registers the socket with epoll (`startWriting`), lets the
reactor call `doWrite` (one `send`) and unregisters it (`stopWriting`): three
system calls per line. Here the lines of a turn are queued per connection
(`Output.write`), and one callLater(0) for all connections with lines due
(`FlushQueue`) joins each connection's lines and sends them straight on its
socket; only what the kernel did not take goes to `transport.write`, whose
buffer then comes first until it is empty again.

Only a plain TCP transport (twisted.internet.tcp.Connection) is written this
way. Anything else (TLS, whose wrapper already gathers the small writes of a
turn into one record; the StringTransport of unit tests) gets each line with
`transport.write` at once, as before.
"""

import errno

from twisted.internet import tcp

from chatd.limits import held_bytes, unsent_bytes

UNREAD, HELD = "unread", "held"     # Output.write's verdicts past the limit

# A socket that cannot take more now; the rest waits in Twisted's buffer.
_FULL = {errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.EINTR}


class FlushQueue:
    """The connections with lines due, flushed together by one callLater(0) per turn."""

    def __init__(self, clock):
        self.clock = clock
        self._due = []
        self._call = None

    def add(self, output):
        self._due.append(output)
        if self._call is None:
            self._call = self.clock.callLater(0, self.flush)

    def flush(self):
        self._call = None
        due, self._due = self._due, []
        for output in due:
            output.flush()


class Output:
    """One connection's output: lines queued this turn, then the transport's buffer.

    `unsent()` and `held()` count both, so --max-output-buffer sees every byte
    written and not yet taken by the peer, wherever it waits.
    """

    def __init__(self, transport, queue, limit):
        self.transport = transport
        self.queue = queue
        self.limit = limit      # --max-output-buffer
        # Lines are gathered only for a plain socket: see the module docstring.
        self._direct = isinstance(transport, tcp.Connection)
        self._lines = []
        self._queued = 0        # bytes in _lines

    def write(self, line):
        """Queue (or write) `line`, unless more than `limit` bytes are still unsent.

        Returns None, or why not all is well: UNREAD (nothing written: the peer
        left more than the limit unread) or HELD (written, and now more than the
        limit is held in memory). Both checks are made here, with the sums of
        unsent() and held() inlined, because this runs once per delivery."""
        if not self._direct:
            unsent = unsent_bytes(self.transport)
            if unsent is not None and unsent > self.limit:
                return UNREAD
            self.transport.write(line)
            return HELD if (held_bytes(self.transport) or 0) > self.limit else None
        transport = self.transport
        buffered = len(transport.dataBuffer) + transport._tempDataLen
        queued = self._queued
        if buffered - transport.offset + queued > self.limit:
            return UNREAD
        if not queued:
            self.queue.add(self)
        self._lines.append(line)
        self._queued = queued = queued + len(line)
        return HELD if buffered + queued > self.limit else None

    def fits(self, size):
        """True if `size` more bytes keep the unsent output within the limit."""
        unsent = self.unsent()
        return unsent is not None and unsent + size <= self.limit

    def flush(self):
        """Send the queued lines: on the socket if Twisted holds nothing, else after it."""
        if not self._lines:
            return
        data = self._lines[0] if len(self._lines) == 1 else b"".join(self._lines)
        self._lines, self._queued = [], 0
        transport = self.transport
        if not transport.connected or transport.disconnecting or \
                transport._writeDisconnected or transport.dataBuffer or transport._tempDataLen:
            transport.write(data)    # keeps the order behind Twisted's buffer (or drops it)
            return
        try:
            sent = transport.socket.send(data)
        except OSError as e:
            # Full: Twisted sends the rest when the socket can take it. Any other
            # error: Twisted's own send meets it again and closes the connection.
            sent = 0
            if e.errno not in _FULL:
                transport.write(data)
                return
        if sent < len(data):
            transport.write(data[sent:])

    def discard(self):
        """Forget the queued lines (the connection is aborted or gone)."""
        self._lines, self._queued = [], 0

    def unsent(self):
        """Bytes written and not yet taken by the peer (None if the transport cannot say)."""
        if self._direct:    # chatd.limits.unsent_bytes of a socket, inlined: once per line
            transport = self.transport
            return (len(transport.dataBuffer) - transport.offset + transport._tempDataLen
                    + self._queued)
        return unsent_bytes(self.transport)

    def held(self):
        """Bytes of output kept in memory (chatd.limits.held_bytes), queued lines included."""
        if self._direct:
            transport = self.transport
            return len(transport.dataBuffer) + transport._tempDataLen + self._queued
        return held_bytes(self.transport)
