"""Measure what an attacker's load does to a bystander, against a real `twistd chatd`.

Two scenarios from issue 11, each against a fresh SQLite database in a
temporary directory, with the server's own defaults (nothing lifted):

  registration  one address (127.0.0.2, 5 connections) registers accounts as fast
                as it can at bcrypt cost 12, while a legitimate user logs in and out
                again and again from 127.0.0.1: that login's latency p50/p99, and how
                many accounts the sprayer created per minute.
  directory     20,000 accounts (seeded straight into SQLite); 20 connections from
                127.0.0.2 ask for list_users at their flood budget's rate, while alice
                sends bob private messages from 127.0.0.1: the time from alice's send
                to bob's receipt, p50/p99.

Run against any checkout (its chatd is the one twistd loads):

    python scripts/measure_abuse.py registration [--tree PATH] [--seconds 30]
    python scripts/measure_abuse.py directory [--tree PATH] [--seconds 20]

--tree defaults to this checkout; point it at a worktree of an older commit to
measure "before". Loopback only. Prints one JSON line of figures.
"""

import argparse
import asyncio
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery"


class Client:
    """One protocol connection: requests with refs, and a queue of everything else."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.refs = 0
        self.waiting = {}
        self.other = asyncio.Queue()
        self.task = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, port, source="127.0.0.1"):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, local_addr=(source, 0), limit=1 << 24)
        return cls(reader, writer)

    async def _read(self):
        while True:
            line = await self.reader.readline()
            if not line:
                for future in self.waiting.values():
                    if not future.done():
                        future.set_exception(ConnectionError("closed"))
                return
            message = json.loads(line)
            future = self.waiting.pop(message.get("ref"), None)
            if future is not None:
                future.set_result(message)
            else:
                self.other.put_nowait(message)

    def send(self, payload):
        self.writer.write(json.dumps(payload).encode() + b"\n")

    async def request(self, payload):
        self.refs += 1
        future = asyncio.get_running_loop().create_future()
        self.waiting[self.refs] = future
        self.send(dict(payload, ref=self.refs))
        return await asyncio.wait_for(future, 60)

    def close(self):
        self.task.cancel()
        self.writer.close()


def start_server(tree, workdir, *options):
    env = dict(os.environ, PYTHONPATH=str(tree))
    twistd = str(Path(sys.executable).with_name("twistd"))
    log = open(Path(workdir) / "twistd.log", "w")
    process = subprocess.Popen(
        [twistd, "--pidfile=", "-n", "chatd", "--listen", "tcp:0:interface=127.0.0.1",
         "--database", f"sqlite:{Path(workdir) / 'chatd.sqlite'}", *options],
        cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = (Path(workdir) / "twistd.log").read_text()
        found = re.search(r"chatd listening on [\d.]+:(\d+)", text)
        if found:
            return process, int(found.group(1))
        if process.poll() is not None:
            raise SystemExit(f"chatd exited:\n{text}")
        time.sleep(0.1)
    raise SystemExit("chatd did not start within 60 s")


def stop_server(process):
    process.terminate()
    process.wait(30)


def rss_mib(process):
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def percentiles(samples):
    if not samples:
        return {"count": 0}
    ordered = sorted(samples)
    return {"count": len(ordered), "p50_ms": round(statistics.median(ordered) * 1000, 1),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1)}


async def register(port, name, source="127.0.0.1"):
    client = await Client.open(port, source)
    reply = await client.request({"register": name, "password": PASSWORD,
                                  "email": f"{name}@example.org"})
    client.close()
    return reply


async def registration(port, seconds, process):
    assert (await register(port, "legit")).get("ok")
    stop = time.monotonic() + seconds
    created, refused = [0], {}

    async def spray(n):
        client = await Client.open(port, "127.0.0.2")
        i = 0
        while time.monotonic() < stop:
            i += 1
            try:
                reply = await client.request({"register": f"spam{n}x{i}",
                                              "password": PASSWORD, "email": "s@example.org"})
            except ConnectionError:     # disconnected (flooding): come back, as attackers do
                client = await Client.open(port, "127.0.0.2")
                continue
            if reply.get("ok"):
                created[0] += 1
            else:
                refused[reply["error"][:60]] = refused.get(reply["error"][:60], 0) + 1
                await asyncio.sleep(0.5)    # refused: try again soon, within the flood budget
        client.close()

    async def legitimate():
        latencies = []
        client = await Client.open(port)
        while time.monotonic() < stop:
            began = time.monotonic()
            reply = await client.request({"user:pwd": f"legit:{PASSWORD}"})
            if reply.get("ok"):
                latencies.append(time.monotonic() - began)
                await client.request({"logout": ""})
            await asyncio.sleep(0.5)
        client.close()
        return latencies

    results = await asyncio.gather(legitimate(), *(spray(n) for n in range(5)))
    return {"legit_login": percentiles(results[0]),
            "accounts_created_per_minute": round(created[0] * 60 / seconds, 1),
            "refusals": refused, "server_rss_mib": rss_mib(process)}


def seed_accounts(database, count):
    import bcrypt
    password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    db = sqlite3.connect(database)
    db.executemany("INSERT INTO users (name, email, password_hash, role, created_at)"
                   " VALUES (?, ?, ?, 'user', '2026-01-01 00:00:00.000')",
                   [(f"member{n:05}", "m@example.org", password_hash) for n in range(count)])
    db.commit()
    db.close()


async def login(port, name, source="127.0.0.1"):
    client = await Client.open(port, source)
    reply = await client.request({"user:pwd": f"{name}:{PASSWORD}"})
    assert reply.get("ok"), reply
    return client


async def directory(port, seconds, process):
    for name in ("alice", "bob"):
        assert (await register(port, name)).get("ok")
    alice, bob = await login(port, "alice"), await login(port, "bob")
    askers = [await login(port, f"member{n:05}", "127.0.0.2") for n in range(20)]
    stop = time.monotonic() + seconds
    answered = [0]

    async def ask(n):
        client = askers[n]
        while time.monotonic() < stop:
            try:
                reply = await client.request({"list_users": ""})
            except ConnectionError:     # disconnected (flooding): come back, as attackers do
                client = await login(port, f"member{n:05}", "127.0.0.2")
                continue
            answered[0] += bool(reply.get("ok"))
            # As fast as the flood budget allows: 5 requests a second, a pause when refused.
            await asyncio.sleep(0.2 if reply.get("ok") else 1.0)
        askers[n] = client

    async def bystander():
        latencies = []
        while time.monotonic() < stop:
            began = time.monotonic()
            reply = await alice.request({"private_message": "ping", "other_user": "bob"})
            assert reply.get("ok"), reply
            while True:
                message = await asyncio.wait_for(bob.other.get(), 60)
                if message.get("private_message") == "ping":
                    break
            latencies.append(time.monotonic() - began)
            await asyncio.sleep(0.25)       # 4 a second: inside alice's own flood budget
        return latencies

    results = await asyncio.gather(bystander(), *(ask(n) for n in range(len(askers))))
    for client in [alice, bob] + askers:
        client.close()
    return {"bystander_pm": percentiles(results[0]), "list_users_answered": answered[0],
            "server_rss_mib": rss_mib(process)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=["registration", "directory"])
    parser.add_argument("--tree", default=str(ROOT), help="the checkout whose chatd runs")
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        if args.scenario == "registration":
            process, port = start_server(args.tree, workdir, "--bcrypt-rounds", "12")
            run = registration(port, args.seconds or 30, process)
        else:
            process, port = start_server(args.tree, workdir)   # creates the schema
            stop_server(process)
            seed_accounts(Path(workdir) / "chatd.sqlite", 20000)
            process, port = start_server(args.tree, workdir)
            run = directory(port, args.seconds or 20, process)
        try:
            figures = asyncio.run(run)
        finally:
            stop_server(process)
    print(json.dumps({"scenario": args.scenario, "tree": args.tree, **figures}))


if __name__ == "__main__":
    main()
