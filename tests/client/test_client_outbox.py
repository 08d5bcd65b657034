"""The outbox: nothing typed is lost, whatever the connection does, and nothing shows twice.

Real windows against a real chatd that the tests stop and start again on the same
port and database; the outbox file lives in the test's directory.
"""

from PyQt6.QtCore import QPoint, Qt
from PyQt6.QtGui import QTextCursor
from support import login as protocol_login, look_at, start_server, stop_server, wait

from conftest import PATIENCE, fill_login
from qtclient.entities import Conversation
from qtclient.model import parse_address
from qtclient.outbox import Outbox
from test_client_gui import GENERAL, join_general, send, shown_texts


def restart(server):
    """A new chatd on the stopped one's port and database (GUI clocks are fake: no timeouts)."""
    return start_server(server.config.database,
                        listen=f"tcp:{server.address.port}:interface=127.0.0.1",
                        admins=server.config.admins, presence_timeout=600)


def pending_texts(window):
    return [m.text for m in window.chat_page.conversation.view.pending]


def reconnect(qtbot, window):
    """Let the window's backoff timer fire and wait until it is signed in and caught up."""
    with qtbot.waitSignal(window.model.historyLoaded, timeout=PATIENCE):
        window.model.clock.advance(1.0)
    assert window.model.state == "online"


def history(server, name, channel="general"):
    """The texts of a channel's history, as a fresh protocol client of someone else
    (``name``, already registered) reads them: logging in as the window's user would
    end the window's session."""
    client = wait(protocol_login(server, name, register_first=False))
    try:
        wait(client.request({"join": channel}))
        reply = wait(client.request({"get_channel": channel, "limit": 200}))
        return [m["channel_message"] for m in reply["messages"]]
    finally:
        client.transport.loseConnection()


def log_in_and_empty_the_outbox(qtbot, make_window, name):
    """A window logged in as `name` once it has sent what its outbox held, looking at #general."""
    window = make_window(name)
    fill_login(window, name)
    with qtbot.waitSignal(window.model.usersChanged, timeout=PATIENCE):
        window.login_page.submit.click()
    qtbot.waitUntil(lambda: not window.model.outbox.all(), timeout=PATIENCE)
    with qtbot.waitSignal(window.model.historyLoaded, timeout=PATIENCE):
        window.model.open_conversation(GENERAL)
    return window


def round_trip(qtbot, window):
    """Wait for one request's answer: everything the server sent before it has arrived."""
    with qtbot.waitSignal(window.model.channelsChanged, timeout=PATIENCE):
        window.model.refresh_channels()


def click_link(qtbot, view, text):
    found = view.document().find(text)
    assert found.hasSelection(), f"no {text!r} in the conversation"
    inside = QTextCursor(view.document())
    inside.setPosition(found.selectionStart() + 1)
    point = view.cursorRect(inside).center() + QPoint(2, 0)
    assert view.anchorAt(point), f"{text!r} is not a link"
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=point)


def test_typed_while_disconnected_shows_sending_then_arrives_once_for_everyone(
        qtbot, logged_in_window, chat_server):
    bob, carol = logged_in_window("bob"), logged_in_window("carol")
    join_general(qtbot, bob)
    join_general(qtbot, carol)
    stop_server(chat_server)
    qtbot.waitUntil(lambda: bob.model.state == carol.model.state == "reconnecting",
                    timeout=PATIENCE)

    send(qtbot, bob, "typed while the server was down")
    send(qtbot, bob, "and a second one")
    view = bob.chat_page.conversation.view
    assert bob.chat_page.conversation.composer.edit.toPlainText() == "", "it went to the outbox"
    assert pending_texts(bob) == ["typed while the server was down", "and a second one"]
    assert view.toPlainText().count("sending…") == 2
    assert bob.outbox_label.text() == "Outbox: 2 sending…"

    restarted = restart(chat_server)
    try:
        reconnect(qtbot, carol)
        reconnect(qtbot, bob)
        qtbot.waitUntil(lambda: not bob.model.outbox.all(), timeout=PATIENCE)
        qtbot.waitUntil(lambda: "and a second one" in shown_texts(carol), timeout=PATIENCE)
        round_trip(qtbot, carol)
        round_trip(qtbot, bob)
        expected = ["typed while the server was down", "and a second one"]
        assert shown_texts(carol) == expected, "relayed once, in the order typed"
        assert shown_texts(bob) == expected and pending_texts(bob) == []
        assert "sending…" not in view.toPlainText() and bob.outbox_label.text() == ""
        assert history(restarted, "carol") == expected
    finally:
        stop_server(restarted)


