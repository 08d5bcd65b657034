"""The servers under test: chatd (SQLite or MariaDB, alone or as the nodes of a
cluster) and a reference IRC server.

Each scenario starts a fresh server process (or a fresh set of cluster nodes),
so its CPU seconds and peak RSS (read from /proc) belong to that scenario alone.
Everything listens on 127.0.0.1 only, on a port picked free at start.
"""

import asyncio
import functools
import itertools
import os
import random
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bcrypt

from bench.clients import PASSWORD, ChatdClient, IrcClient

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def raise_file_limit(wanted):
    """Raise RLIMIT_NOFILE for this process and the servers it starts (they inherit it).

    Root may raise the hard limit too, unless the container withholds
    CAP_SYS_RESOURCE; then the soft limit goes up to the hard one.
    Returns the soft limit in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(wanted, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_stats(pid):
    """CPU seconds (user + system) and current and peak RSS in MiB of a running process."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    memory = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                memory[key] = int(value.split()[0]) / 1024
    return {"cpu_s": round(cpu, 2), "rss_mib": round(memory["VmRSS"], 1),
            "peak_rss_mib": round(memory["VmHWM"], 1)}


class ServerProcess:
    """One server process: started, waited for until its port accepts, measured, stopped."""

    def __init__(self, argv, port, log_path, cwd=None):
        self.argv = argv
        self.port = port
        self.log_path = log_path
        self.cwd = cwd
        self.process = None

    async def start(self, timeout=60.0):
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, cwd=self.cwd)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.argv[0]} exited with {self.process.returncode} "
                                   f"before listening; see {self.log_path}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return self
            except OSError:
                await asyncio.sleep(0.1)
        await self.stop()
        raise RuntimeError(f"{self.argv[0]} did not listen on port {self.port} within "
                           f"{timeout:.0f}s; see {self.log_path}")

    @property
    def ports(self):
        """The ports clients may connect to: this one (a cluster has one per node)."""
        return [self.port]

    def ports_for(self, names):
        return [self.port] * len(names)

    def running(self):
        return self.process.poll() is None

    def stats(self):
        return process_stats(self.process.pid)

    def log_lines(self, marker):
        """The lines of the server's log that contain `marker` (none for None)."""
        if marker is None or not self.log_path.exists():
            return []
        with open(self.log_path, errors="replace") as log:
            return [line.strip() for line in log if marker in line]

    async def stop(self, timeout=20.0):
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


# twistd, run by this interpreter (so the checkout, the working directory, is on sys.path
# and twistd finds its chatd plugin there).
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


