"""In front of the nodes: several nodes on one port (--reuse-port), and HAProxy.

Real `twistd --reactor=asyncio` nodes on the real NATS and MariaDB (as
tests/test_cluster.py), real clients over TCP, and a real haproxy started
with the configuration docs/cluster.md gives.
"""

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from twisted.internet import defer, reactor, task

from cluster_support import cluster
from support import PASSWORD, REQUIRE_MYSQL, connect, ok
from test_cluster import client_on, command, eventually, keep_alive, look, signed_in
from test_twistd import free_port, parse

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cluster.md"
MANY = ["--registrations-per-hour", "1000"]     # every test account comes from 127.0.0.1


def test_reuse_port_is_a_cluster_option():
    from twisted.python.usage import UsageError
    with pytest.raises(UsageError, match="--reuse-port needs --bus URL"):
        parse("--reuse-port")
    config = parse("--reuse-port", "--bus", "nats://127.0.0.1:4222", "--node-name", "a").config()
    assert config.reuse_port is True and parse().config().reuse_port is False


def test_reuse_port_shares_tcp_and_refuses_what_has_no_port(tmp_path):
    from twisted.internet import error, protocol
    from chatd.reuseport import ReusingPort
    shared = ReusingPort(reactor)
    factory = protocol.Factory.forProtocol(protocol.Protocol)
    first = shared.listenTCP(0, factory, interface="127.0.0.1")
    port = first.getHost().port
    try:
        second = shared.listenTCP(port, factory, interface="127.0.0.1")
        assert second.getHost().port == port
        second.stopListening()
        with pytest.raises(error.CannotListenError):     # a socket without SO_REUSEPORT
            reactor.listenTCP(port, factory, interface="127.0.0.1")
        with pytest.raises(error.CannotListenError, match="tcp: and ssl: endpoints only"):
            shared.listenUNIX(str(tmp_path / "socket"), factory)
    finally:
        first.stopListening()


@pytest.mark.timeout(60)
@defer.inlineCallbacks
def test_two_servers_share_one_tls_port(sqlite_database, tmp_path):
    """ssl: with --reuse-port: TLS over the shared socket, as listenSSL would do it.
    (In-process, so no --bus: the option's check is at parsing.)"""
    from support import (connect_tls, make_self_signed_cert, start_server, stop_server,
                         tls_listen)
    key, cert = make_self_signed_cert(tmp_path)
    first = start_server(sqlite_database, listen=tls_listen(key, cert), reuse_port=True)
    second = None
    try:
        port = first.address.port
        second = start_server(f"sqlite:{tmp_path / 'other.sqlite'}",
                              listen=tls_listen(key, cert, port), reuse_port=True)
        assert second.address.port == port
        client = yield connect_tls(first, cert)
        ok((yield client.request({"register": "alice", "password": PASSWORD,
                                  "email": "alice@example.org"})))
    finally:
        if second is not None:
            stop_server(second)
        stop_server(first)


@defer.inlineCallbacks
def where_everyone_is(admin, expected, nodes=("a", "b")):
    """{user: node} from the admin's `users` once it lists `expected` (a login takes a
    moment to cross the bus); the admin's own node is the one no entry names."""
    found = {}

    @defer.inlineCallbacks
    def listed():
        users = ok((yield command(admin, "users")))["users"]
        found.clear()
        found.update({u["user"]: u.get("node") for u in users})
        return set(found) >= set(expected)
    yield eventually(listed, 10)
    named = set(found.values()) - {None}
    here = set(nodes) - named
    assert len(here) == 1, found
    return {user: node or next(iter(here)) for user, node in found.items()}


@defer.inlineCallbacks
def looking(clients):
    """Each client joins #general and keeps looking at it (heartbeats every second)."""
    for client in clients:
        yield look(client)
        keep_alive(client, channel="general")


@defer.inlineCallbacks
def everyone_hears_everyone(clients, label):
    """Each client says one line in #general; every client receives every line once."""
    for client in clients:
        ok((yield client.request({"channel_message": f"{label} {client.name}",
                                  "channel": "general"})))
    expected = {f"{label} {c.name}" for c in clients}
    for client in clients:
        got = []
        while len(got) < len(expected):
            message = yield client.wait_for(
                lambda m: str(m.get("channel_message", "")).startswith(label)
                and "reply_to" not in m)
            got.append(message["channel_message"])
        assert sorted(got) == sorted(expected), client.name


@defer.inlineCallbacks
def history(client, channel="general"):
    """{id: text} of the channel's whole history, read page by page."""
    stored, before = {}, None
    while True:
        page = ok((yield client.request({"get_channel": channel, "limit": 200,
                                         **({"before": before} if before else {})})))
        stored.update((m["id"], m["channel_message"]) for m in page["messages"])
        if not page["has_more"]:
            return stored
        before = min(m["id"] for m in page["messages"])


# -- the PROXY header ------------------------------------------------------------------

