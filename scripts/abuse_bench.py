"""Measure what abusive connections do to everyone else (issue 11), on a real `twistd chatd`.

A bystander pair (alice sends 4 messages a second to #lobby, bob receives them)
measures message latency while the attack runs; the server's RSS is sampled
from /proc. Scenarios:

  blank N     N connections that never log in and send only blank lines
  bigpage N   N logged-in connections that each ask for one history page of
              200 long messages (about 3.2 MB) and never read

Run against any checkout (its code is put first on PYTHONPATH), e.g. main's
code exported to /tmp/chatd-main, then this tree:

    python scripts/abuse_bench.py --tree /tmp/chatd-main blank 1
    python scripts/abuse_bench.py --tree . bigpage 100

Everything listens on 127.0.0.1; attackers come from 127.0.0.2 and up (20 a
source address, the default per-address limit).
"""

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PASSWORD = "bench password"
LONG_TEXT = "\U0001F600" * 3990        # 16 kB of UTF-8: a history page of 200 is 3.2 MB
PER_SOURCE = 20


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024


class Server:
    def __init__(self, tree, workdir, *extra):
        self.tree, self.workdir, self.extra = Path(tree).resolve(), workdir, extra

    def start(self):
        twistd = Path(sys.executable).with_name("twistd")
        env = dict(os.environ, PYTHONPATH=str(self.tree))
        self.process = subprocess.Popen(
            [str(twistd), "--pidfile=", "-n", "chatd", "--listen", "tcp:0:interface=127.0.0.1",
             "--database", f"sqlite:{self.workdir}/chatd.sqlite", "--bcrypt-rounds", "4",
             *self.extra], cwd=self.workdir, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in self.process.stdout:
            found = re.search(r"chatd listening on [\d.]+:(\d+)", line)
            if found:
                self.port = int(found.group(1))
                threading.Thread(target=lambda: [None for _ in self.process.stdout],
                                 daemon=True).start()
                return self
        raise RuntimeError("chatd did not start")

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)