@functools.cache
def chatd_options():
    """The options this checkout's chatd takes: an older tree (a before/after run with
    today's bench copied into it) lacks some limits, which it then does not have to lift."""
    shown = subprocess.run(TWISTD + ["chatd", "--help"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout
    return set(re.findall(r"--[a-z-]+(?==)", shown))


class ChatdTarget:
    """chatd under twistd, on a database the bench seeds itself."""

    client_class = ChatdClient
    echoes_sender = True
    profiler = None
    slow_reader_log = "(--max-output-buffer "      # in each of chatd's slow-reader drops
    limits_lifted = ["--bcrypt-rounds 4 (the bench logs in thousands of users)",
                     "flood control, connections per IP, login backoff, the bcrypt queue "
                     "and registrations per address (all bench clients come from "
                     "127.0.0.1 and send as fast as they can)"]
    lifted = {"--bcrypt-rounds": "4", "--max-connections-per-ip": "100000",
              "--flood-burst": "1000000", "--flood-rate": "1000000",
              "--login-failures": "1000000", "--bcrypt-queue": "1000000",
              "--registrations-per-hour": "1000000"}

    def __init__(self, database, workdir, extra_options=()):
        self.database = database
        self.name = f"chatd-{database}"
        self.lifted_options = [word for option, value in self.lifted.items()
                               if option in chatd_options() for word in (option, value)]
        self.lifted_options += list(extra_options)
        self.workdir = workdir
        self.db = ChatdDatabase.for_engine(database, workdir)

    def describe(self):
        return f"twistd -n chatd --database {self.db.url} " + " ".join(self.lifted_options)

    def argv(self, port, reactor=(), options=()):
        """twistd -n (TWISTD), started with the checkout as its working directory."""
        return [*TWISTD, "-n", "--pidfile", "", "--logfile", "-", *reactor, "chatd",
                "--listen", f"tcp:{port}:interface=127.0.0.1",
                "--database", self.db.url, *self.lifted_options, *options]

    async def prepare(self, users, channels, memberships, history=None):
        """Create the schema (by starting chatd once), then seed it directly."""
        await asyncio.to_thread(self.db.reset)
        server = await self.start("schema")
        await server.stop()
        await asyncio.to_thread(self.db.seed, users, channels, memberships, history)

    async def start(self, label):
        port = free_port()
        log_path = self.workdir / f"{self.name}-{label}.log"
        return await ServerProcess(self.argv(port), port, log_path, cwd=REPO).start()


class ChatdClusterTarget(ChatdTarget):
    """`nodes` chatd nodes of one cluster (--bus) on this machine, each on its own port,
    on the MariaDB database of the plain MariaDB target (seeded once for both, so the
    two are measured on the same data), with the bench's own NATS server.

    Every start is a fresh cluster: a new name (the stream's and the subjects'), so no
    event of an earlier scenario is in the stream the nodes read.
    """

    node_names = "abcdefgh"
    _clusters = itertools.count(1)

    def __init__(self, nodes, plain, nats):
        self.nodes = nodes
        self.name = f"chatd-{nodes}-node{'s' if nodes > 1 else ''}"
        self.database = plain.database
        self.db = plain.db
        self.workdir = plain.workdir
        self.lifted_options = plain.lifted_options
        self.nats = nats

    def describe(self):
        names = "|".join(self.node_names[:self.nodes])
        return (f"{self.nodes} x twistd -n --reactor=asyncio chatd --database {self.db.url} "
                f"--bus {self.nats.url}/<a new cluster name per start> --node-name {names} "
                f"--listen <a port per node> " + " ".join(self.lifted_options)
                + " (the bench's own nats-server)")

    async def start(self, label):
        bus = f"{self.nats.url}/bench{os.getpid()}x{next(self._clusters)}"
        nodes = []
        for node in self.node_names[:self.nodes]:
            port = free_port()
            argv = self.argv(port, ["--reactor=asyncio"], ["--bus", bus, "--node-name", node])
            log_path = self.workdir / f"{self.name}-{label}-{node}.log"
            nodes.append(ServerProcess(argv, port, log_path, cwd=REPO))
        # At the same moment, as the cluster's nodes may (docs/cluster.md).
        started = await asyncio.gather(*(node.start() for node in nodes), return_exceptions=True)
        failed = [outcome for outcome in started if isinstance(outcome, BaseException)]
        group = NodeGroup(nodes, self.nats)
        if failed:
            await group.stop()
            raise failed[0]
        return group


class NodeGroup:
    """The running nodes of one cluster, measured and stopped as one server.

    CPU seconds and RSS are the sum over the nodes; `nats_cpu_s` is the NATS
    server's, counted apart since other chatd targets have no such process.
    """

    def __init__(self, nodes, nats):
        self.nodes = nodes
        self.nats = nats

    @property
    def port(self):
        return self.nodes[0].port

    @property
    def ports(self):
        return [node.port for node in self.nodes]

    def ports_for(self, names):
        """One port per name: round-robin over the nodes, in an order shuffled once
        (seeded, so every run spreads alike). Straight round-robin by index would put
        every member of a room on one node in the rooms scenario (client i is in room
        i mod K, and K is even): shuffled, each room has members on every node, as
        behind a load balancer, and the nodes still get the same number of clients."""
        order = list(range(len(names)))
        random.Random(len(names)).shuffle(order)
        ports = [None] * len(names)
        for position, index in enumerate(order):
            ports[index] = self.nodes[position % len(self.nodes)].port
        return ports

    def running(self):
        return all(node.running() for node in self.nodes)

    def stats(self):
        each = [node.stats() for node in self.nodes]
        total = {key: round(sum(stats[key] for stats in each), 2) for key in each[0]}
        total["nats_cpu_s"] = self.nats.stats()["cpu_s"]
        return total

    def log_lines(self, marker):
        return [line for node in self.nodes for line in node.log_lines(marker)]

    async def stop(self):
        await asyncio.gather(*(node.stop() for node in self.nodes))


class NatsServer:
    """A nats-server with JetStream of the bench's own, on a free port, for the cluster
    targets: its CPU is theirs alone (the machine's shared NATS also serves other
    work), and its store is in the bench's scratch directory, deleted at the end."""

    def __init__(self, workdir):
        self.binary = nats_server_binary()
        self.workdir = workdir
        self.server = None

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.server.port}"

    def describe(self):
        version = subprocess.run([self.binary, "--version"], capture_output=True, text=True)
        return f"{version.stdout.strip()} -a 127.0.0.1 -p PORT -js -sd <scratch directory>"

    async def start(self):
        port = free_port()
        store = self.workdir / "nats"
        argv = [self.binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)]
        self.server = await ServerProcess(argv, port, self.workdir / "nats-server.log").start()
        return self

    def stats(self):
        return self.server.stats()

    async def stop(self):
        if self.server is not None:
            await self.server.stop()