@defer.inlineCallbacks
def through_proxy(server, source, name=None, register=False, version=1):
    """A client whose connection starts with the PROXY header HAProxy would send for a
    client at `source`."""
    import ipaddress
    import struct
    client = yield connect(server)
    if version == 1:
        client.send_raw(f"PROXY TCP4 {source} 127.0.0.1 40000 7878\r\n".encode())
    else:   # v2: signature, PROXY command, TCP over IPv4, then the addresses and ports
        addresses = (ipaddress.ip_address(source).packed + bytes([127, 0, 0, 1])
                     + struct.pack("!HH", 40000, 7878))
        client.send_raw(b"\r\n\r\n\x00\r\nQUIT\n" + b"\x21\x11"
                        + struct.pack("!H", len(addresses)) + addresses)
    return (yield signed_in(client, name, register))


@pytest.mark.timeout(60)
@defer.inlineCallbacks
def test_the_proxy_header_gives_each_client_its_own_address(sqlite_database):
    from support import start_server, stop_server
    server = start_server(sqlite_database, proxy_protocol=True, admins=["root"])
    try:
        root = yield through_proxy(server, "10.0.0.1", "root", register=True)
        alice = yield through_proxy(server, "10.0.0.2", "alice", register=True)
        bob = yield through_proxy(server, "10.0.0.3", "bob", register=True, version=2)
        users = ok((yield command(root, "users")))["users"]
        assert {u["user"]: u["ip"] for u in users} == {
            "root": "10.0.0.1", "alice": "10.0.0.2", "bob": "10.0.0.3"}
        # An IP ban refuses the address the header names, not the proxy's.
        ok((yield command(root, "ban 10.0.0.2")))
        assert (yield alice.event("disconnect"))["kind"] == "banned"
        again = yield through_proxy(server, "10.0.0.2")
        assert (yield again.event("disconnect"))["kind"] == "banned"
        ok((yield bob.request({"list_channels": ""})))     # the others stay
        # A connection without the header is closed before a word of chat.
        plain = yield connect(server)
        plain.send({"register": "mallory", "password": PASSWORD, "email": "m@example.org"})
        yield plain.closed
        assert plain.inbox == []
        assert "mallory" not in {name for _, name in server.accounts.names_after("")}
    finally:
        stop_server(server)


def test_the_proxy_header_needs_a_tcp_endpoint(sqlite_database):
    from chatd.server import ChatServer, StartError
    from chatd.options import ServerConfig
    from support import wait
    server = ChatServer(ServerConfig(listen="ssl:0:privateKey=k.pem", database=sqlite_database,
                                     proxy_protocol=True))
    server.startService()
    with pytest.raises(StartError, match="--proxy-protocol works with tcp: endpoints only"):
        wait(server.ready)
    wait(defer.maybeDeferred(server.stopService))


# -- several nodes on one port ---------------------------------------------------------

@pytest.mark.timeout(150)
@defer.inlineCallbacks
def test_nodes_sharing_one_port_spread_clients_and_survive_a_kill(tmp_path):
    port = free_port()
    listen = ["--listen", f"tcp:{port}:interface=127.0.0.1", "--reuse-port", *MANY]
    with cluster(tmp_path) as nodes:
        a = nodes.start("a", "--admin", "root", *listen)
        b = nodes.start("b", "--admin", "root", *listen)
        assert a.address.port == b.address.port == port
        # The kernel spreads connections by a hash of their addresses: 16 clients all on
        # one node would happen once in 32,768 runs.
        clients = yield defer.gatherResults([client_on(a, f"u{i}", register=True) for i in range(16)])
        root = yield client_on(a, "root", register=True)
        keep_alive(root)        # it waits through the resends below (12 s idle timeout)
        placed = yield where_everyone_is(root, [c.name for c in clients])
        spread = {node: sorted(u for u, n in placed.items() if n == node) for node in "ab"}
        print("one port, two nodes:", {node: len(users) for node, users in spread.items()})
        assert spread["a"] and spread["b"], spread
        yield looking(clients)
        yield everyone_hears_everyone(clients, "before")    # lines cross between nodes

        # kill -9 one node while its clients send; they reconnect to the same port.
        victim = "a" if len(spread["a"]) >= len(spread["b"]) else "b"
        senders = [c for c in clients if placed[c.name] == victim]
        acked, sent = [], {}
        stop = []

        @defer.inlineCallbacks
        def sender(client):
            i = 0
            while not stop:
                nonce = f"{client.name}-{i}"
                sent[nonce] = client
                reply = yield client.request({"channel_message": nonce, "channel": "general",
                                              "nonce": nonce})
                if reply.get("ok"):
                    acked.append(reply["id"])
                i += 1
        lanes = [sender(c).addErrback(lambda f: None) for c in senders]
        while len(acked) < 100:
            yield task.deferLater(reactor, 0.02, lambda: None)
        nodes.kill(victim)
        stop.append(True)
        yield defer.DeferredList(lanes)
        for client in senders:
            yield client.closed

        survivor = b if victim == "a" else a
        back = {}
        for client in senders:     # log in again through the same port, resend with nonces
            again = yield client_on(survivor, client.name)
            back[client.name] = again
        for nonce, client in sent.items():
            reply = ok((yield back[client.name].request({
                "channel_message": nonce, "channel": "general", "nonce": nonce})))
            acked.append(reply["id"])       # an acknowledged one answers with its old id
        if placed["root"] == victim:
            root = yield client_on(survivor, "root")
            keep_alive(root)
        everyone = [back.get(c.name, c) for c in clients]
        placed = yield where_everyone_is(root, [c.name for c in everyone],
                                         nodes=("b" if victim == "a" else "a",))
        assert set(placed.values()) == {"b" if victim == "a" else "a"}

        ok((yield root.request({"join": "general"})))
        stored = yield history(root)
        lost = set(acked) - set(stored)
        print(f"one port, node {victim} killed: {len(senders)} of its clients moved,"
              f" acked {len(set(acked))}, stored {len(stored)}, lost {len(lost)}")
        assert not lost
        nonces = [text for text in stored.values() if text in sent]
        assert sorted(nonces) == sorted(sent), "every line once, acknowledged or resent"
        yield looking(back.values())
        yield everyone_hears_everyone(everyone, "after")