def test_messages_sent_around_a_server_stop_are_neither_lost_nor_doubled(
        qtbot, logged_in_window, accounts, chat_server):
    accounts("carol")
    bob = logged_in_window("bob")
    join_general(qtbot, bob)
    send(qtbot, bob, "acknowledged before the stop")
    qtbot.waitUntil(lambda: shown_texts(bob) == ["acknowledged before the stop"], timeout=PATIENCE)
    assert not bob.model.outbox.all()
    send(qtbot, bob, "sent as the server stops")  # written to the socket; answered or not
    stop_server(chat_server)
    qtbot.waitUntil(lambda: bob.model.state == "reconnecting", timeout=PATIENCE)
    send(qtbot, bob, "typed after the stop")

    restarted = restart(chat_server)
    try:
        reconnect(qtbot, bob)
        qtbot.waitUntil(lambda: not bob.model.outbox.all(), timeout=PATIENCE)
        round_trip(qtbot, bob)
        expected = ["acknowledged before the stop", "sent as the server stops", "typed after the stop"]
        assert shown_texts(bob) == expected and pending_texts(bob) == []
        assert history(restarted, "carol") == expected
    finally:
        stop_server(restarted)


def test_messages_stored_whose_replies_were_lost_are_not_sent_twice(
        qtbot, make_window, accounts, chat_server, address, tmp_path):
    """The server stored two (with their nonces) but the client never heard; a third never
    left. The resends get the original ids, nothing is stored or relayed again, each shows once."""
    accounts("bob", "carol")
    carol = wait(protocol_login(chat_server, "carol", register_first=False))
    wait(look_at(carol, "general"))  # she sees what is relayed there
    bob_there = wait(protocol_login(chat_server, "bob", register_first=False))
    wait(bob_there.request({"join": "general"}))
    outbox = Outbox.for_account(str(tmp_path / "data"), str(parse_address(address)), "bob")
    typed = [outbox.add(GENERAL, text) for text in (
        "stored, but the ok never came", "stored too", "never left the client")]
    ids = [wait(bob_there.request({"channel_message": message.text, "channel": "general",
                                   "nonce": message.nonce}))["id"] for message in typed[:2]]
    bob_there.transport.loseConnection()

    window = log_in_and_empty_the_outbox(qtbot, make_window, "bob")
    texts = [message.text for message in typed]
    assert [m.id for m in window.model.messages(GENERAL)][:2] == ids
    assert shown_texts(window) == texts and pending_texts(window) == []
    wait(carol.barrier())
    relayed = [line["channel_message"] for line in carol.inbox if "channel_message" in line]
    assert relayed == texts, "each relayed once: the resends were not relayed again"
    assert history(chat_server, "carol") == texts


def test_a_refused_message_shows_the_reason_with_retry_and_delete(
        qtbot, logged_in_window, accounts, address):
    bob = logged_in_window("bob")
    ghost = Conversation.private("ghost")
    bob.chat_page.open(ghost)
    qtbot.waitUntil(lambda: bob.model.current == ghost, timeout=PATIENCE)
    view = bob.chat_page.conversation.view
    send(qtbot, bob, "anyone there?")
    qtbot.waitUntil(lambda: "not sent" in view.toPlainText(), timeout=PATIENCE)
    [refused] = bob.model.pending(ghost)
    assert refused.error and refused.error in view.toPlainText(), "the server's own words"
    assert bob.outbox_label.text() == "Outbox: 1 not sent"

    accounts("ghost")  # now the server takes it: Retry sends it with the same nonce
    with qtbot.waitSignal(bob.model.messageReceived, timeout=PATIENCE):
        click_link(qtbot, view, "Retry")
    qtbot.waitUntil(lambda: shown_texts(bob) == ["anyone there?"], timeout=PATIENCE)
    assert pending_texts(bob) == [] and "not sent" not in view.toPlainText()

    bob.chat_page.open(Conversation.private("nobody"))
    qtbot.waitUntil(lambda: bob.model.current == Conversation.private("nobody"), timeout=PATIENCE)
    send(qtbot, bob, "lost cause")
    qtbot.waitUntil(lambda: "Delete" in view.toPlainText(), timeout=PATIENCE)
    click_link(qtbot, view, "Delete")
    assert pending_texts(bob) == [] and "lost cause" not in view.toPlainText()
    assert not bob.model.outbox.all()
    reread = Outbox.for_account(bob.model.data_dir, str(parse_address(address)), "bob")
    assert reread.all() == [], "deleted from the file too"