def nats_server_binary():
    return shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if os.access("/usr/sbin/nats-server", os.X_OK) else None)


def cluster_unavailable():
    """Why the cluster targets cannot run here (a sentence), or None if they can."""
    if nats_server_binary() is None:
        return "nats-server is not installed (Debian: apt-get install nats-server)"
    try:
        import nats  # noqa: F401  (chatd's nodes run in this interpreter)
    except ImportError:
        return "nats-py is not installed: pip install '.[cluster]'"
    return None


class ChatdDatabase:
    """Direct access to chatd's database, for seeding before a start and checking the log."""

    @staticmethod
    def for_engine(engine, workdir):
        if engine == "sqlite":
            return SqliteDatabase(workdir / "chatd-bench.sqlite")
        return MariadbDatabase(f"chatd_bench_{os.getpid()}")

    def seed(self, users, channels, memberships, history):
        """Insert users (all with PASSWORD), channels, memberships and history messages."""
        password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
        now = "2026-01-01 00:00:00.000"
        connection = self.connect()
        cursor = connection.cursor()
        p = self.placeholder
        cursor.executemany(
            f"INSERT INTO users (name, email, password_hash, role, created_at) "
            f"VALUES ({p}, {p}, {p}, 'user', {p})",
            [(name, f"{name}@bench.example.org", password_hash, now) for name in users])
        cursor.executemany(
            f"INSERT INTO channels (name, private, created_by, created_at) VALUES ({p}, 0, NULL, {p})",
            [(name, now) for name in channels])
        cursor.execute("SELECT id, name FROM channels")
        channel_ids = {name: channel_id for channel_id, name in cursor.fetchall()}
        cursor.executemany(
            f"INSERT INTO memberships (channel_id, user_name, joined_at) VALUES ({p}, {p}, {p})",
            [(channel_ids[channel], user, now) for channel, user in memberships])
        if history is not None:
            channel, count = history
            rows = ((i, users[i % len(users)], channel_ids[channel], f"history message {i}", now)
                    for i in range(1, count + 1))
            sql = (f"INSERT INTO messages (id, sender, channel_id, body, sent_at) "
                   f"VALUES ({p}, {p}, {p}, {p}, {p})")
            batch = []
            for row in rows:
                batch.append(row)
                if len(batch) == 10_000:
                    cursor.executemany(sql, batch)
                    batch = []
            if batch:
                cursor.executemany(sql, batch)
            # chatd takes message ids from this row at commit; start it above the seed
            # (a tree from before the durable message path counts from MAX(id) instead).
            cursor.execute(self.tables_query)
            if ("message_ids",) in cursor.fetchall():
                cursor.execute(f"UPDATE message_ids SET next_id = {p}", (count + 1,))
        connection.commit()
        connection.close()

    def logged_count(self, tag):
        """How many logged messages have a text starting with `tag`."""
        return self._select(f"SELECT COUNT(*) FROM messages WHERE body LIKE {self.placeholder}",
                            (tag + "%",))[0][0]

    def logged_bodies(self, tag):
        """Texts of the logged messages starting with `tag`."""
        return [row[0] for row in self._select(
            f"SELECT body FROM messages WHERE body LIKE {self.placeholder}", (tag + "%",))]

    def _select(self, sql, params):
        connection = self.connect()
        try:
            cursor = connection.cursor()
            cursor.execute(sql, params)
            return cursor.fetchall()
        finally:
            connection.close()


