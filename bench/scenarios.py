"""The scenarios. Each one starts a fresh server of the target, drives it, and
returns a flat dict of figures plus the server's CPU seconds and peak RSS.

Every loop here is bounded in count and time; every connection goes to 127.0.0.1.
"""

import asyncio
import collections
import gc
import itertools
import random
import re
import resource
import time
from collections import deque

from bench.clients import (Acks, Deliveries, Heartbeat, close_all, latency_summary, marked_text,
                           open_sessions)

FANOUT_CHANNEL = "bench"
HISTORY_CHANNEL = "history"
_run_tags = itertools.count(1)


def user_name(index):
    return f"u{index:05d}"


def room_name(index):
    return f"room{index:03d}"


def new_tag(prefix):
    """A prefix unique to one run, so the log check finds exactly that run's messages."""
    return f"{prefix}{next(_run_tags)}-"


async def send_paced(senders, send, rate, duration, window=None, probe=None):
    """Send as `rate` messages/s for `duration` s (open loop), round-robin over senders.

    With rate None the load is closed-loop instead: as fast as the server relays,
    with at most `window` messages sent but not yet seen by `probe`.
    Returns (messages sent, elapsed seconds).
    """
    start = time.monotonic()
    deadline = start + duration
    sent = 0
    while (now := time.monotonic()) < deadline:
        if rate is not None:
            due = int((now - start) * rate) - sent
        else:
            due = window - (sent - probe.received)
        for _ in range(max(0, due)):
            send(senders[sent % len(senders)], sent)
            sent += 1
        await asyncio.sleep(0.002)
    return sent, time.monotonic() - start


def measure_acks(senders):
    """Time send -> reply for what `senders` send from now on (chatd only: IRC has no reply)."""
    acks = Acks()
    for client in senders:
        if hasattr(client, "acks"):
            client.acks, client.unacked = acks, deque()
    return acks


def ack_figures(prefix, acks):
    summary = acks.summary()
    if not summary["count"]:
        return {}
    return {f"{prefix}_acks": summary["count"], f"{prefix}_ack_p50_ms": summary["p50_ms"],
            f"{prefix}_ack_p99_ms": summary["p99_ms"], f"{prefix}_ack_max_ms": summary["max_ms"]}


async def wait_for_deliveries(deliveries, expected, quiet_timeout=5.0, limit=60.0):
    """Wait until `expected` deliveries arrived, or none arrived for `quiet_timeout` s."""
    deadline = time.monotonic() + limit
    last_count, last_change = len(deliveries), time.monotonic()
    while len(deliveries) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        if len(deliveries) != last_count:
            last_count, last_change = len(deliveries), time.monotonic()
        elif time.monotonic() - last_change > quiet_timeout:
            break
    return time.monotonic()


async def wait_for_log(target, tag, expected, limit=60.0):
    """Poll chatd's database until `expected` messages tagged `tag` are logged.

    Returns (monotonic time when they all were, or None, sequence numbers missing).
    """
    database = target.db
    deadline = time.monotonic() + limit
    pattern = re.compile(re.escape(tag) + r"(\d+) ")
    while True:
        count = await asyncio.to_thread(database.logged_count, tag)
        if count >= expected or time.monotonic() > deadline:
            all_logged_at = time.monotonic()
            bodies = await asyncio.to_thread(database.logged_bodies, tag)
            found = {int(m.group(1)) for m in map(pattern.match, bodies) if m}
            missing = sorted(set(range(expected)) - found)
            return (None if missing else all_logged_at), missing
        await asyncio.sleep(0.25)


def phase_figures(prefix, deliveries, sent, recipients, elapsed, since, until=None):
    """deliveries/s over the sending time, and latency, for one phase."""
    summary = deliveries.summary(since, until)
    return {
        f"{prefix}_messages_sent": sent,
        f"{prefix}_deliveries_expected": sent * recipients,
        f"{prefix}_deliveries": summary["count"],
        f"{prefix}_deliveries_per_s": round(summary["count"] / elapsed) if elapsed else 0,
        f"{prefix}_p50_ms": summary["p50_ms"],
        f"{prefix}_p99_ms": summary["p99_ms"],
        f"{prefix}_max_ms": summary["max_ms"],
    }


