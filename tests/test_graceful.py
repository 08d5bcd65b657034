"""Graceful restart: a real `twistd -n chatd` stopped by SIGTERM or SIGINT tells its
clients, writes every accepted message, exits, and starts again with full history."""

import json
import re
import signal
import socket
import sqlite3
import time

import pytest

from chatd.server import SHUTDOWN_REASON
from test_twistd import run_twistd

PASSWORD = "long enough"


class LineClient:
    """A blocking client for a server in another process: replies and events by line."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.stream = self.sock.makefile("rwb")
        self.lines = []

    def send(self, payload):
        self.stream.write(json.dumps(payload).encode() + b"\n")
        self.stream.flush()

    def request(self, payload):
        self.send(payload)
        while True:
            message = self.read()
            if message.get("reply_to") is not None or "error" in message:
                return message

    def read(self):
        line = self.stream.readline()
        assert line, f"connection closed; earlier lines: {self.lines[-5:]!r}"
        message = json.loads(line)
        self.lines.append(message)
        return message

    def read_to_end(self):
        """Every line until the server closes the connection."""
        rest = [json.loads(line) for line in self.stream]
        self.lines.extend(rest)
        return rest

    def close(self):
        self.stream.close()     # the file object holds the socket open too
        self.sock.close()


def logged_in(port, name):
    client = LineClient(port)
    assert client.request({"user:pwd": f"{name}:{PASSWORD}"}).get("ok")
    return client


def _drain(lines):
    """Everything the process wrote after it started listening, up to its exit."""
    found = []
    while (line := lines.get(timeout=10)) is not None:
        found.append(line)
    return found


def stored_messages(path):
    with sqlite3.connect(path) as db:
        return db.execute("SELECT id, body FROM messages ORDER BY id").fetchall()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_signal_tells_clients_flushes_the_log_and_restart_has_full_history(tmp_path,
                                                                          stop_signal):
    # Flood control lifted: the burst below is meant to be accepted, not refused.
    listen = ("--listen", "tcp:0:interface=127.0.0.1", "--bcrypt-rounds", "4",
              "--flood-burst", "100000", "--flood-rate", "100000")
    process, port = run_twistd(tmp_path, *listen)
    try:
        registrar = LineClient(port)
        for name in ("alice", "bob"):
            assert registrar.request({"register": name, "password": PASSWORD,
                                      "email": f"{name}@example.org"}).get("ok")
        registrar.close()
        alice, bob = logged_in(port, "alice"), logged_in(port, "bob")
        for client in (alice, bob):
            assert client.request({"join": "general"}).get("ok")
        accepted = {}
        for i in range(20):
            reply = alice.request({"channel_message": f"settled {i}", "channel": "general"})
            accepted[reply["id"]] = f"settled {i}"
        # A burst still being accepted and logged when the signal arrives.
        burst = [f"burst {i}" for i in range(3000)]
        for body in burst:
            alice.send({"channel_message": body, "channel": "general"})
        # Wait for 50 acknowledgements (relays and unread events come in between).
        early = []
        while sum(m.get("reply_to") == "channel_message" for m in early) < 50:
            early.append(alice.read())
        process.send_signal(stop_signal)

        lines = early + alice.read_to_end()
        notices = [m for m in alice.lines if m.get("event") == "disconnect"]
        assert notices == [{"event": "disconnect", "kind": "shutdown",
                            "reason": SHUTDOWN_REASON}]
        bob.read_to_end()
        assert {"event": "disconnect", "kind": "shutdown", "reason": SHUTDOWN_REASON} \
            in bob.lines
        replies = [m for m in lines if m.get("reply_to") == "channel_message"]
        accepted.update((m["id"], burst[index]) for index, m in enumerate(replies)
                        if m.get("ok"))
        started = time.monotonic()
        code = process.wait(timeout=30)
        # twistd stops the reactor cleanly, then re-raises the signal so a supervisor
        # sees why it stopped (systemd counts SIGTERM/SIGINT deaths as a clean exit).
        assert code == -stop_signal, code
        assert time.monotonic() - started < 30
        log = "".join(_drain(process.later_output))
        assert re.search(r"chatd stopped: \d+ clients told, message log written", log), log
        assert "Traceback" not in log, log
    finally:
        if process.poll() is None:
            process.kill()

    stored = dict(stored_messages(tmp_path / "chatd.sqlite"))
    assert all(stored.get(i) == body for i, body in accepted.items())
    assert set(stored.values()) <= {f"settled {i}" for i in range(20)} | set(burst)
    assert len(accepted) >= 70
    print(f"{stop_signal.name}: exit status {code}, {len(accepted)} messages accepted,"
          f" {len(stored)} stored")

    process, port = run_twistd(tmp_path, *listen)
    try:
        alice = logged_in(port, "alice")
        reply = alice.request({"get_channel": "general", "limit": 200})
        history = [(m["id"], m["channel_message"]) for m in reply["messages"]]
        assert history == sorted(stored.items())[-200:]
        alice.close()
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_sigterm_on_an_idle_server_still_says_goodbye_to_everyone(tmp_path):
    """The goodbye is flushed before the process exits, with nothing else going on."""
    process, port = run_twistd(tmp_path, "--listen", "tcp:0:interface=127.0.0.1",
                               "--bcrypt-rounds", "4")
    try:
        registrar = LineClient(port)
        names = [f"idle{i}" for i in range(8)]
        for name in names:
            assert registrar.request({"register": name, "password": PASSWORD,
                                      "email": f"{name}@example.org"}).get("ok")
        registrar.close()
        clients = [logged_in(port, name) for name in names]
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        goodbye = {"event": "disconnect", "kind": "shutdown", "reason": SHUTDOWN_REASON}
        told = 0
        for client in clients:
            told += goodbye in client.read_to_end()
            client.close()
        assert told == 8
        assert process.wait(timeout=30) == -signal.SIGTERM
        log = "".join(_drain(process.later_output))
        assert "chatd stopped: 8 clients told" in log and "did not close" not in log, log
    finally:
        if process.poll() is None:
            process.kill()