class SqliteDatabase(ChatdDatabase):
    placeholder = "?"
    tables_query = "SELECT name FROM sqlite_master WHERE type = 'table'"

    def __init__(self, path):
        self.path = path
        self.url = f"sqlite:{path}"

    def reset(self):
        self.drop()

    def drop(self):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def connect(self):
        import sqlite3
        return sqlite3.connect(self.path, timeout=30)


class MariadbDatabase(ChatdDatabase):
    """A database of its own on the local MariaDB (root, no password), dropped at the end.

    Named after the bench's pid, so two bench runs at once (a smoke test
    during a full run) do not reset each other's data.
    """

    placeholder = "%s"
    tables_query = "SHOW TABLES"

    def __init__(self, name):
        self.name = name
        self.url = f"mysql://root:@127.0.0.1:3306/{name}"

    def reset(self):
        self.drop()
        connection = self._server_connection()
        connection.cursor().execute(f"CREATE DATABASE {self.name} CHARACTER SET utf8mb4")
        connection.close()

    def drop(self):
        connection = self._server_connection()
        connection.cursor().execute(f"DROP DATABASE IF EXISTS {self.name}")
        connection.close()

    @staticmethod
    def _server_connection(**kwargs):
        import MySQLdb
        return MySQLdb.connect(host="127.0.0.1", port=3306, user="root", passwd="",
                               charset="utf8mb4", **kwargs)

    def connect(self):
        return self._server_connection(db=self.name)


def mariadb_available():
    try:
        MariadbDatabase._server_connection(connect_timeout=3).close()
        return True
    except Exception:
        return False


class NgircdTarget:
    """ngIRCd, a C IRC server from Debian, configured without its abuse limits."""

    client_class = IrcClient
    echoes_sender = False
    profiler = None
    slow_reader_log = None
    name = "ngircd"
    limits_lifted = ["MaxConnectionsIP 5 -> 0 (unlimited)", "MaxJoins 10 -> 0 (unlimited)",
                     "MaxPenaltyTime -> 0 (flood penalties off)",
                     "DNS and IDENT lookups off", "PAM off"]

    def __init__(self, workdir):
        self.workdir = workdir
        self.binary = shutil.which("ngircd")

    def describe(self):
        version = subprocess.run([self.binary, "--version"], capture_output=True,
                                 text=True).stdout.splitlines()
        return version[0] if version else "ngircd"

    def write_config(self, port):
        path = self.workdir / f"ngircd-{port}.conf"
        path.write_text(NGIRCD_CONFIG.format(port=port, motd=self.workdir / "motd"))
        (self.workdir / "motd").write_text("bench\n")
        return path

    async def start(self, label):
        port = free_port()
        config = self.write_config(port)
        argv = [self.binary, "--nodaemon", "--config", str(config)]
        log_path = self.workdir / f"{self.name}-{label}.log"
        return await ServerProcess(argv, port, log_path).start()


NGIRCD_CONFIG = """\
[Global]
    Name = bench.irc.local
    Info = chatd bench reference server
    Listen = 127.0.0.1
    Ports = {port}
    MotdFile = {motd}

[Limits]
    MaxConnections = 0
    MaxConnectionsIP = 0
    MaxJoins = 0
    MaxPenaltyTime = 0
    MaxNickLength = 31
    PingTimeout = 120
    PongTimeout = 60

[Options]
    DNS = no
    Ident = no
    PAM = no
"""


