"""The load generator's clients: one asyncio protocol per connection, chatd or IRC.

Receivers must keep up with tens of thousands of lines a second in one Python
process, so a chunk of complete lines is first scanned with one regex for the
send timestamps that the bench puts in every message text (`~<ns>~`); lines
are parsed one by one only when the chunk may hold something else we wait for
(a reply, an event, a numeric, a PING).
"""

import asyncio
import itertools
import json
import operator
import re
import socket
import struct
import time
from array import array
from collections import deque

MARKER = re.compile(rb"~(\d+)~")
# The reply to a message: chatd sends it once the message is durable (committed).
ACK = re.compile(rb'"reply_to":"(?:channel|private)_message"')
PASSWORD = "bench-password"


def marked_text(tag, sequence):
    """A message text carrying its run tag, sequence number and send time (monotonic ns)."""
    return f"{tag}{sequence} ~{time.monotonic_ns()}~"


class Deliveries:
    """Every delivery seen by the receivers of one run: send time and latency, in ns.

    CLOCK_MONOTONIC is system-wide, so send and receive times compare across processes.
    A chunk is recorded with one regex pass and appends done in C (its send stamps,
    and its receive time once with their count): in the fan-out's closed loop a
    million deliveries a second reach this one process, and three Python steps per
    delivery here made the load generator, not the server, the limit. Latencies
    are worked out when asked for, after the run.
    """

    def __init__(self):
        self.sent_at = array("q")           # per delivery, in arrival order
        self._received_at = array("q")      # per recorded chunk
        self._counts = array("q")           # deliveries in each recorded chunk

    def __len__(self):
        return len(self.sent_at)

    def record(self, chunk):
        """Record the marked messages in `chunk`; returns how many there were."""
        now = time.monotonic_ns()
        stamps = MARKER.findall(chunk)
        if stamps:
            self.sent_at.extend(map(int, stamps))
            self._received_at.append(now)
            self._counts.append(len(stamps))
        return len(stamps)

    def latency(self):
        """Each delivery's latency (ns), in the order of sent_at."""
        received = array("q")
        for at, count in zip(self._received_at, self._counts):
            received.extend(itertools.repeat(at, count))
        return array("q", map(operator.sub, received, self.sent_at))

    def summary(self, since_ns=None, until_ns=None):
        """Count and latency percentiles (ms) of deliveries sent in [since, until)."""
        if since_ns is None and until_ns is None:
            selected = sorted(self.latency())
        else:
            low = since_ns if since_ns is not None else 0
            high = until_ns if until_ns is not None else 2 ** 63 - 1
            selected = sorted(lat for sent, lat in zip(self.sent_at, self.latency())
                              if low <= sent < high)
        return latency_summary(selected)


class Acks:
    """Acknowledgement latency (send -> the server's reply) of the messages of one run, in ns."""

    def __init__(self):
        self.latency = array("q")

    def summary(self):
        return latency_summary(sorted(self.latency))


def latency_summary(sorted_ns):
    if not sorted_ns:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}

    def pick(fraction):
        return round(sorted_ns[min(len(sorted_ns) - 1, int(fraction * len(sorted_ns)))] / 1e6, 2)

    return {"count": len(sorted_ns), "p50_ms": pick(0.50), "p99_ms": pick(0.99),
            "max_ms": round(sorted_ns[-1] / 1e6, 2)}


class ProtocolError(Exception):
    """The server answered a setup step with an error or closed the connection."""


