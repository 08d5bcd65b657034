"""Helpers for the cluster tests: real `twistd` nodes on the real NATS and MariaDB.

Each test gets its own cluster name (the stream and the subject prefix, in the
--bus URL's path) and its own MariaDB database, so tests never see each
other's events; the stream is deleted afterwards.
"""

import asyncio
import contextlib
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from types import SimpleNamespace

import pytest
from twisted.internet import defer

from support import REQUIRE_MYSQL, mysql_database
from test_twistd import TWISTD, free_port, run_twistd

NATS_HOST, NATS_PORT = "127.0.0.1", 4222
NATS_URL = f"nats://{NATS_HOST}:{NATS_PORT}"
# As support.LIMITS_LIFTED: these tests send quickly from one address.
LIMITS_LIFTED = ["--flood-burst", "1000000", "--flood-rate", "1000000",
                 "--max-connections-per-ip", "10000"]
NODE = [*TWISTD[:-1], "--reactor=asyncio", "chatd"]


def nats_reachable():
    try:
        with socket.create_connection((NATS_HOST, NATS_PORT), timeout=1) as sock:
            return sock.recv(4) == b"INFO"
    except OSError:
        return False


def require_nats():
    """Skip unless NATS is up; with CHATD_REQUIRE_MYSQL=1 (CI), a missing NATS fails."""
    if nats_reachable():
        return
    if REQUIRE_MYSQL:
        pytest.fail(f"CHATD_REQUIRE_MYSQL=1 but no NATS server answers at {NATS_URL}")
    pytest.skip(f"no NATS server at {NATS_URL} (nats-server -js)")


def run_nats(coroutine_function):
    """Run `coroutine_function(nc)` against the test NATS in a thread of its own (its own
    asyncio loop; the tests' reactor is Qt's) and return its result."""
    import nats
    outcome = {}

    async def main():
        nc = await nats.connect(NATS_URL)
        try:
            return await coroutine_function(nc)
        finally:
            await nc.close()

    def thread():
        try:
            outcome["result"] = asyncio.run(main())
        except BaseException as e:     # re-raised in the test's thread
            outcome["error"] = e
    runner = threading.Thread(target=thread)
    runner.start()
    runner.join(30)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("result")


def delete_stream(name):
    from nats.js.errors import NotFoundError

    async def delete(nc):
        with contextlib.suppress(NotFoundError):
            await nc.jetstream().delete_stream(name)
    run_nats(delete)


class Cluster:
    """Nodes started with `start(name)`, sharing one database and one stream."""

    def __init__(self, tmp_path, database, name):
        self.tmp_path = tmp_path
        self.database = database
        self.name = name
        self.bus = f"{NATS_URL}/{name}"
        self.nodes = {}

    def start(self, node, *extra, bus=None):
        """Start `node` on the cluster's bus, or on `bus` (the same NATS through a proxy)."""
        directory = self.tmp_path / node
        directory.mkdir(exist_ok=True)
        process, port = run_twistd(directory, "--listen", "tcp:0:interface=127.0.0.1",
                                   "--database", self.database, "--bus", bus or self.bus,
                                   "--node-name", node, "--bcrypt-rounds", "4",
                                   "--presence-timeout", "3", *LIMITS_LIFTED, *extra,
                                   command=NODE)
        self.nodes[node] = process
        # What support.connect needs of a server.
        process.address = SimpleNamespace(host="127.0.0.1", port=port)
        return process

    def kill(self, node):
        process = self.nodes.pop(node)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        self.keep_log(node, process)

    def stop_all(self):
        for process in self.nodes.values():
            process.terminate()
        for node, process in self.nodes.items():
            try:
                process.wait(20)
            except Exception:
                process.kill()
            self.keep_log(node, process)
        self.nodes.clear()

    def keep_log(self, node, process):
        """The node's log in its directory (node.log), to read when a test fails."""
        lines = []
        while not process.later_output.empty():
            lines.append(process.later_output.get() or "")
        (self.tmp_path / node / "node.log").write_text("".join(lines))


@contextlib.contextmanager
def cluster(tmp_path):
    require_nats()
    with mysql_database() as url:
        name = "t" + uuid.uuid4().hex[:16]
        running = Cluster(tmp_path, url, name)
        try:
            yield running
        finally:
            running.stop_all()
            delete_stream(name)


class PrivateNats:
    """A nats-server with JetStream of the test's own (the shared one stays up), to stop
    and start again on the same store: `stop()`, `start()`; nodes use `bus(name)`."""

    def __init__(self, store):
        self.executable = shutil.which("nats-server") or "/usr/sbin/nats-server"
        self.port = free_port()
        self.store = store
        self.process = None

    def bus(self, cluster_name):
        return f"nats://127.0.0.1:{self.port}/{cluster_name}"

    def start(self):
        self.process = subprocess.Popen(
            [self.executable, "-a", "127.0.0.1", "-p", str(self.port), "-js",
             "-sd", str(self.store)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("nats-server did not start")

    def stop(self):
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@contextlib.contextmanager
def private_cluster(tmp_path, name="private"):
    """A Cluster of nodes on a PrivateNats (started) and a fresh database: (nodes, nats)."""
    require_nats()
    nats = PrivateNats(tmp_path / "nats")
    nats.start()
    try:
        with mysql_database() as url:
            nodes = Cluster(tmp_path, url, name)
            nodes.bus = nats.bus(name)
            try:
                yield nodes, nats
            finally:
                nodes.stop_all()
    finally:
        nats.stop()



@contextlib.contextmanager
def cluster_with_a_behind_a_proxy(tmp_path, name):
    """private_cluster, with a LoopbackProxy on this reactor for node a to reach NATS
    through (so that a test can cut or blackhole a): (nodes, proxy). Start the two
    nodes with start_a_and_b."""
    from support import LoopbackProxy
    with private_cluster(tmp_path, name) as (nodes, nats):
        proxy = LoopbackProxy("127.0.0.1", nats.port)
        proxy.start()
        nodes.proxied_bus = f"nats://127.0.0.1:{proxy.port}/{name}"
        try:
            yield nodes, proxy
        finally:
            proxy.listening.stopListening()
            for connection in list(proxy.factory.connections):
                connection.transport.abortConnection()


@defer.inlineCallbacks
def start_a_and_b(nodes, *options):
    """Nodes a, through the proxy (started aside: the proxy runs on this reactor), and b."""
    from twisted.internet import threads
    a = yield threads.deferToThread(nodes.start, "a", *options, bus=nodes.proxied_bus)
    return a, nodes.start("b", *options)
