"""NatsBus: the bus (chatd/bus.py) across nodes, over NATS JetStream.

Every publish and control of every node goes into one JetStream stream, and
every node reads the whole stream back with an ordered consumer, fanning each
event out to its own subscribers (a LocalBus). A node's own events come back
from the stream too, never locally first: the stream's sequence is the one
order of everything, so every node shows a channel's messages in the same
order. Observers (chatd/cluster.py) see every event before the fan-out, with
the name of the node that sent it, to keep the cluster-wide state.

Names in the URL and on the stream:

    nats://HOST:PORT[/CLUSTER]   CLUSTER (default "chatd") names the stream and
                                 is the first token of every subject, so
                                 several clusters (or tests) share one server
    CLUSTER.ev.KIND[.NAME]       one subject per topic; NAME escaped (subject_token)
    CLUSTER.node.NAME            core NATS (not stored): a live node answers here,
                                 so a second node with the same name is refused,
                                 and a node with nobody there is gone (probe)
    CLUSTER.hb.NAME              core NATS: each node's heartbeat; a node silent for
                                 the presence timeout is taken as dead (node_lost)

The stream keeps events for catch-up, not for history (history is in SQL):
file storage, limits retention with a maximum age (MAX_AGE), and a
deduplication window (DUPLICATE_WINDOW) over each event's Nats-Msg-Id, so an
event sent again after a lost acknowledgement is stored once.

Runs on Twisted's asyncio reactor (nats-py is asyncio): coroutines become
Deferreds with Deferred.fromFuture, and the callbacks from nats-py run on the
reactor's own thread, so they call the hub directly.
"""

import asyncio
import json
import re
import string
import uuid
from collections import deque
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.logger import Logger

from chatd.bus import LocalBus

log = Logger()

DEFAULT_CLUSTER = "chatd"
CLUSTER_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
MAX_AGE = 24 * 3600         # seconds an event stays in the stream: the longest catch-up
DUPLICATE_WINDOW = 120      # seconds within which a resent event (same Nats-Msg-Id) is dropped
ACK_TIMEOUT = 5.0           # seconds to wait for the stream's acknowledgements of a batch
RESEND_DELAY = 0.5          # seconds between attempts while the stream does not acknowledge
BATCH = 1000                # events sent before waiting for their acknowledgements
CONNECT_TIMEOUT = 2         # seconds to reach the NATS server at start
NAME_CHECK_TIMEOUT = 0.5    # seconds a node with the same name has to answer
# A probed node with nobody on its subject is asked again after this many seconds before
# it is taken as lost: a node whose connection dropped is back within nats-py's 0.5 s
# reconnection wait once the server is (say, right after our own reconnection).
PROBE_RECHECK = 1.0
_SAFE = frozenset(string.ascii_letters + string.digits + "-_")


class BusError(Exception):
    """The bus cannot be used (unreachable at start, a name taken); one sentence."""


def subject_token(name):
    """`name` as one subject token: letters, digits, '-' and '_' as they are, every
    other character as '=XX' per UTF-8 byte ('.', '*', '>' and spaces cannot
    appear in a token). Different names give different tokens."""
    return "".join(c if c in _SAFE else "".join(f"={b:02X}" for b in c.encode())
                   for c in name) or "="


def parse_bus_url(url):
    """(server URL for nats-py, cluster name) from nats://HOST:PORT[/CLUSTER];
    ValueError with a sentence if it is not one."""
    parts = urlsplit(url)
    if parts.scheme != "nats" or not parts.hostname:
        raise ValueError(f"use nats://HOST:PORT[/CLUSTER], not {url!r}")
    try:
        port = parts.port or 4222
    except ValueError:
        raise ValueError(f"the port in {url!r} is not a number") from None
    cluster = parts.path.strip("/") or DEFAULT_CLUSTER
    if not CLUSTER_NAME.match(cluster):
        raise ValueError(f"the cluster name {cluster!r} is 1 to 64 letters, digits, '-' or '_'")
    credentials = parts.netloc.rpartition("@")[0]
    at = f"{credentials}@" if credentials else ""
    return f"nats://{at}{parts.hostname}:{port}", cluster


def _future(coroutine):
    return defer.Deferred.fromFuture(asyncio.ensure_future(coroutine))


