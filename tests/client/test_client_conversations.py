"""What people expect of a conversation, through the real windows against a real chatd:
leaving channels, the multi-line composer, links, emoji, /me and /help, notifications,
presence while disconnected, and the admin's request cards."""

from PyQt6.QtCore import QObject, QPoint, Qt, QUrl, pyqtSlot
from PyQt6.QtGui import QColor, QDesktopServices, QTextCursor
from support import login as protocol_login, start_server, stop_server, wait

from conftest import PATIENCE
from qtclient.entities import Conversation
from qtclient.widgets.style import ACCENT
from qtclient.widgets.window import NOTIFICATIONS_KEY
from test_client_admin import run_command
from test_client_gui import GENERAL, click_sidebar, join_general, send, shown_texts

LOBBY = Conversation.channel("lobby")


def notes(window):
    return window.chat_page.conversation.view.notes


def pixels(image, rect):
    return [QColor(image.pixel(x, y)) for x in range(rect.left(), rect.right())
            for y in range(rect.top(), rect.bottom())]


def test_accept_is_visible_and_request_cards_fit_the_pane(qtbot, logged_in_window):
    alice = logged_in_window("alice")
    run_command(qtbot, alice, "create infrastructure-ops private")
    requester = logged_in_window("maximilian_longname")
    with qtbot.waitSignal(alice.model.joinRequestsChanged, timeout=PATIENCE):
        requester.model.join("infrastructure-ops")
    people = alice.chat_page.people
    people.setCurrentWidget(people.admin)
    (row,) = people.admin.request_rows()
    qtbot.waitUntil(row.isVisible, timeout=PATIENCE)

    button = row.accept.grab().toImage()
    background = QColor(button.pixel(4, button.height() // 2))  # left of the text, inside the border
    accent = QColor(ACCENT)
    assert abs(background.red() - accent.red()) + abs(background.blue() - accent.blue()) < 40, (
        f"Accept is painted {background.name()}, not the accent colour under its white text")

    viewport = people.admin.scroll.viewport()
    assert not people.admin.scroll.horizontalScrollBar().isVisible()
    for widget in (row, row.label, row.accept, row.reject):
        right = widget.mapTo(viewport, QPoint(widget.width(), 0)).x()
        assert right <= viewport.width(), f"{widget} ends at {right} in a {viewport.width()} pane"
    assert row.label.height() >= row.label.heightForWidth(row.label.width()), "text not cut"


def test_counts_and_dots_follow_the_connection_without_switching_conversations(
        qtbot, logged_in_window, chat_server):
    carol = wait(protocol_login(chat_server, "carol"))
    wait(carol.request({"join": "general"}))
    carol.send({"presence": "online", "channel": "general"})
    bob = logged_in_window("bob", reconnect_delays=(1.0, 30.0))
    join_general(qtbot, bob)
    page, model = bob.chat_page, bob.model
    bob.chat_page.sidebar.add_direct("carol")
    qtbot.waitUntil(lambda: page.conversation.info.text() == "2 here, 2 active", timeout=PATIENCE)
    qtbot.waitUntil(lambda: page.people.members.caption.text() == "MEMBERS OF #general — 2",
                    timeout=PATIENCE)
    assert page.sidebar.user_status("carol") == "online"

    port = chat_server.address.port
    stop_server(chat_server)
    qtbot.waitUntil(lambda: model.state == "reconnecting", timeout=PATIENCE)
    # (The stopping server may say carol went offline before it closes bob's connection.)
    statuses = page.people.members.statuses()
    assert "bob" in statuses and set(statuses.values()) == {"offline"}
    assert page.sidebar.user_status("carol") == "offline"
    assert page.conversation.info.text() == "not connected"

    restarted = start_server(chat_server.config.database,
                             listen=f"tcp:{port}:interface=127.0.0.1",
                             admins=chat_server.config.admins, presence_timeout=600)
    try:
        # Signed in again, the client reopens general and fetches what it missed: then
        # (not in between) the header and the list must show the server's fresh count.
        with qtbot.waitSignal(model.historyLoaded, timeout=PATIENCE,
                              check_params_cb=lambda conversation: conversation == GENERAL):
            model.clock.advance(1.0)
        assert page.conversation.info.text() == "1 here, 1 active"
        # carol's connection went with the old server: still a member, offline, not here.
        qtbot.waitUntil(lambda: page.people.members.statuses() == {
            "bob": "online", "carol": "offline"}, timeout=PATIENCE)
        assert page.people.members.looking() == {"bob": "online"}
        assert page.people.members.caption.text() == "MEMBERS OF #general — 2"
        assert model.current == GENERAL, "still the same conversation: nothing was switched"
    finally:
        stop_server(restarted)


def test_leave_from_the_sidebar_menu_and_with_slash_leave(qtbot, logged_in_window, chat_server):
    alice = logged_in_window("alice")
    run_command(qtbot, alice, "create lobby")
    bob = logged_in_window("bob")
    join_general(qtbot, bob)
    sidebar, hub = bob.chat_page.sidebar, chat_server.hub
    with qtbot.waitSignal(bob.model.historyLoaded, timeout=PATIENCE,
                          check_params_cb=lambda conversation: conversation == LOBBY):
        click_sidebar(qtbot, bob, ("join", "lobby"))
    assert "bob" in hub.channels["general"].members
    assert bob.chat_page.conversation.symbol_kind == "hash"

    (label, leave), = sidebar.context_actions(("open", GENERAL))
    assert label == "Leave #general"
    assert sidebar.context_actions(("join", "lobby")) == []
    with qtbot.waitSignal(bob.model.channelsChanged, timeout=PATIENCE):
        leave()
    assert sidebar.item_for(("open", GENERAL)) is None
    assert sidebar.item_for(("join", "general")) is not None
    assert "bob" not in hub.channels["general"].members
    assert bob.model.current == LOBBY, "leaving another channel keeps the open one"

    with qtbot.waitSignal(bob.model.channelsChanged, timeout=PATIENCE):
        send(qtbot, bob, "/leave")
    assert "bob" not in hub.channels["lobby"].members
    assert sidebar.item_for(("open", LOBBY)) is None
    assert bob.model.current is None
    assert bob.chat_page.conversation.title.text() == "Pick a channel"
    assert shown_texts(bob) == [] and notes(bob)[-1].startswith("You left #lobby.")

    send(qtbot, bob, "/leave")
    assert bob.chat_page.conversation.composer.error.text().startswith("Open the channel")


def test_shift_enter_starts_a_new_line_and_enter_sends_it_all(qtbot, logged_in_window):
    alice, bob = logged_in_window("alice"), logged_in_window("bob")
    join_general(qtbot, alice)
    join_general(qtbot, bob)
    edit, view = bob.chat_page.conversation.composer.edit, bob.chat_page.conversation.view
    bar = view.verticalScrollBar()
    for _ in range(6):
        bob.model.show_help()  # (answered at once for a non-admin) enough to scroll
    assert bar.maximum() > 0 and bar.value() == bar.maximum()
    one_line, view_height = edit.height(), view.height()
    qtbot.keyClicks(edit, "first line")
    qtbot.keyClick(edit, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    qtbot.keyClicks(edit, "second line")
    assert edit.toPlainText() == "first line\nsecond line"
    assert edit.height() > one_line, "the composer grows with the lines"
    assert edit.verticalScrollBar().maximum() == 0, "both lines fit without scrolling"
    qtbot.waitUntil(lambda: view.height() < view_height, timeout=PATIENCE)  # the layout has run
    assert bar.value() == bar.maximum(), "the last lines stay in view above the taller composer"
    assert shown_texts(bob) == [], "Shift+Enter does not send"

    with qtbot.waitSignal(alice.model.messageReceived, timeout=PATIENCE) as received:
        qtbot.keyClick(edit, Qt.Key.Key_Return)
    assert received.args[0].text == "first line\nsecond line"
    assert edit.toPlainText() == "" and edit.height() == one_line
    assert "first line\nsecond line" in alice.chat_page.conversation.view.toPlainText()


class LinkRecorder(QObject):
    """Stands in for the web browser: QDesktopServices hands it the URLs it would open."""

    def __init__(self):
        super().__init__()
        self.opened = []

    @pyqtSlot(QUrl)
    def open(self, url):
        self.opened.append(url.toString())


def test_links_open_with_the_desktop_and_emoji_render_in_colour(qtbot, logged_in_window):
    alice, bob = logged_in_window("alice"), logged_in_window("bob")
    join_general(qtbot, alice)
    join_general(qtbot, bob)
    with qtbot.waitSignal(alice.model.messageReceived, timeout=PATIENCE):
        send(qtbot, bob, "notes at https://example.org/release?v=2. party \U0001F389\U0001F389")
    view = alice.chat_page.conversation.view

    found = view.document().find("https://example.org/release?v=2")
    assert found.hasSelection()
    inside = QTextCursor(view.document())
    inside.setPosition(found.selectionStart() + 8)
    point = view.cursorRect(inside).center() + QPoint(2, 0)
    assert view.anchorAt(point) == "https://example.org/release?v=2", "the full stop is not in it"
    recorder = LinkRecorder()
    QDesktopServices.setUrlHandler("https", recorder, "open")
    try:
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=point)
    finally:
        QDesktopServices.unsetUrlHandler("https")
    assert recorder.opened == ["https://example.org/release?v=2"]

    emoji = view.document().find("\U0001F389\U0001F389")
    start, end = QTextCursor(emoji), QTextCursor(emoji)
    start.setPosition(emoji.selectionStart())
    end.setPosition(emoji.selectionEnd())
    glyphs = view.cursorRect(start).united(view.cursorRect(end))
    colours = pixels(view.viewport().grab().toImage(), glyphs)
    assert sum(c.hsvSaturation() > 120 and c.value() > 120 for c in colours) > 20, (
        "the party poppers are drawn in colour (an emoji font is installed), not as empty boxes")


def test_me_is_sent_as_an_action_and_drawn_as_one(qtbot, logged_in_window):
    alice, bob = logged_in_window("alice"), logged_in_window("bob")
    join_general(qtbot, alice)
    join_general(qtbot, bob)
    with qtbot.waitSignal(alice.model.messageReceived, timeout=PATIENCE) as received:
        send(qtbot, bob, "/me waves at everyone")
    message = received.args[0]
    assert message.text == "* bob waves at everyone", "what every client can show"
    assert message.action == "waves at everyone"
    assert "* bob waves at everyone" in alice.chat_page.conversation.view.toPlainText()

    with qtbot.waitSignal(bob.model.messageReceived, timeout=PATIENCE) as forged:
        send(qtbot, alice, "* bob says alice is great")
    assert forged.args[0].action is None, "only bob's own message can be bob's action"

    send(qtbot, bob, "/me")
    assert "after /me" in bob.chat_page.conversation.composer.error.text()


def test_help_explains_the_commands_in_plain_words(qtbot, logged_in_window):
    bob = logged_in_window("bob")
    with qtbot.waitSignal(bob.model.commandResult, timeout=PATIENCE) as shown:
        send(qtbot, bob, "/help")
    text = shown.args[0]
    assert '/me waves — say what you are doing: everyone sees "* bob waves"' in text
    assert "/leave" in text and "Shift+Enter" in text
    assert "my_requests" not in text and "Admin commands" not in text
    assert notes(bob) == [text]

    alice = logged_in_window("alice")
    with qtbot.waitSignal(alice.model.commandResult, timeout=PATIENCE) as shown:
        send(qtbot, alice, "/help")
    admin_text = shown.args[0]
    assert "Admin commands:" in admin_text
    assert "/kick NAME" in admin_text and "/ban NAME" in admin_text
    assert "/help — show this list" in admin_text and "help - " not in admin_text


def test_notifications_for_private_messages_and_mentions_in_the_background(
        qtbot, logged_in_window):
    alice, bob = logged_in_window("alice"), logged_in_window("bob")
    join_general(qtbot, alice)
    join_general(qtbot, bob)
    bob.activateWindow()  # alice's window is now in the background
    qtbot.waitUntil(lambda: bob.isActiveWindow() and not alice.isActiveWindow(), timeout=PATIENCE)
    notifier = alice.notifier

    with qtbot.waitSignal(notifier.notified, timeout=PATIENCE) as mention:
        send(qtbot, bob, "hey @Alice, look at this")
    assert mention.args == ["bob in #general", "hey @Alice, look at this", GENERAL]

    with qtbot.assertNotEmitted(notifier.notified, wait=300):
        with qtbot.waitSignal(alice.model.messageReceived, timeout=PATIENCE):
            send(qtbot, bob, "nothing for @alicea or alice@example.org")

    bob.chat_page.open(Conversation.private("alice"))
    with qtbot.waitSignal(notifier.notified, timeout=PATIENCE) as private:
        send(qtbot, bob, "a word in private")
    assert private.args == ["bob", "a word in private", Conversation.private("bob")]
    with qtbot.waitSignal(alice.model.historyLoaded, timeout=PATIENCE):
        notifier.clicked.emit(private.args[2])  # what the tray's messageClicked leads to
    assert alice.model.current == Conversation.private("bob")
    assert shown_texts(alice) == ["a word in private"]
    bob.activateWindow()
    qtbot.waitUntil(lambda: not alice.isActiveWindow(), timeout=PATIENCE)

    alice.chat_page.notifications_action.trigger()  # Settings ▸ untick notifications
    assert alice.settings.value(NOTIFICATIONS_KEY, type=bool) is False
    with qtbot.assertNotEmitted(notifier.notified, wait=300):
        with qtbot.waitSignal(alice.model.messageReceived, timeout=PATIENCE):
            send(qtbot, bob, "another word")

    alice.chat_page.notifications_action.trigger()
    alice.activateWindow()
    qtbot.waitUntil(alice.isActiveWindow, timeout=PATIENCE)
    with qtbot.assertNotEmitted(notifier.notified, wait=300):
        with qtbot.waitSignal(alice.model.messageReceived, timeout=PATIENCE):
            send(qtbot, bob, "seen at once: no notification")
