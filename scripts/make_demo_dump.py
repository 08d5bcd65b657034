"""Regenerate schema/demo-mysqldump.sql: a real mysqldump of a MariaDB running chatd's schema.

Starts `twistd chatd` against a fresh `chatd_demo` database, fills it with a
small demo data set through the real protocol, stops the server (which writes
every queued message) and runs `mysqldump --databases chatd_demo`.

    python scripts/make_demo_dump.py [--host 127.0.0.1] [--port 3306] [--user root]
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATABASE = "chatd_demo"
PASSWORD = "demo-password"
OUTPUT = Path(__file__).resolve().parent.parent / "schema" / "demo-mysqldump.sql"

CONVERSATION = [
    ("alice", "general", "Welcome to chatd! This is the general channel."),
    ("bob", "general", "Hi everyone, glad to be here."),
    ("carol", "general", "Hello! Is the release still planned for Friday?"),
    ("alice", "general", "Yes, Friday afternoon."),
    ("bob", "random", "Anyone up for lunch?"),
    ("carol", "random", "Sure, 12:30?"),
]


class LineClient:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rwb")

    def request(self, payload):
        self.file.write(json.dumps(payload).encode() + b"\n")
        self.file.flush()
        action = next(key for key in payload if key not in ("user", "other_user", "channel",
                                                            "password", "email"))
        while True:
            message = json.loads(self.file.readline())
            if message.get("reply_to") == action:
                if "error" in message:
                    raise RuntimeError(f"{payload}: {message['error']}")
                return message

    def close(self):
        self.sock.close()


def mysql(args, sql):
    subprocess.run(["mysql", "-h", args.host, "-P", str(args.port), "-u", args.user,
                    "-e", sql], check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3306)
    parser.add_argument("--user", default="root")
    args = parser.parse_args()
    mysql(args, f"DROP DATABASE IF EXISTS {DATABASE}; "
                f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4")
    url = f"mysql://{args.user}:@{args.host}:{args.port}/{DATABASE}"
    with tempfile.TemporaryDirectory() as workdir:
        log_path = Path(workdir) / "chatd.log"
        with log_path.open("w") as log_file:
            server = subprocess.Popen(
                [sys.executable, "-m", "twisted", "--log-format", "text", "chatd",
                 "--listen", "tcp:0:interface=127.0.0.1",
                 "--database", url, "--admin", "alice", "--bcrypt-rounds", "10"],
                cwd=workdir, stdout=log_file, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            fill(wait_for_port(server, log_path))
        finally:
            server.terminate()
            server.wait(timeout=30)
    with OUTPUT.open("w") as out:
        subprocess.run(["mysqldump", "-h", args.host, "-P", str(args.port), "-u", args.user,
                        "--skip-dump-date", "--databases", DATABASE], stdout=out, check=True)
    print(f"wrote {OUTPUT}")


def wait_for_port(server, log_path, timeout=30):
    """The port chatd logs once it listens (it was asked for a free one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        found = re.search(r"chatd listening on [\d.]+:(\d+)", log_path.read_text())
        if found:
            return int(found.group(1))
        time.sleep(0.1)
    sys.exit("chatd did not start:\n" + log_path.read_text())


def fill(port):
    clients = {}
    for name in ("alice", "bob", "carol"):
        client = LineClient(port)
        client.request({"register": name, "password": PASSWORD,
                        "email": f"{name}@example.org"})
        client.request({"user:pwd": f"{name}:{PASSWORD}", "user": name})
        client.request({"join": "general"})
        clients[name] = client
    clients["alice"].request({"command": "create random"})
    for name in ("bob", "carol"):
        clients[name].request({"join": "random"})
    for sender, channel, text in CONVERSATION:
        clients[sender].request({"channel_message": text, "channel": channel})
        time.sleep(0.05)
    clients["bob"].request({"private_message": "Can you review my patch?",
                            "other_user": "alice"})
    clients["alice"].request({"private_message": "Sure, after lunch.", "other_user": "bob"})
    for client in clients.values():
        client.close()


if __name__ == "__main__":
    main()