class LineClient(asyncio.Protocol):
    """Buffers lines, counts marked deliveries, and resolves waiters on other lines.

    `received` and `sent` count the marked messages this client got and sent
    since `count_into` last started a phase, so each receiver's share can be checked.
    """

    def __init__(self, name, deliveries=None):
        self.name = name
        self.deliveries = deliveries
        self.received = 0
        self.sent = 0
        self.transport = None
        self.port = None            # the server's port it connected to
        self.buffer = b""
        self.waiters = []
        self.errors = []
        self.ready_at = None        # logged in and looking where it should
        self.closed = False
        self.closed_at = None
        self.close_reason = None
        # user -> when this client first heard the server say that user went offline
        # (chatd's member events): a viewer gone offline gets no more channel messages.
        self.offline_seen = {}

    def count_into(self, deliveries):
        """Record deliveries into `deliveries` from now on, counting afresh."""
        self.deliveries, self.received, self.sent = deliveries, 0, 0

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closed = True
        self.closed_at = time.monotonic()
        if self.close_reason is None:
            self.close_reason = (f"connection error: {type(exc).__name__}: {exc}" if exc else
                                 "closed by the server without a goodbye line")
        for predicate, future in self.waiters:
            if not future.done():
                future.set_exception(ProtocolError(f"{self.name}: {self.close_reason}"))
        self.waiters.clear()

    def data_received(self, data):
        data = self.buffer + data
        end = data.rfind(b"\n")
        if end < 0:
            self.buffer = data
            return
        complete, self.buffer = data[:end + 1], data[end + 1:]
        marked = 0
        if self.deliveries is not None:
            marked = self.deliveries.record(complete)
            self.received += marked
        self.count_acks(complete)
        # A chunk of marked messages only (most of them) needs no look for anything
        # else: counting its lines is one memchr pass, a quarter of the cost of
        # looking for each kind of line that matters.
        if (self.waiters or complete.count(b"\n") != marked) and self.needs_parsing(complete):
            for line in complete.splitlines():
                if line:
                    self.handle_line(line)

    def count_acks(self, chunk):
        """Protocols that acknowledge messages time the replies here."""

    def send_line(self, line):
        if not self.closed:
            self.transport.write(line)

    def wait_for(self, predicate, timeout):
        """Wait until a parsed line satisfies `predicate`; returns that line's value."""
        future = asyncio.get_running_loop().create_future()
        self.waiters.append((predicate, future))
        return asyncio.wait_for(future, timeout)

    def resolve_waiters(self, item):
        remaining = []
        for predicate, future in self.waiters:
            if future.done():
                continue
            if predicate(item):
                future.set_result(item)
            else:
                remaining.append((predicate, future))
        self.waiters = remaining

    def abort(self):
        """Close with a reset (SO_LINGER 0) so thousands of closes leave no TIME_WAIT."""
        if self.transport is None or self.closed:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()


class ChatdClient(LineClient):
    protocol_name = "chatd"
    _refs = itertools.count(1)

    def __init__(self, name, deliveries=None):
        super().__init__(name, deliveries)
        self.presence_line = None
        self.acks = None            # an Acks while a run measures acknowledgements
        self.unacked = deque()      # send times of the messages not yet answered, oldest first

    def count_acks(self, chunk):
        # Replies come in request order, so each one answers the oldest message unanswered.
        if self.acks is None or not self.unacked:
            return
        now = time.monotonic_ns()
        for _ in range(len(ACK.findall(chunk))):
            if self.unacked:
                self.acks.latency.append(now - self.unacked.popleft())

    def needs_parsing(self, chunk):
        # Member events are many and of no interest unless a setup step waits for one
        # or they say that someone went offline.
        return (bool(self.waiters) or b'"error"' in chunk or b'"disconnect"' in chunk
                or b'"offline"' in chunk)

    def handle_line(self, line):
        try:
            item = json.loads(line)
        except ValueError:
            return
        if "error" in item:
            self.errors.append(item["error"])
        event = item.get("event")
        if event == "disconnect":
            self.close_reason = f"disconnect {item.get('kind')}: {item.get('reason')}"
        elif event == "member" and item.get("status") == "offline":
            self.offline_seen.setdefault(item.get("user"), time.monotonic())
        if self.waiters:
            self.resolve_waiters(item)

    def send(self, request):
        self.send_line(json.dumps(request, separators=(",", ":")).encode() + b"\n")

    async def request(self, request, timeout=30.0):
        """Send one request and return its reply (matched by `ref`); raise on an error reply."""
        ref = next(self._refs)
        reply = self.wait_for(lambda item: item.get("ref") == ref, timeout)
        self.send({**request, "ref": ref})
        item = await reply
        if "error" in item:
            raise ProtocolError(f"{self.name}: {next(iter(request))}: {item['error']}")
        return item

    async def log_in(self, timeout=30.0):
        await self.request({"user:pwd": f"{self.name}:{PASSWORD}"}, timeout)

    async def look_at(self, channel, timeout=30.0):
        """Start looking at `channel` (a member already), or at nothing with None."""
        request = {"presence": "online"}
        if channel is not None:
            request["channel"] = channel
            members = self.wait_for(
                lambda item: item.get("event") == "members" and item.get("channel") == channel,
                timeout)
        self.presence_line = json.dumps(request, separators=(",", ":")).encode() + b"\n"
        self.send_line(self.presence_line)
        if channel is not None:
            await members

    def heartbeat(self):
        if self.presence_line is not None:
            self.send_line(self.presence_line)

    def send_channel_message(self, channel, text):
        self.sent += 1
        if self.acks is not None:
            self.unacked.append(time.monotonic_ns())
        self.send({"channel_message": text, "channel": channel})

    def send_private_message(self, other_user, text):
        self.sent += 1
        if self.acks is not None:
            self.unacked.append(time.monotonic_ns())
        self.send({"private_message": text, "other_user": other_user})