# -- HAProxy ----------------------------------------------------------------------------

def haproxy_binary():
    """haproxy's path; skip if it is not installed, unless CI (CHATD_REQUIRE_MYSQL=1)."""
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy"
                                        if os.access("/usr/sbin/haproxy", os.X_OK) else None)
    if found:
        return found
    if REQUIRE_MYSQL:
        pytest.fail("CHATD_REQUIRE_MYSQL=1 but haproxy is not installed (apt-get install haproxy)")
    pytest.skip("haproxy is not installed (apt-get install haproxy)")


def documented_haproxy_cfg(front, backends):
    """docs/cluster.md's haproxy.cfg, with this machine's ports in place of its addresses."""
    text = DOCS.read_text()
    block = re.search(r"<!-- haproxy.cfg -->\n```\n(.*?)```\n<!-- /haproxy.cfg -->", text,
                      re.S).group(1)
    block = block.replace("bind :7878", f"bind 127.0.0.1:{front}")
    for name, port in backends.items():
        block, count = re.subn(rf"(server {name} )\S+", rf"\g<1>127.0.0.1:{port}", block)
        assert count == 1, f"no 'server {name}' line in the documented haproxy.cfg"
    return block


def start_haproxy(binary, config_path, port):
    checked = subprocess.run([binary, "-c", "-f", str(config_path)], capture_output=True,
                             text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    process = subprocess.Popen([binary, "-db", "-f", str(config_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("haproxy did not start")


@pytest.mark.timeout(150)
@defer.inlineCallbacks
def test_haproxy_in_front_moves_clients_to_the_live_node(tmp_path):
    binary = haproxy_binary()
    with cluster(tmp_path) as nodes:
        a = nodes.start("a", "--admin", "root", "--proxy-protocol", *MANY)
        b = nodes.start("b", "--admin", "root", "--proxy-protocol", *MANY)
        front = free_port()
        config = tmp_path / "haproxy.cfg"
        config.write_text(documented_haproxy_cfg(front, {"a": a.address.port,
                                                         "b": b.address.port}))
        haproxy = start_haproxy(binary, config, front)
        try:
            proxy = SimpleNamespace(address=SimpleNamespace(host="127.0.0.1", port=front))
            clients = []
            for i in range(6):      # one after the other: leastconn sees each one arrive
                clients.append((yield client_on(proxy, f"u{i}", register=True, source=f"127.0.0.{10 + i}")))
            root = yield client_on(proxy, "root", register=True)
            placed = yield where_everyone_is(root, [c.name for c in clients])
            # The nodes know each client's own address from haproxy's PROXY header.
            users = ok((yield command(root, "users")))["users"]
            assert {u["user"]: u["ip"] for u in users} == {
                "root": "127.0.0.1", **{f"u{i}": f"127.0.0.{10 + i}" for i in range(6)}}
            spread = {node: [u for u, n in placed.items() if n == node] for node in "ab"}
            print("haproxy, two nodes:", {node: len(users) for node, users in spread.items()})
            assert spread["a"] and spread["b"], spread      # leastconn shares them out
            yield looking(clients)
            yield everyone_hears_everyone(clients, "before")

            victim = "b" if placed["root"] == "a" else "a"
            moved = [c for c in clients if placed[c.name] == victim]
            killed = time.monotonic()
            nodes.kill(victim)
            for client in moved:    # haproxy closes what it had relayed to the dead node
                yield client.closed
            again = {}
            for client in moved:    # the same address: haproxy sends them to the live node
                again[client.name] = yield client_on(proxy, client.name)
            took = time.monotonic() - killed
            everyone = [again.get(c.name, c) for c in clients]
            survivor = "a" if victim == "b" else "b"
            placed = yield where_everyone_is(root, [c.name for c in everyone],
                                             nodes=(survivor,))
            assert set(placed.values()) == {survivor}
            yield looking(again.values())
            yield everyone_hears_everyone(everyone, "after")
            print(f"haproxy, node {victim} killed: {len(moved)} clients moved to {survivor},"
                  f" logged in again {took:.2f} s after the kill")
        finally:
            haproxy.terminate()
            haproxy.wait(10)
