"""Acknowledged means stored: a real `twistd chatd` killed with SIGKILL at a random
moment, on both engines, loses no acknowledged message, stores none twice and
never gives one id to two messages; during a database outage too; and a resend
with the same nonce after the restart gets the original id."""

import os
import random
import signal
import sqlite3

import pytest

from twisted.internet import defer, endpoints, protocol, reactor, threads
from twisted.internet.error import ConnectionDone

from support import PASSWORD, TestClient, mysql_database
from test_outage import proxied, sleep, started_proxy
from test_twistd import run_twistd

USERS = ["ann", "ben", "cat", "dan"]
WINDOW = 4              # requests a sender keeps in flight (pipelined)
# kill -9 and restart, per engine (CHATD_KILL9_CYCLES=20 for a deeper run)
CYCLES = int(os.environ.get("CHATD_KILL9_CYCLES", "5"))
ARGS = ("--listen", "tcp:0:interface=127.0.0.1", "--bcrypt-rounds", "4",
        "--flood-burst", "1000000", "--flood-rate", "1000000")


class Client(TestClient):
    """A TestClient whose waiters fail at once when the server goes away."""

    def connectionLost(self, reason):
        for _, d in list(self._waiters):
            d.errback(ConnectionDone("the server went away"))
        self._waiters = []
        super().connectionLost(reason)


@defer.inlineCallbacks
def connect(port):
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    client = yield endpoint.connect(protocol.Factory.forProtocol(Client))
    return client


class Ledger:
    """What clients were told, checked against what SQL and history hold."""

    def __init__(self):
        self.acked = {}     # id -> (sender, body, nonce)
        self.sent = {}      # nonce -> (sender, body)
        self.reused = []

    def ack(self, id, sender, body, nonce):
        if id in self.acked and self.acked[id][1] != body:
            self.reused.append((id, self.acked[id][1], body))
        self.acked[id] = (sender, body, nonce)

    def check(self, rows, history, engine):
        """rows: (id, sender, body, nonce) from SQL; history: id -> body read back."""
        stored = {r[0]: r[2] for r in rows}
        bodies = [r[2] for r in rows]
        lost = [i for i, (_, body, _) in self.acked.items() if stored.get(i) != body]
        unseen = [i for i, (_, body, _) in self.acked.items() if history.get(i) != body]
        twice = len(bodies) - len(set(bodies))
        print(f"kill -9 on {engine}: acked={len(self.acked)} stored={len(rows)}"
              f" lost={len(lost)} missing from history={len(unseen)} twice={twice}"
              f" ids reused={len(self.reused)}")
        assert self.acked and not lost and not unseen and not twice and not self.reused


@defer.inlineCallbacks
def start(tmp_path, database, *extra):
    process, port = yield threads.deferToThread(run_twistd, tmp_path, *ARGS,
                                                "--database", database, *extra)
    return process, port


@defer.inlineCallbacks
def kill9(process):
    os.kill(process.pid, signal.SIGKILL)
    yield threads.deferToThread(process.wait, 30)


@defer.inlineCallbacks
def log_in(port, name, register):
    client = yield connect(port)
    client.name = name
    if register:
        reply = yield client.request({"register": name, "password": PASSWORD,
                                      "email": f"{name}@example.org"})
        assert reply.get("ok"), reply
    reply = yield client.request({"user:pwd": f"{name}:{PASSWORD}"})
    assert reply.get("ok"), reply
    reply = yield client.request({"join": "general"})
    assert reply.get("ok"), reply
    return client


@defer.inlineCallbacks
def send_until_gone(client, ledger, label):
    """Send channel messages WINDOW at a time, with nonces, until the server is gone."""
    count, gone = 0, False
    while not gone:
        batch = []
        for _ in range(WINDOW):
            nonce = f"{client.name}-{label}-{count}"
            body = f"message {nonce}"
            count += 1
            ledger.sent[nonce] = (client.name, body)
            reply = client.request({"channel_message": body, "channel": "general",
                                    "nonce": nonce})
            batch.append((nonce, body, reply.addErrback(lambda f: f.trap(ConnectionDone)
                                                        and None)))
        for nonce, body, d in batch:
            reply = yield d
            if reply is None:
                gone = True
                continue
            assert reply.get("ok"), reply
            ledger.ack(reply["id"], client.name, body, nonce)


@defer.inlineCallbacks
def cycle(tmp_path, database, ledger, label, first, during=None):
    """Start, send from every user, kill -9 at a random moment (after `during`, if given)."""
    process, port = yield start(tmp_path, database)
    try:
        clients = []
        for name in USERS:
            clients.append((yield log_in(port, name, register=first)))
        senders = defer.gatherResults([send_until_gone(c, ledger, label) for c in clients])
        yield sleep(random.uniform(0.2, 1.0))
        if during is not None:
            yield during()
        yield kill9(process)
        yield senders
    finally:
        if process.poll() is None:
            process.kill()


@defer.inlineCallbacks
def read_history(port):
    """Every message of #general through the protocol, paging back with `before`."""
    client = yield log_in(port, USERS[0], register=False)
    history, before = {}, None
    while True:
        request = {"get_channel": "general", "limit": 200}
        if before is not None:
            request["before"] = before
        page = yield client.request(request)
        assert page.get("ok"), page
        for m in page["messages"]:
            history[m["id"]] = m["channel_message"]
        if not page["has_more"]:
            break
        before = page["messages"][0]["id"]
    client.transport.loseConnection()
    return history