def client_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy_and_total():
    """(busy, total) jiffies over all CPUs since boot, from the first line of /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


class Run:
    """One scenario on one target: a fresh server, measured from just before the load."""

    def __init__(self, target, label, heartbeat_period=5.0):
        self.target = target
        self.label = label
        self.server = None
        self.clients = []
        # Every client heartbeats (5 s: a third of chatd's presence timeout) from
        # the moment it is logged in: a client that waited for the others' logins
        # could outlast --presence-timeout while they log in, stop looking at its
        # channel and miss messages.
        self.heartbeat = Heartbeat(self.clients, heartbeat_period)
        self.cpu_at_load = 0.0
        self.load_started_at = None
        self.figures = {}

    async def __aenter__(self):
        self.server = await self.target.start(self.label)
        self.heartbeat.start()
        return self

    async def __aexit__(self, *exc_info):
        await self.heartbeat.stop()
        if self.target.profiler is not None:
            self.figures.update(await self.target.profiler.detach())
        if len(self.server.ports) > 1:
            on = collections.Counter(client.port for client in self.clients)
            self.figures["clients_per_node"] = "/".join(str(on[p]) for p in self.server.ports)
        if self.server.running():
            stats = self.server.stats()
            self.figures["server_cpu_s"] = round(stats["cpu_s"] - self.cpu_at_load, 2)
            self.figures["server_peak_rss_mib"] = stats["peak_rss_mib"]
        else:
            self.figures["server_crashed"] = True
        close_all(self.clients)
        await self.server.stop()

    async def open(self, names, channel_of, deliveries=None, concurrency=100, node=None):
        """Log in `names`, spread over the server's nodes (a cluster's), or all on the
        node of index `node`."""
        ports = (self.server.ports_for(names) if node is None
                 else [self.server.ports[node]] * len(names))
        clients, failures, retries = await open_sessions(
            self.target.client_class, ports, names, channel_of, deliveries,
            concurrency=concurrency, on_open=self.clients.append)
        if retries:
            self.figures["setup_reconnects"] = self.figures.get("setup_reconnects", 0) + retries
        if failures:
            self.figures["setup_failures"] = self.figures.get("setup_failures", 0) + len(failures)
            self.figures["first_setup_failure"] = failures[0]
        return clients

    async def load_starts(self):
        """CPU seconds are counted from here: setup (logins, joins) is not the scenario."""
        await self.settle()
        # The load generator's own full collections would show as server latency.
        gc.collect()
        gc.freeze()
        self.cpu_at_load = self.server.stats()["cpu_s"]
        self.load_started_at = time.monotonic()
        if self.target.profiler is not None:
            self.target.profiler.attach(self.server.process.pid, self.label)

    def cpu_meter(self, prefix, deliveries):
        """Call the result at the end of a phase to record server and bench CPU use in %,
        and the server's CPU seconds per 1,000 of the phase's `deliveries`.

        A server near 100% is saturated; a bench near 100% means the load
        generator, not the server, set the pace. For a cluster the server is the sum
        of its nodes, and its NATS server's share is given apart (`*_nats_cpu_*`).
        """
        server_start, client_start = self.server.stats(), client_cpu_seconds()
        machine_busy, machine_total = machine_busy_and_total()
        started, delivered_before = time.monotonic(), len(deliveries)

        def stop():
            elapsed = time.monotonic() - started
            server_now = self.server.stats()
            delivered = len(deliveries) - delivered_before
            for part, key in (("server", "cpu_s"), ("nats", "nats_cpu_s")):
                if key not in server_now:
                    continue
                cpu = server_now[key] - server_start[key]
                self.figures[f"{prefix}_{part}_cpu_pct"] = round(100 * cpu / elapsed)
                self.figures[f"{prefix}_{part}_cpu_s_per_1k"] = (
                    float(f"{1000 * cpu / delivered:.3g}") if delivered else None)
            self.figures[f"{prefix}_bench_cpu_pct"] = round(
                100 * (client_cpu_seconds() - client_start) / elapsed)
            busy, total = machine_busy_and_total()
            self.figures[f"{prefix}_machine_busy_pct"] = round(
                100 * (busy - machine_busy) / max(1, total - machine_total))
        return stop

    async def settle(self, limit=60.0, quiet_share=0.1, sample=0.3):
        """Wait until the server and the bench are both nearly idle.

        Joining N viewers makes O(N²) member notifications that keep both sides
        busy after the last join returns; a phase that starts before they are
        out measures them, not the scenario.
        """
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            server_before, bench_before = self.server.stats()["cpu_s"], client_cpu_seconds()
            await asyncio.sleep(sample)
            server_busy = self.server.stats()["cpu_s"] - server_before
            bench_busy = client_cpu_seconds() - bench_before
            if max(server_busy, bench_busy) < quiet_share * sample:
                return

    def server_errors(self):
        """Error replies, and every client the server stopped serving, with why.

        A client stops getting messages when the server closes its connection
        (the goodbye line's kind and reason, or the connection error: chatd
        drops a slow reader at --max-output-buffer with a reset and a line in
        its log) or, on chatd, when its presence lapses: a viewer announced
        offline no longer looks at its channel and gets nothing, with no error.
        """
        errors = [error for client in self.clients for error in client.errors]
        if errors:
            self.figures["server_errors"] = len(errors)
            self.figures["first_server_error"] = errors[0]
        closed = [client for client in self.clients if client.closed]
        if closed:
            self.figures["clients_closed_by_server"] = len(closed)
            reasons = collections.Counter(client.close_reason for client in closed)
            self.figures["close_reasons"] = "; ".join(
                f"{count}x {reason}" for reason, count in reasons.most_common())
            first = min(closed, key=lambda client: client.closed_at)
            self.figures["first_closed"] = (f"{first.name} {self.when(first.closed_at)}: "
                                            f"{first.close_reason}")
        lapses = self.presence_lapses()
        if lapses:
            self.figures["presence_lapses"] = len(lapses)
            name, at = min(lapses.items(), key=lambda item: item[1])
            self.figures["first_presence_lapse"] = f"{name} announced offline {self.when(at)}"
        dropped = self.server.log_lines(self.target.slow_reader_log)
        if dropped:
            self.figures["slow_readers_dropped"] = len(dropped)
            self.figures["first_slow_reader_drop"] = dropped[0]

    def presence_lapses(self):
        """name -> first time a client still connected was announced offline after it was ready."""
        ready = {client.name: client.ready_at for client in self.clients if not client.closed}
        lapses = {}
        for client in self.clients:
            for name, at in client.offline_seen.items():
                if name in ready and at > ready[name]:
                    lapses[name] = min(at, lapses.get(name, at))
        return lapses

    def when(self, monotonic):
        if self.load_started_at is None or monotonic < self.load_started_at:
            return "during setup"
        return f"{monotonic - self.load_started_at:.1f}s into the load"

    def receivers_short(self, prefix, receivers, sent):
        """Check each receiver's share of a phase in which everyone gets every message
        (on chatd their own too): how many got less, and the first of them with why.

        `prefix` is the phase's, as in its other figures ("" for none)."""
        short = []
        for client in receivers:
            expected = sent - (0 if self.target.echoes_sender else client.sent)
            if client.received < expected:
                short.append((client, expected))
        key = f"{prefix}_" if prefix else ""
        self.figures[f"{key}receivers_short"] = len(short)
        if short:
            client, expected = short[0]
            self.figures[f"{key}first_short"] = (
                f"{client.name}: {client.received} of {expected} ({self.why_short(client)})")

    def why_short(self, client):
        if client.closed:
            return f"closed {self.when(client.closed_at)}: {client.close_reason}"
        lapse = self.presence_lapses().get(client.name)
        if lapse is not None:
            return f"connected, announced offline {self.when(lapse)}"
        return "connected, not announced offline"