class IrcClient(LineClient):
    protocol_name = "irc"

    def needs_parsing(self, chunk):
        # Relayed PRIVMSG lines are counted by the marker scan; anything else is parsed.
        return bool(self.waiters) or b"PING" in chunk or b"ERROR" in chunk

    def handle_line(self, line):
        text = line.decode("utf-8", "replace")
        prefix = ""
        if text.startswith(":"):
            prefix, _, text = text.partition(" ")
        command, _, rest = text.partition(" ")
        if command == "PING":
            self.send_line(b"PONG " + rest.encode() + b"\r\n")
        elif command == "ERROR":
            self.close_reason = text
        elif command.isdigit() and command[0] in "45":
            self.errors.append(text)
        if self.waiters:
            self.resolve_waiters((prefix, command, rest))

    async def log_in(self, timeout=30.0):
        welcome = self.wait_for(lambda item: item[1] in ("001", "433", "432"), timeout)
        self.send_line(f"NICK {self.name}\r\nUSER {self.name} 0 * :bench\r\n".encode())
        _, command, rest = await welcome
        if command != "001":
            raise ProtocolError(f"{self.name}: registration refused: {command} {rest}")

    async def look_at(self, channel, timeout=30.0):
        """JOIN `channel` and wait for the end of its NAMES list (IRC has no 'looking')."""
        if channel is None:
            return
        names_end = self.wait_for(lambda item: item[1] in ("366", "403", "405", "471", "473"),
                                  timeout)
        self.send_line(f"JOIN #{channel}\r\n".encode())
        _, command, rest = await names_end
        if command != "366":
            raise ProtocolError(f"{self.name}: JOIN #{channel} refused: {command} {rest}")

    def heartbeat(self):
        self.send_line(b"PING :heartbeat\r\n")

    def send_channel_message(self, channel, text):
        self.sent += 1
        self.send_line(f"PRIVMSG #{channel} :{text}\r\n".encode())

    def send_private_message(self, other_user, text):
        self.sent += 1
        self.send_line(f"PRIVMSG {other_user} :{text}\r\n".encode())


async def connect(client_class, port, name, deliveries=None, attempts=5):
    """Open one connection to 127.0.0.1:port, retrying while the listen backlog is full."""
    loop = asyncio.get_running_loop()
    for attempt in range(attempts):
        try:
            _, client = await asyncio.wait_for(loop.create_connection(
                lambda: client_class(name, deliveries), "127.0.0.1", port), 10.0)
            return client
        except (ConnectionError, asyncio.TimeoutError, OSError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))


async def open_sessions(client_class, ports, names, channel_of, deliveries=None,
                        concurrency=100, timeout=120.0, attempts=3, on_open=None):
    """Connect, log in and look at a channel for every name, `concurrency` at a time;
    the client of names[i] connects to ports[i] (a cluster's nodes have one each).

    A connection the server drops during setup (a full accept queue resets it)
    is opened again, as a real client would, up to `attempts` times.
    `on_open(client)` is called as soon as each one is ready (so that its
    heartbeats start then, not after the last login).
    Returns (clients, failures, retries): a server that refuses some
    connections is a result to report, not a crash.
    """
    slots = asyncio.Semaphore(concurrency)
    failures = []
    retries = 0

    async def open_one(name, port):
        nonlocal retries
        async with slots:
            for attempt in range(attempts):
                try:
                    client = await connect(client_class, port, name, deliveries)
                except OSError as error:
                    failures.append(f"{name}: connect: {error}")
                    return None
                client.port = port
                try:
                    await client.log_in()
                    await client.look_at(channel_of(name))
                    client.ready_at = time.monotonic()
                    if on_open is not None:
                        on_open(client)
                    return client
                except (ProtocolError, asyncio.TimeoutError) as error:
                    dropped_by_server = client.closed and not client.errors
                    client.abort()
                    if dropped_by_server and attempt < attempts - 1:
                        retries += 1
                        continue
                    failures.append(f"{name}: {str(error) or type(error).__name__}")
                    return None

    results = await asyncio.wait_for(asyncio.gather(*map(open_one, names, ports)), timeout)
    return [client for client in results if client is not None], failures, retries


class Heartbeat:
    """Sends every client's heartbeat once per `period`, spread evenly over the period."""

    def __init__(self, clients, period, ticks_per_period=50):
        self.clients = clients
        self.period = period
        self.ticks = ticks_per_period
        self.task = None

    def start(self):
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self):
        tick = 0
        while True:
            await asyncio.sleep(self.period / self.ticks)
            for client in self.clients[tick % self.ticks::self.ticks]:
                client.heartbeat()
            tick += 1

    async def stop(self):
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


def close_all(clients):
    for client in clients:
        client.abort()