class ErgoTarget:
    """Ergo, the Go IRC server, from its own default config with its abuse limits lifted.

    Used when given with --ergo or found on PATH (see require_ergo, find_ergo).
    """

    client_class = IrcClient
    echoes_sender = False
    profiler = None
    slow_reader_log = None
    name = "ergo"
    limits_lifted = ["fakelag.enabled true -> false (no command rate limit)",
                     "server.ip-limits count and throttle -> false (no per-IP caps)",
                     "server.max-sendq 96k -> 64M (fan-out bursts are not cut off)",
                     "server.listeners -> only 127.0.0.1:<port>, plaintext",
                     "lookup-hostnames and check-ident off"]

    def __init__(self, binary, workdir):
        self.binary = binary
        self.workdir = workdir

    def describe(self):
        return ergo_version(self.binary)

    def write_config(self, port):
        import yaml  # PyYAML; only needed when ergo is there to be configured
        default = subprocess.run([self.binary, "defaultconfig"], capture_output=True,
                                 text=True, check=True, cwd=self.workdir).stdout
        config = yaml.safe_load(default)
        server = config["server"]
        server["listeners"] = {f"127.0.0.1:{port}": {}}
        server["max-sendq"] = "64M"
        server["ip-limits"]["count"] = False
        server["ip-limits"]["throttle"] = False
        server["lookup-hostnames"] = False
        server["check-ident"] = False
        server["motd"] = ""
        config["fakelag"]["enabled"] = False
        config["languages"]["enabled"] = False
        config["datastore"]["path"] = str(self.workdir / f"ergo-{port}.db")
        config["lock-file"] = str(self.workdir / f"ergo-{port}.lock")
        path = self.workdir / f"ergo-{port}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    async def start(self, label):
        port = free_port()
        config = self.write_config(port)
        initdb = subprocess.run([self.binary, "initdb", "--conf", str(config), "--quiet"],
                                cwd=self.workdir, capture_output=True, text=True)
        if initdb.returncode != 0:
            raise RuntimeError(f"{self.binary} initdb failed: {initdb.stderr.strip()[-500:]}")
        argv = [self.binary, "run", "--conf", str(config)]
        log_path = self.workdir / f"{self.name}-{label}.log"
        return await ServerProcess(argv, port, log_path, cwd=self.workdir).start()


def ergo_version(binary):
    """'ergo-2.x.y' if `binary` is the Ergo IRC server, else None.

    Ergo answers `ergo --version` with its version line (`ergo version`
    prints its usage text). Debian's package named ergo is ERGO, a quantum
    chemistry program that may take an argument for an input file name; the
    check runs in a scratch directory so whatever it writes lands there.
    """
    with tempfile.TemporaryDirectory() as scratch:
        try:
            output = subprocess.run([binary, "--version"], capture_output=True, text=True,
                                    timeout=10, cwd=scratch, stdin=subprocess.DEVNULL).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
    first_line = output.strip().splitlines()[0] if output.strip() else ""
    return first_line if first_line.startswith("ergo-") else None


ERGO_HOW_TO = (
    "Ergo (the IRC server) is not packaged in Debian 12: Debian's `ergo` package is ERGO, "
    "a quantum chemistry program, so `apt-get install ergo` does not help. Put the Ergo "
    "binary from https://github.com/ergochat/ergo/releases (or `go install "
    "github.com/ergochat/ergo@latest`) on PATH, or pass --ergo /path/to/ergo.")


class NotErgo(Exception):
    """The binary given with --ergo is missing or is not the Ergo IRC server."""


def require_ergo(path):
    """The absolute path of the Ergo binary `path` names, or NotErgo saying what is wrong."""
    found = shutil.which(path)
    if found is None:
        if not os.path.exists(path):
            raise NotErgo(f"--ergo {path}: no such file")
        raise NotErgo(f"--ergo {path}: not an executable file")
    if ergo_version(found) is None:
        raise NotErgo(f"--ergo {path}: `{path} --version` does not print ergo-X.Y.Z, so it "
                      f"is not the Ergo IRC server. {ERGO_HOW_TO}")
    return os.path.abspath(found)


def find_ergo():
    """The path of an Ergo IRC server binary on PATH, or None (and say why)."""
    candidate = shutil.which("ergo")
    if candidate and ergo_version(candidate):
        return candidate
    if candidate:
        print(f"{candidate} is not the Ergo IRC server. {ERGO_HOW_TO}", flush=True)
    else:
        print(f"ergo is not installed. {ERGO_HOW_TO}", flush=True)
    return None


def ensure_ngircd():
    """Install Debian's ngircd when missing (as root), or say how."""
    if shutil.which("ngircd"):
        return True
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("ngircd is missing: apt-get install -y ngircd", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", RUNLEVEL="1")
        for command in (["apt-get", "install", "-y", "-q", "ngircd"],
                        ["apt-get", "update", "-q"],
                        ["apt-get", "install", "-y", "-q", "ngircd"]):
            subprocess.run(command, env=env, stdout=subprocess.DEVNULL)
            if shutil.which("ngircd"):
                return True
        return False
    print("ngircd is missing and the bench is not root: run `sudo apt-get install -y ngircd`",
          flush=True)
    return False