async def fanout(target, viewers, senders, rate, duration, max_duration, window, check_log):
    """N clients look at one channel; S of them send: at a set rate, then as fast as relayed."""
    async with Run(target, "fanout") as run:
        steady = Deliveries()
        clients = await run.open([user_name(i) for i in range(viewers)],
                                 lambda name: FANOUT_CHANNEL, steady)
        recipients = len(clients) - (0 if target.echoes_sender else 1)
        tag = new_tag("f")

        def send(client, sequence):
            client.send_channel_message(FANOUT_CHANNEL, marked_text(tag, sequence))

        await run.load_starts()
        since = time.monotonic_ns()
        cpu_done = run.cpu_meter("steady", steady)
        acks = measure_acks(clients[:senders])
        sent, elapsed = await send_paced(clients[:senders], send, rate, duration)
        await wait_for_deliveries(steady, sent * recipients)
        cpu_done()
        run.figures.update(phase_figures("steady", steady, sent, recipients, elapsed, since))
        run.receivers_short("steady", clients, sent)
        run.figures.update(ack_figures("steady", acks))
        if check_log:
            logged_at, missing = await wait_for_log(target, tag, sent)
            run.figures["steady_logged"] = sent - len(missing)
            run.figures["steady_log_missing"] = len(missing)

        saturated = Deliveries()
        for client in clients:
            client.count_into(saturated)
        probe = clients[-1]
        max_tag = new_tag("F")
        since = time.monotonic_ns()
        cpu_done = run.cpu_meter("max", saturated)
        acks = measure_acks(clients[:senders])
        sent, elapsed = await send_paced(
            clients[:senders],
            lambda client, sequence: client.send_channel_message(
                FANOUT_CHANNEL, marked_text(max_tag, sequence)),
            None, max_duration, window=window, probe=probe)
        await wait_for_deliveries(saturated, sent * recipients)
        cpu_done()
        run.figures.update(phase_figures("max", saturated, sent, recipients, elapsed, since))
        run.receivers_short("max", clients, sent)
        run.figures.update(ack_figures("max", acks))
        run.server_errors()
    return run.figures