def test_the_outbox_survives_a_restart_of_the_client(
        qtbot, logged_in_window, make_window, accounts, chat_server):
    accounts("carol")
    bob = logged_in_window("bob")
    join_general(qtbot, bob)
    stop_server(chat_server)
    qtbot.waitUntil(lambda: bob.model.state == "reconnecting", timeout=PATIENCE)
    send(qtbot, bob, "typed, then the client quit")
    bob.model.close()
    bob.close()

    restarted = restart(chat_server)
    try:
        again = make_window("bob-again")  # a new model and window, same data directory
        fill_login(again, "bob")
        with qtbot.waitSignal(again.model.usersChanged, timeout=PATIENCE):
            again.login_page.submit.click()
        qtbot.waitUntil(lambda: not again.model.outbox.all(), timeout=PATIENCE)
        assert history(restarted, "carol") == ["typed, then the client quit"]
        again.chat_page.open(GENERAL)  # (the new window may have opened it already)
        qtbot.waitUntil(lambda: shown_texts(again) == ["typed, then the client quit"],
                        timeout=PATIENCE)
        round_trip(qtbot, again)
        assert shown_texts(again) == ["typed, then the client quit"]
        assert pending_texts(again) == []
    finally:
        stop_server(restarted)


def test_a_backlog_is_paced_under_flood_control_and_arrives_whole_and_in_order(
        qtbot, logged_in_window, accounts, chat_server):
    """Twelve messages typed while the server was down meet a server allowing 6 requests
    at once, then 10 a second: "too fast" is not "refused", they wait and go on."""
    from twisted.internet import reactor
    accounts("carol")
    bob = logged_in_window("bob", clock=reactor)  # the resend delay runs in real time here
    join_general(qtbot, bob)
    stop_server(chat_server)
    qtbot.waitUntil(lambda: bob.model.state == "reconnecting", timeout=PATIENCE)
    typed = [f"backlog {n}" for n in range(12)]
    for text in typed:
        send(qtbot, bob, text)
    assert pending_texts(bob) == typed

    restarted = start_server(chat_server.config.database,
                             listen=f"tcp:{chat_server.address.port}:interface=127.0.0.1",
                             admins=chat_server.config.admins, presence_timeout=600,
                             flood_burst=6, flood_rate=10.0)
    try:
        states = []
        bob.model.connectionStateChanged.connect(states.append)
        qtbot.waitUntil(lambda: not bob.model.outbox.all(), timeout=PATIENCE)
        assert history(restarted, "carol") == typed
        assert shown_texts(bob) == typed and pending_texts(bob) == []
        assert states[states.index("online"):] == ["online"], (
            "signed in once, never disconnected for flooding")
    finally:
        stop_server(restarted)


def test_a_message_that_may_have_left_before_is_marked_as_a_resend(
        qtbot, make_window, accounts, chat_server, address, tmp_path, monkeypatch):
    """What may have gone out before (anything read back from the outbox file) goes
    again with "resend": true, so a server whose database is away does not spool it
    blindly; a first send has none."""
    from chatd.protocol import ChatProtocol
    seen = []
    original = ChatProtocol.do_channel_message

    def recording(self, text, channel, nonce=None, resend=False):
        seen.append((text, resend))
        return original(self, text, channel, nonce, resend)
    monkeypatch.setattr(ChatProtocol, "do_channel_message", recording)
    accounts("bob")
    bob_there = wait(protocol_login(chat_server, "bob", register_first=False))
    wait(bob_there.request({"join": "general"}))
    bob_there.transport.loseConnection()
    outbox = Outbox.for_account(str(tmp_path / "data"), str(parse_address(address)), "bob")
    outbox.add(GENERAL, "sent before the client quit")

    window = log_in_and_empty_the_outbox(qtbot, make_window, "bob")
    send(qtbot, window, "typed now")
    qtbot.waitUntil(lambda: not window.model.outbox.all() and len(seen) == 2, timeout=PATIENCE)
    assert seen == [("sent before the client quit", True), ("typed now", False)]