class NatsBus:
    """The bus interface of chatd/bus.py, shared by every node on one stream."""

    def __init__(self, url, node):
        self.server_url, self.cluster = parse_bus_url(url)
        self.url = url
        self.node = node            # this node's --node-name
        self.local = LocalBus()     # this node's subscribers
        self.observers = []         # callables (node, topic, kind, body) for every event
        self.sent = []              # callables (topic, envelope) for each event this node sends
        self.disconnected = []      # callables told when the connection to the server drops
        self.reconnected = []       # callables told after a reconnection to the server
        self.node_lost = lambda node: None  # told when another node's heartbeats stop
        # False for an event not to hand to this node's subscribers (chatd/cluster.py:
        # a message already relayed here from SQL after its node was lost).
        self.admit = lambda node, topic, envelope: True
        # Other node -> (loop time of its last heartbeat, incarnation); a node first known
        # from an event on the stream has no incarnation until its first heartbeat.
        self.seen = {}
        self.applied = 0            # the stream sequence of the last event handled
        self._waiting = []          # (sequence, asyncio future) of catch_up callers
        self.incarnation = uuid.uuid4().hex[:12]    # this process: a restart is a new one
        self._ids = f"{node}-{self.incarnation}-"
        self._count = 0
        self._outbox = deque()      # (count, subject, data, msg id) not yet acknowledged, in order
        self._flushing = []         # (count, asyncio future) of sent_all callers
        self._wake = None
        self._nc = self._js = None
        self._sender = self._subscription = self._watcher = None
        self._probing = set()       # nodes being probed
        self._stopping = False

    # -- the bus interface -------------------------------------------------------------

    def subscribe(self, topic, subscriber):
        self.local.subscribe(topic, subscriber)

    def unsubscribe(self, topic, subscriber):
        self.local.unsubscribe(topic, subscriber)

    def publish(self, topic, payload, exclude=None):
        self._send(topic, {"n": self.node, "t": topic, "p": payload, "x": exclude})

    def publish_many(self, topic, payloads):
        """One envelope each: the other nodes apply them in stream order, one by one."""
        for payload in payloads:
            self.publish(topic, payload)

    def control(self, topic, action, data):
        """`s`: the stream sequence this node had applied when it sent it (a late `close`
        acts only on sessions whose login it knew of: chatd/cluster.py)."""
        self._send(topic, {"n": self.node, "t": topic, "a": action, "d": data,
                           "s": self.applied})

    def subject(self, topic):
        return ".".join([self.cluster, "ev", topic[0], *map(subject_token, topic[1:])])

    def _send(self, topic, envelope):
        for told in self.sent:
            told(topic, envelope)
        self._count += 1
        data = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
        self._outbox.append((self._count, self.subject(topic), data, self._ids + str(self._count)))
        if self._wake is not None:
            self._wake.set()

    def sent_all(self):
        """Deferred firing once the stream has acknowledged every event sent so far."""
        waiter = asyncio.get_running_loop().create_future()
        self._flushing.append((self._count, waiter))
        self._check_flushed()
        return defer.Deferred.fromFuture(waiter)

    def _check_flushed(self):
        oldest = self._outbox[0][0] if self._outbox else self._count + 1
        for entry in [f for f in self._flushing if f[0] < oldest]:
            self._flushing.remove(entry)
            if not entry[1].done():
                entry[1].set_result(None)

    # -- start, catch up, stop ---------------------------------------------------------

    def start(self):
        """Connect, refuse a second live node of the same name, make sure the stream
        exists. Deferred firing with the stream's last sequence (BusError if not)."""
        return _future(self._start())

    async def _start(self):
        import nats
        from nats.errors import NoRespondersError, NoServersError, TimeoutError
        try:
            # nats-py retries a first connection forever when reconnecting is on: try once.
            host, port = urlsplit(self.server_url).hostname, urlsplit(self.server_url).port
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
            writer.close()
            self._nc = await asyncio.wait_for(nats.connect(
                self.server_url, name=f"chatd {self.cluster}/{self.node}",
                connect_timeout=CONNECT_TIMEOUT, allow_reconnect=True, max_reconnect_attempts=-1,
                reconnect_time_wait=0.5, ping_interval=5, max_outstanding_pings=2,
                disconnected_cb=self._disconnected, reconnected_cb=self._reconnected,
                error_cb=self._error), 3 * CONNECT_TIMEOUT)
        except (NoServersError, OSError, asyncio.TimeoutError) as e:
            raise BusError(f"cannot reach the bus at {self.url}:"
                           f" {getattr(e, 'strerror', None) or e or type(e).__name__}") from e
        here = f"{self.cluster}.node.{subject_token(self.node)}"
        try:
            reply = await self._nc.request(here, b"", timeout=NAME_CHECK_TIMEOUT)
        except (NoRespondersError, TimeoutError):
            reply = None
        if reply is not None:
            await self._nc.close()
            raise BusError(f"--node-name {self.node}: a node of that name is already running"
                           f" on {self.url} ({reply.data.decode(errors='replace')});"
                           " give each node its own name.")
        await self._nc.subscribe(here, cb=self._answer_name_check)
        self._js = self._nc.jetstream()
        info = await self._ensure_stream()
        return info.state.last_seq

    async def _answer_name_check(self, msg):
        await msg.respond(f"up, {self.applied} events applied".encode())

    async def _ensure_stream(self):
        from nats.js import api
        from nats.js.errors import NotFoundError
        config = api.StreamConfig(
            name=self.cluster, subjects=[f"{self.cluster}.ev.>"],
            retention=api.RetentionPolicy.LIMITS, storage=api.StorageType.FILE,
            max_age=MAX_AGE, duplicate_window=DUPLICATE_WINDOW,
            discard=api.DiscardPolicy.OLD, num_replicas=1,
            description="chatd cluster events (history is in SQL); see docs/cluster.md")
        try:
            await self._js.stream_info(self.cluster)
        except NotFoundError:
            return await self._js.add_stream(config)
        return await self._js.update_stream(config)

    def consume(self, first):
        """Handle every event from stream sequence `first` on (the state loaded from SQL
        before covers what came earlier), and start sending. Deferred firing once the
        events that were in the stream when this was called are handled."""
        return _future(self._consume(first))

    async def _consume(self, first):
        from nats.js import api
        self.applied = first - 1
        config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                                    opt_start_seq=first)
        self._subscription = await self._js.subscribe(
            f"{self.cluster}.ev.>", stream=self.cluster, cb=self._received,
            ordered_consumer=True, idle_heartbeat=2.0, config=config)
        self._wake = asyncio.Event()
        self._sender = asyncio.ensure_future(self._send_loop())
        await self._catch_up()

    def catch_up(self):
        """Deferred firing once every event the stream holds now is handled here."""
        return _future(self._catch_up())

    async def _catch_up(self):
        while True:     # just after a reconnection the stream may not answer yet
            try:
                last = (await self._js.stream_info(self.cluster)).state.last_seq
                break
            except Exception as e:
                if self._stopping:
                    raise
                log.info("bus: stream not answering yet ({error}); trying again",
                         error=repr(e))
                await asyncio.sleep(RESEND_DELAY)
        if self.applied < last:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append((last, waiter))
            await waiter

    def _check_caught_up(self):
        for entry in [w for w in self._waiting if w[0] <= self.applied]:
            self._waiting.remove(entry)
            if not entry[1].done():
                entry[1].set_result(None)

    # -- heartbeats ----------------------------------------------------------------------

    def heartbeat(self):
        if self._nc is not None and self._nc.is_connected:
            asyncio.ensure_future(self._nc.publish(
                f"{self.cluster}.hb.{subject_token(self.node)}",
                f"{self.node} {self.incarnation}".encode()))

    def watch_nodes(self, timeout):
        """Listen to the other nodes' heartbeats; node_lost(name) when one is silent for
        `timeout` seconds."""
        return _future(self._watch_nodes(timeout))

    async def _watch_nodes(self, timeout):
        loop = asyncio.get_running_loop()

        async def beat(msg):
            node, _, incarnation = msg.data.decode().partition(" ")
            if node == self.node:
                return
            if self.seen.get(node, (0, None))[1] not in (None, incarnation):
                self._lost(node)    # restarted: the users of the earlier process are gone
            self.seen[node] = (loop.time(), incarnation)

        async def check():
            while not self._stopping:
                await asyncio.sleep(timeout / 4)
                if not self._nc.is_connected:
                    continue    # our cut, not theirs: judge once reconnected
                for node, (last, _) in list(self.seen.items()):
                    if loop.time() - last > timeout:
                        del self.seen[node]
                        self._lost(node)
        await self._nc.subscribe(f"{self.cluster}.hb.*", cb=beat)
        self._watcher = asyncio.ensure_future(check())

    def probe(self, node):
        """Ask NATS at once whether `node` is still there, rather than wait for its
        heartbeats to lapse (chatd/cluster.py asks when a user of that node logs in
        here: its clients reconnect to the others as soon as it dies). NATS answers
        "no responders" at once when nobody subscribes to a subject, and a process
        that died has no connection, so no subscription, left: asked twice
        PROBE_RECHECK apart with nobody there, the node is taken as lost now."""
        if (node in self.seen and node not in self._probing and self._nc is not None
                and self._nc.is_connected):
            self._probing.add(node)
            asyncio.ensure_future(self._probe(node))

    async def _probe(self, node):
        from nats.errors import Error, NoRespondersError
        subject = f"{self.cluster}.node.{subject_token(node)}"
        try:
            for attempt in range(2):
                if attempt:
                    await asyncio.sleep(PROBE_RECHECK)
                try:
                    await self._nc.request(subject, b"", timeout=NAME_CHECK_TIMEOUT)
                    return      # it answered: alive
                except NoRespondersError:
                    continue
                except (Error, asyncio.TimeoutError):
                    return      # slow to answer, or our own cut: its heartbeats decide
            if node in self.seen:
                del self.seen[node]
                log.warn("bus: node {node} has no connection to NATS any more", node=node)
                self._lost(node)
        finally:
            self._probing.discard(node)

    def _lost(self, node):
        try:
            self.node_lost(node)
        except Exception:
            log.failure("bus: handling the loss of node {node}", node=node)

    def stop(self):
        """Send what is queued (for a moment at most), then disconnect."""
        if self._nc is None:
            return defer.succeed(None)     # never connected
        return _future(self._stop())

    async def _stop(self):
        deadline = asyncio.get_running_loop().time() + ACK_TIMEOUT
        while self._outbox and self._nc.is_connected and \
                asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        if self._outbox:
            log.warn("bus: {count} events not acknowledged by the stream at stop",
                     count=len(self._outbox))
        self._stopping = True
        for running in (self._sender, self._watcher):
            if running is not None:
                running.cancel()
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()

    # -- sending: in order, each event until the stream acknowledged it -----------------

    async def _send_loop(self):
        from nats.js.api import Header
        while not self._stopping:
            if not self._outbox:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._outbox[i] for i in range(min(BATCH, len(self._outbox)))]
            try:
                acks = [await self._js.publish_async(subject, data, headers={Header.MSG_ID: mid})
                        for _, subject, data, mid in batch]
                await asyncio.wait_for(asyncio.gather(*acks), ACK_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                # Sent again, the same ids: what the stream already has is not stored twice.
                log.warn("bus: {count} events not acknowledged ({error}); sending them again",
                         count=len(batch), error=repr(e))
                await asyncio.sleep(RESEND_DELAY)
                continue
            for _ in batch:
                self._outbox.popleft()
            self._check_flushed()

    # -- receiving ---------------------------------------------------------------------

    async def _received(self, msg):
        sequence = msg.metadata.sequence.stream
        if sequence <= self.applied:
            return      # a redelivery after the consumer was reset
        self.applied = sequence
        try:
            self.handle(json.loads(msg.data))
        except Exception:
            log.failure("bus: handling event {sequence} on {subject}", sequence=sequence,
                        subject=msg.subject)
        self._check_caught_up()

    def handle(self, envelope):
        node = envelope["n"]
        if node != self.node and node not in self.seen:
            # Known from now on even if it dies before we hear a heartbeat of it.
            self.seen[node] = (asyncio.get_running_loop().time(), None)
        topic = tuple(envelope["t"])
        kind, body = ("publish", envelope) if "p" in envelope else ("control", envelope)
        for observe in self.observers:
            observe(envelope["n"], topic, kind, body)
        if not self.admit(envelope["n"], topic, envelope):
            return
        if kind == "publish":
            self.local.publish(topic, envelope["p"], exclude=envelope["x"])
        else:
            self.local.control(topic, envelope["a"], envelope["d"])

    # -- connection state --------------------------------------------------------------

    async def _disconnected(self):
        if not self._stopping:
            log.warn("bus: disconnected from {url}; reconnecting", url=self.url)
            for told in self.disconnected:
                told()

    async def _reconnected(self):
        log.info("bus: reconnected to {url}", url=self.url)
        loop = asyncio.get_running_loop()
        for node, (_, incarnation) in self.seen.items():    # not heard during the cut
            self.seen[node] = (loop.time(), incarnation)
        for told in self.reconnected:
            told()

    async def _error(self, e):
        if not self._stopping:
            log.warn("bus: {error}", error=repr(e))