async def many_rooms(target, clients_count, rooms, rate, duration):
    """N clients over K channels, each looking at its own and sending to it."""
    async with Run(target, "rooms") as run:
        deliveries = Deliveries()
        names = [user_name(i) for i in range(clients_count)]
        room_of = {name: room_name(i % rooms) for i, name in enumerate(names)}
        clients = await run.open(names, room_of.get, deliveries)
        per_room = len(clients) // rooms
        recipients = per_room - (0 if target.echoes_sender else 1)
        tag = new_tag("r")

        def send(client, sequence):
            client.send_channel_message(room_of[client.name], marked_text(tag, sequence))

        await run.load_starts()
        since = time.monotonic_ns()
        cpu_done = run.cpu_meter("rooms", deliveries)
        sent, elapsed = await send_paced(clients, send, rate, duration)
        await wait_for_deliveries(deliveries, sent * recipients)
        cpu_done()
        run.figures.update(phase_figures("rooms", deliveries, sent, recipients, elapsed, since))
        run.server_errors()
    return run.figures


async def private_messages(target, clients_count, rate, duration, seed=7):
    """Private messages between random pairs of N clients looking at nothing."""
    async with Run(target, "private") as run:
        deliveries = Deliveries()
        clients = await run.open([user_name(i) for i in range(clients_count)],
                                 lambda name: None, deliveries)
        # chatd relays a private message to the sender too; IRC only to the recipient.
        recipients = 2 if target.echoes_sender else 1
        pick = random.Random(seed)
        tag = new_tag("p")

        def send(client, sequence):
            other = client
            while other is client:
                other = pick.choice(clients)
            client.send_private_message(other.name, marked_text(tag, sequence))

        await run.load_starts()
        since = time.monotonic_ns()
        senders = clients[:]
        pick.shuffle(senders)
        cpu_done = run.cpu_meter("private", deliveries)
        sent, elapsed = await send_paced(senders, send, rate, duration)
        await wait_for_deliveries(deliveries, sent * recipients)
        cpu_done()
        run.figures.update(phase_figures("private", deliveries, sent, recipients, elapsed, since))
        run.server_errors()
    return run.figures