class Client:
    """A blocking line client; `source` picks the loopback address it connects from."""

    def __init__(self, port, source="127.0.0.1", rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((source, 0))
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        self.lines = self.sock.makefile("rb")

    def send(self, payload):
        self.sock.sendall(json.dumps(payload, ensure_ascii=False).encode() + b"\n")

    def request(self, payload):
        self.send(payload)
        while True:
            message = json.loads(self.lines.readline())
            if "reply_to" in message:
                assert "error" not in message, message
                return message

    def account(self, name):
        self.request({"register": name, "password": PASSWORD, "email": f"{name}@example.org"})
        return self.request({"user:pwd": f"{name}:{PASSWORD}"})

    def close(self):
        self.lines.close()
        self.sock.close()


def source(index):
    return f"127.0.0.{2 + index // PER_SOURCE}"


class Bystanders:
    """alice -> #lobby -> bob, 4 messages a second; latencies in ms."""

    def __init__(self, port):
        self.alice, self.bob = Client(port), Client(port)
        self.alice.account("alice")
        self.bob.account("bob")
        for client in (self.alice, self.bob):
            client.request({"join": "lobby"})
            client.send({"presence": "online", "channel": "lobby"})
        self.sent, self.latencies, self.running = {}, [], True
        threading.Thread(target=self._receive, daemon=True).start()
        threading.Thread(target=self._drain, args=(self.alice,), daemon=True).start()
        threading.Thread(target=self._send, daemon=True).start()

    def _send(self):
        sequence = 0
        while self.running:
            sequence += 1
            if self.window is not None:
                self.sent[f"m{sequence}"] = time.monotonic()
            try:
                self.alice.send({"channel_message": f"m{sequence}", "channel": "lobby"})
                if sequence % 20 == 0:
                    self.alice.send({"presence": "online", "channel": "lobby"})
                    self.bob.send({"presence": "online", "channel": "lobby"})
            except OSError:
                return
            time.sleep(0.25)

    window = None

    def _receive(self):
        for line in self.bob.lines:
            text = json.loads(line).get("channel_message")
            sent = self.sent.pop(text, None)
            if sent is not None:
                self.latencies.append((time.monotonic() - sent) * 1000)

    @staticmethod
    def _drain(client):
        for _ in client.lines:
            pass

    def measure(self):
        self.window, self.latencies = True, []

    def figures(self):
        lost = len(self.sent)
        values = sorted(self.latencies)
        if not values:
            return "no message arrived"
        p50 = statistics.median(values)
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        return f"p50 {p50:.1f} ms, p99 {p99:.1f} ms ({len(values)} messages, {lost} not arrived)"


def blank_flooder(port, index, stop, outcome):
    """Send blank lines until the server closes its side (seen by a reader thread)."""
    client = Client(port, source(index))
    closed = threading.Event()

    def read():
        try:
            for _ in client.lines:
                pass
        except OSError:
            pass
        closed.set()
    threading.Thread(target=read, daemon=True).start()
    data = b"\n" * 65536
    try:
        while not stop.is_set() and not closed.is_set():
            client.sock.sendall(data)
    except OSError:
        closed.set()
    outcome.append("disconnected" if closed.wait(1) else "still connected")


def seed(tree, workdir, messages):
    """A first run (flood control lifted) creates #lobby for the bystanders, away from
    the attack, and writes `messages` long messages into #general."""
    server = Server(tree, workdir, "--flood-burst", "100000", "--flood-rate", "100000",
                    "--admin", "writer").start()
    writer = Client(server.port)
    writer.account("writer")
    writer.request({"command": "create lobby"})
    writer.request({"join": "general"})
    for i in range(messages):
        writer.request({"channel_message": f"{i:03} {LONG_TEXT}", "channel": "general"})
    writer.close()
    server.stop()


def big_page_reader(port, index, readers, ready):
    """Log in and join #general; once every reader has, ask for the page and never read.

    (Joining after the others asked would write a member event to them, and the
    check before each write would drop them for that, not for their page.)
    """
    client = Client(port, source(index), rcvbuf=4096)
    client.account(f"reader{index}")
    client.request({"join": "general"})
    ready.wait()
    client.sock.sendall(b'{"get_channel": "general", "limit": 200}\n')
    readers.append(client)         # and never read again


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default=".", help="checkout whose chatd to run")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the attack")
    parser.add_argument("scenario", choices=["blank", "bigpage"])
    parser.add_argument("connections", type=int)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="abuse-bench-")
    try:
        seed(args.tree, workdir, messages=200 if args.scenario == "bigpage" else 0)
        server = Server(args.tree, workdir).start()
        pid = server.process.pid
        bystanders = Bystanders(server.port)
        time.sleep(2)
        bystanders.measure()
        time.sleep(5)
        calm = bystanders.figures()
        rss_before = rss_mib(pid)
        bystanders.measure()
        stop, outcome, readers, peak = threading.Event(), [], [], rss_before
        if args.scenario == "blank":
            threads = [threading.Thread(target=blank_flooder, daemon=True,
                                        args=(server.port, i, stop, outcome))
                       for i in range(args.connections)]
        else:
            ready = threading.Barrier(args.connections)
            threads = [threading.Thread(target=big_page_reader, daemon=True,
                                        args=(server.port, i, readers, ready))
                       for i in range(args.connections)]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        while time.monotonic() - started < args.seconds:
            time.sleep(0.5)
            peak = max(peak, rss_mib(pid))
        during = bystanders.figures()
        rss_end = rss_mib(pid)
        stop.set()
        held = sum(1 for r in readers if _still_open(r))
        print(f"{args.scenario} x{args.connections} against {Path(args.tree).resolve()}:")
        print(f"  bystander before the attack: {calm}")
        print(f"  bystander during the attack ({args.seconds:g} s): {during}")
        print(f"  server RSS: {rss_before:.1f} MiB before, peak {peak:.1f} MiB, "
              f"{rss_end:.1f} MiB at the end")
        if args.scenario == "blank":
            for thread in threads:
                thread.join(timeout=5)
            print(f"  flooders: {outcome.count('disconnected')} disconnected, "
                  f"{outcome.count('still connected')} still connected at the end")
        else:
            print(f"  big-page readers: {len(readers)} asked, {held} still connected at the end")
        bystanders.running = False
        for reader in readers:
            reader.close()
        server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _still_open(client):
    """True if the server has not closed this (never read) connection."""
    client.sock.setblocking(False)
    try:
        while True:
            data = client.sock.recv(1 << 20)
            if not data:
                return False
    except BlockingIOError:
        return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
