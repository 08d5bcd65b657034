"""Client failover: the desktop client given several servers (the nodes of a cluster) moves
to the next one when its node dies, logs in again and resends its outbox.

Real windows against two real `twistd --reactor=asyncio` nodes on the real NATS and
MariaDB (tests/cluster_support.py). The model's timers run on the real reactor here
(heartbeats every second, within the nodes' presence timeout of 3 s).
"""

import time

from PyQt6.QtCore import QSettings
from twisted.internet import reactor, task

from cluster_support import cluster
from conftest import PATIENCE, fill_login
from qtclient.model import parse_servers, servers_text
from qtclient.widgets.window import ChatWindow
from support import PASSWORD, connect, look_at, wait
from test_client_gui import join_general, send, shown_texts


def test_a_server_list_is_parsed_in_order():
    servers = parse_servers(" a:1, tls://b:2 ,,[::1]:3")
    assert [str(s) for s in servers] == ["a:1", "tls://b:2", "[::1]:3"]
    assert servers_text(servers) == "a:1,tls://b:2,[::1]:3"
    assert servers_text(parse_servers("localhost:7878")) == "localhost:7878"  # outbox key kept


def test_the_login_page_takes_several_servers_and_tls_for_each(make_window):
    page = make_window().login_page
    page.set_server("tls://a:1,tls://b:2")
    assert page.use_tls.isChecked() and page.address.text() == "a:1, b:2"
    assert page.server() == "tls://a:1,tls://b:2"
    page.use_tls.setChecked(False)
    page.set_server("a:1, b:2")
    assert page.server() == "a:1,b:2" and not page.use_tls.isChecked()


def test_a_login_goes_on_to_the_next_server_when_one_is_down(
        qtbot, make_model, accounts, address):
    from test_twistd import free_port
    accounts("bob")
    model = make_model()
    down = f"127.0.0.1:{free_port()}"
    with qtbot.waitSignal(model.loggedIn, timeout=PATIENCE):
        model.login(f"{down},{address}", "bob", PASSWORD)
    assert str(model.server) == address
    failed = make_model()
    with qtbot.waitSignal(failed.loginFailed, timeout=PATIENCE) as refused:
        failed.login(f"{down},{down}", "bob", PASSWORD)
    assert "Could not reach the server" in refused.args[0]


def window_on(qtbot, tmp_path, name, servers):
    from qtclient.model import ChatModel
    model = ChatModel(reactor, heartbeat_interval=1.0, reconnect_delays=(1.0, 4.0),
                      data_dir=str(tmp_path / "data"))
    settings = QSettings(str(tmp_path / f"{name}.ini"), QSettings.Format.IniFormat)
    settings.setValue("server/address", servers)
    window = ChatWindow(model, settings)
    qtbot.addWidget(window)
    window.show()
    return window


def register(node, name):
    client = wait(connect(node))
    reply = wait(client.request({"register": name, "password": PASSWORD,
                                 "email": f"{name}@example.org"}))
    assert reply.get("ok"), reply
    return client


def test_the_client_moves_to_the_next_node_when_its_node_dies(qtbot, tmp_path):
    with cluster(tmp_path) as nodes:
        a, b = nodes.start("a"), nodes.start("b")
        servers = f"127.0.0.1:{a.address.port},127.0.0.1:{b.address.port}"
        register(a, "bob")
        carol = register(b, "carol")
        assert wait(carol.request({"user:pwd": f"carol:{PASSWORD}"})).get("ok")
        wait(look_at(carol, "general"))
        beat = task.LoopingCall(carol.send, {"presence": "online", "channel": "general"})
        beat.start(1.0)

        bob = window_on(qtbot, tmp_path, "bob", servers)
        model = bob.model
        try:
            fill_login(bob, "bob")
            with qtbot.waitSignal(model.usersChanged, timeout=PATIENCE):
                bob.login_page.submit.click()
            assert model.server.port == a.address.port, "the first server first"
            assert f"127.0.0.1:{a.address.port}" in bob.state_label.text()
            join_general(qtbot, bob)
            send(qtbot, bob, "before the switch")
            qtbot.waitUntil(lambda: shown_texts(bob) == ["before the switch"], timeout=PATIENCE)
            wait(carol.wait_for(lambda m: m.get("channel_message") == "before the switch"))

            tried = []
            model.connectionStateChanged.connect(
                lambda state: state == "connecting" and tried.append(model.server.port))
            killed = time.monotonic()
            nodes.kill("a")
            qtbot.waitUntil(lambda: model.state == "reconnecting", timeout=PATIENCE)
            send(qtbot, bob, "typed during the switch")    # waits in the outbox
            assert [m.text for m in model.outbox.all()] == ["typed during the switch"]
            qtbot.waitUntil(lambda: model.state == "online", timeout=PATIENCE)
            print(f"client failover: online on the next node {time.monotonic() - killed:.2f} s"
                  " after the kill (first reconnect delay 1 s)")
            assert model.server.port == b.address.port and tried == [b.address.port], \
                "straight to the next server in the list"
            assert f"127.0.0.1:{b.address.port}" in bob.state_label.text()
            qtbot.waitUntil(lambda: not model.outbox.all(), timeout=PATIENCE)
            qtbot.waitUntil(lambda: shown_texts(bob) == ["before the switch",
                                                         "typed during the switch"],
                            timeout=PATIENCE)

            got = wait(carol.wait_for(lambda m: m.get("channel_message")
                                      == "typed during the switch"))
            assert got["user"] == "bob"
            wait(carol.barrier())
            again = [m for m in carol.inbox if m.get("channel_message") ==
                     "typed during the switch"]
            assert again == [], "relayed once"
            history = wait(carol.request({"get_channel": "general", "limit": 50}))["messages"]
            assert [m["channel_message"] for m in history] == [
                "before the switch", "typed during the switch"], "stored once"
            # And bob keeps chatting on b.
            send(qtbot, bob, "after the switch")
            wait(carol.wait_for(lambda m: m.get("channel_message") == "after the switch"))
        finally:
            beat.stop()
            model.close()