async def login_storm(target, viewers, senders, rate, storm_logins, before, after):
    """L logins at once while a fan-out runs at a steady rate; latency before, during, after."""
    async with Run(target, "storm") as run:
        deliveries = Deliveries()
        clients = await run.open([user_name(i) for i in range(viewers)],
                                 lambda name: FANOUT_CHANNEL, deliveries)
        recipients = len(clients) - (0 if target.echoes_sender else 1)
        tag = new_tag("s")

        def send(client, sequence):
            client.send_channel_message(FANOUT_CHANNEL, marked_text(tag, sequence))

        await run.load_starts()
        start = time.monotonic_ns()
        load = asyncio.create_task(send_paced(clients[:senders], send, rate, before + after))
        await asyncio.sleep(before)
        storm_start = time.monotonic_ns()
        newcomers = [user_name(viewers + i) for i in range(storm_logins)]
        # The newcomers look at the channel too, as a real client would; their
        # deliveries are not counted, so the expected count stays the viewers'.
        storm_clients = await run.open(newcomers, lambda name: FANOUT_CHANNEL,
                                       concurrency=storm_logins)
        storm_end = time.monotonic_ns()
        sent, elapsed = await load
        await wait_for_deliveries(deliveries, sent * recipients)
        run.figures["storm_logins"] = len(storm_clients)
        run.figures["storm_seconds"] = round((storm_end - storm_start) / 1e9, 2)
        run.figures["messages_sent"] = sent
        run.figures["deliveries_expected"] = sent * recipients
        run.figures["deliveries"] = len(deliveries)
        run.receivers_short("", clients, sent)
        for phase, since, until in (("before", start, storm_start),
                                    ("during", storm_start, storm_end),
                                    ("after", storm_end, None)):
            summary = deliveries.summary(since, until)
            run.figures[f"{phase}_p50_ms"] = summary["p50_ms"]
            run.figures[f"{phase}_p99_ms"] = summary["p99_ms"]
            run.figures[f"{phase}_max_ms"] = summary["max_ms"]
        run.server_errors()
    return run.figures


async def idle_connections(target, count, hold, concurrency):
    """How many logged-in, heartbeating clients one server holds, and RSS per connection."""
    async with Run(target, "idle") as run:
        baseline = run.server.stats()["rss_mib"]
        started = time.monotonic()
        server_cpu, bench_cpu = run.server.stats()["cpu_s"], client_cpu_seconds()
        clients = await run.open([user_name(i) for i in range(count)], lambda name: None,
                                 concurrency=concurrency)
        elapsed = time.monotonic() - started
        server_cpu = run.server.stats()["cpu_s"] - server_cpu
        # Which side set the pace: the logins/s one server CPU second buys, and how busy
        # the load generator was (near 100%: it, not the server, was the limit).
        run.figures["login_seconds"] = round(elapsed, 1)
        run.figures["login_server_cpu_s"] = round(server_cpu, 2)
        run.figures["logins_per_server_cpu_s"] = round(count / server_cpu) if server_cpu else None
        run.figures["login_bench_cpu_pct"] = round(
            100 * (client_cpu_seconds() - bench_cpu) / elapsed)
        await run.load_starts()
        # Longer than chatd's 15 s presence timeout: heartbeats must keep everyone online.
        await asyncio.sleep(hold)
        alive = [client for client in clients if not client.closed]
        stats = run.server.stats()
        run.figures["connections_requested"] = count
        run.figures["connections_held"] = len(alive)
        run.figures["rss_baseline_mib"] = baseline
        run.figures["rss_mib"] = stats["rss_mib"]
        run.figures["rss_per_connection_kib"] = (
            round((stats["rss_mib"] - baseline) * 1024 / len(alive), 1) if alive else None)
        run.server_errors()
    return run.figures