@defer.inlineCallbacks
def read_search(port):
    """Every message that search finds for the word all bodies share, paging back."""
    client = yield log_in(port, USERS[0], register=False)
    found, before = {}, None
    while True:
        request = {"search": "message", "channel": "general", "limit": 200}
        if before is not None:
            request["before"] = before
        page = yield client.request(request)
        assert page.get("ok"), page
        for m in page["messages"]:
            found[m["id"]] = m["channel_message"]
        if "more_before" not in page:
            break
        before = page["more_before"]
    client.transport.loseConnection()
    return found


@defer.inlineCallbacks
def resend_after_restart(port, ledger, rows_before, read_rows):
    """Resend acknowledged and unanswered messages with their nonces: original ids, no copies."""
    acked_by_nonce = {nonce: i for i, (_, _, nonce) in ledger.acked.items()}
    unanswered = [n for n in ledger.sent if n not in acked_by_nonce]
    sample = random.sample(sorted(acked_by_nonce), min(40, len(acked_by_nonce)))
    clients = {}
    for name in USERS:
        clients[name] = yield log_in(port, name, register=False)
    for nonce in sample + unanswered:
        sender, body = ledger.sent[nonce]
        reply = yield clients[sender].request(
            {"channel_message": body, "channel": "general", "nonce": nonce})
        assert reply.get("ok"), reply
        if nonce in acked_by_nonce:
            assert reply["id"] == acked_by_nonce[nonce], (nonce, reply)
    for client in clients.values():
        client.transport.loseConnection()
    rows = read_rows()
    nonces = [r[3] for r in rows]
    assert len(nonces) == len(set(nonces)), "a resend was stored twice"
    # Only messages never answered before could be new rows.
    assert len(rows) <= len(rows_before) + len(unanswered)
    print(f"resent {len(sample)} acknowledged (same ids) and {len(unanswered)} unanswered;"
          f" {len(rows) - len(rows_before)} of those were new")


def sqlite_reader(path):
    def read():
        with sqlite3.connect(path) as db:
            return db.execute("SELECT id, sender, body, nonce FROM messages ORDER BY id").fetchall()
    return read


def mysql_reader(url):
    def read():
        import MySQLdb
        from chatd.engines import engine_from_url
        conn = MySQLdb.connect(**engine_from_url(url).connect_kwargs())
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT id, sender, body, nonce FROM messages ORDER BY id")
            return [tuple(r) for r in cursor.fetchall()]
        finally:
            conn.close()
    return read


@defer.inlineCallbacks
def kill9_cycles(tmp_path, database, read_rows, engine, during=None, cycles=CYCLES,
                 reconnect=lambda: None, ledger=None):
    ledger = Ledger() if ledger is None else ledger
    for n in range(cycles):
        yield cycle(tmp_path, database, ledger, f"c{n}", first=n == 0, during=during)
        reconnect()
    process, port = yield start(tmp_path, database)
    try:
        history = yield read_history(port)
        rows = read_rows()
        ledger.check(rows, history, engine)
        # The search index (on SQLite a file of its own, written after the commits)
        # finds every acknowledged message too.
        found = yield read_search(port)
        unfound = [i for i, (_, body, _) in ledger.acked.items() if found.get(i) != body]
        print(f"kill -9 on {engine}: acked messages not found by search={len(unfound)}")
        assert not unfound
        yield resend_after_restart(port, ledger, rows, read_rows)
    finally:
        process.terminate()
        yield threads.deferToThread(process.wait, 30)


@pytest.mark.timeout(180)
@defer.inlineCallbacks
def test_kill9_sqlite_loses_no_acknowledged_message(tmp_path):
    path = tmp_path / "chatd.sqlite"
    yield kill9_cycles(tmp_path, f"sqlite:{path}", sqlite_reader(path), "sqlite")


@pytest.mark.timeout(180)
@defer.inlineCallbacks
def test_kill9_mariadb_loses_no_acknowledged_message(tmp_path):
    with mysql_database() as url:
        yield kill9_cycles(tmp_path, url, mysql_reader(url), "mariadb")


@pytest.mark.timeout(180)
@defer.inlineCallbacks
def test_kill9_during_a_mariadb_outage_loses_no_acknowledged_message(tmp_path):
    """The proxy is cut mid-stream (acks then come from the fsynced spool), then kill -9."""
    with mysql_database() as url:
        proxy = started_proxy(url)
        try:
            ledger, acked_during = Ledger(), []

            @defer.inlineCallbacks
            def outage():
                yield proxy.cut()
                before = len(ledger.acked)
                yield sleep(random.uniform(0.3, 0.6))
                acked_during.append(len(ledger.acked) - before)
            yield kill9_cycles(tmp_path, proxied(url, proxy), mysql_reader(url),
                               "mariadb with an outage", during=outage, cycles=3,
                               reconnect=proxy.restore, ledger=ledger)
            print("acknowledged from the spool during each outage:", acked_during)
            assert all(acked_during), acked_during
        finally:
            if proxy.listening is not None:
                proxy.listening.stopListening()