async def history(target, clients_count, duration, page, total_messages, seed=11):
    """get_channel requests/s on a channel holding `total_messages` logged messages."""
    async with Run(target, "history") as run:
        clients = await run.open([user_name(i) for i in range(clients_count)],
                                 lambda name: None)
        pick = random.Random(seed)
        latencies = []
        short_pages = 0
        await run.load_starts()
        deadline = time.monotonic() + duration

        async def reader(client):
            nonlocal short_pages
            while time.monotonic() < deadline:
                before = pick.randint(page + 1, total_messages + 1)
                started = time.monotonic_ns()
                reply = await client.request({"get_channel": HISTORY_CHANNEL,
                                              "before": before, "limit": page})
                latencies.append(time.monotonic_ns() - started)
                if len(reply["messages"]) != page:
                    short_pages += 1

        started = time.monotonic()
        await asyncio.gather(*(reader(client) for client in clients))
        elapsed = time.monotonic() - started
        summary = latency_summary(sorted(latencies))
        run.figures.update({
            "requests": summary["count"], "requests_per_s": round(summary["count"] / elapsed),
            "p50_ms": summary["p50_ms"], "p99_ms": summary["p99_ms"],
            "max_ms": summary["max_ms"], "short_pages": short_pages})
        run.server_errors()
    return run.figures


async def log_throughput(target, senders, viewers, duration, window):
    """Messages/s chatd writes to its log when sending as fast as it relays; all checked."""
    async with Run(target, "log") as run:
        deliveries = Deliveries()
        clients = await run.open([user_name(i) for i in range(viewers)],
                                 lambda name: FANOUT_CHANNEL, deliveries)
        recipients = len(clients)
        tag = new_tag("L")

        def send(client, sequence):
            client.send_channel_message(FANOUT_CHANNEL, marked_text(tag, sequence))

        await run.load_starts()
        started = time.monotonic()
        cpu_done = run.cpu_meter("relay", deliveries)
        acks = measure_acks(clients[:senders])
        sent, elapsed = await send_paced(clients[:senders], send, None, duration,
                                         window=window, probe=clients[-1])
        relayed_at = await wait_for_deliveries(deliveries, sent * recipients)
        cpu_done()
        logged_at, missing = await wait_for_log(target, tag, sent)
        run.figures.update({
            "messages_sent": sent,
            "relayed_per_s": round(sent / (relayed_at - started)),
            "logged": sent - len(missing),
            "log_missing": len(missing),
            "logged_per_s": round(sent / (logged_at - started)) if logged_at else None,
            "log_lag_s": round(logged_at - relayed_at, 2) if logged_at else None,
            "deliveries_expected": sent * recipients,
            "deliveries": len(deliveries),
        })
        run.receivers_short("", clients, sent)
        run.figures.update(ack_figures("relay", acks))
        run.server_errors()
    return run.figures


async def cross_node(target, viewers, rate, duration):
    """Send -> relay on the sender's node and on another node, and send -> ok.

    One client on the first node sends to the fan-out channel at `rate`; the
    viewers look at it, round-robin over the nodes (all on the sender's node
    when there is one).
    """
    async with Run(target, "cross") as run:
        nodes = len(run.server.ports)
        names = [user_name(i) for i in range(1 + viewers)]
        senders = await run.open(names[:1], lambda name: FANOUT_CHANNEL, node=0)
        groups = {}
        for node, prefix in ((0, "same_node"), (1, "other_node")):
            placed = names[1:][node::nodes] if node < nodes else []
            if placed:
                deliveries = Deliveries()
                clients = await run.open(placed, lambda name: FANOUT_CHANNEL, deliveries,
                                         node=node)
                groups[prefix] = deliveries, clients
        tag = new_tag("x")

        def send(client, sequence):
            client.send_channel_message(FANOUT_CHANNEL, marked_text(tag, sequence))

        await run.load_starts()
        since = time.monotonic_ns()
        acks = measure_acks(senders)
        sent, elapsed = await send_paced(senders, send, rate, duration)
        for prefix, (deliveries, clients) in groups.items():
            await wait_for_deliveries(deliveries, sent * len(clients))
            run.figures.update(
                phase_figures(prefix, deliveries, sent, len(clients), elapsed, since))
            run.receivers_short(prefix, clients, sent)
        run.figures.update(ack_figures("send", acks))
        run.server_errors()
    return run.figures
