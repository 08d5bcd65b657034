"""The real windows against a real chatd: every test here drives widgets and waits for the server."""

from datetime import datetime, timedelta, timezone

from PyQt6.QtCore import Qt
from support import login as protocol_login, start_server, stop_server, wait

from conftest import PATIENCE, fill_login
from qtclient.entities import ChatMessage, Conversation
from qtclient.widgets.conversation import MessageView
from qtclient.widgets.dialogs import UserPicker
from qtclient.widgets.sidebar import UNREAD_ROLE
from qtclient.entities import UserInfo

GENERAL = Conversation.channel("general")


def click_sidebar(qtbot, window, target):
    tree = window.chat_page.sidebar.tree
    item = window.chat_page.sidebar.item_for(target)
    assert item is not None, f"no sidebar row for {target}"
    qtbot.mouseClick(tree.viewport(), Qt.MouseButton.LeftButton,
                     pos=tree.visualItemRect(item).center())


def join_general(qtbot, window):
    """Click 'general' under 'Join a channel' and wait until its history is shown.

    Waits for general's own ``historyLoaded`` (not any conversation's), however slow the machine.
    """
    with qtbot.waitSignal(window.model.historyLoaded, timeout=PATIENCE,
                          check_params_cb=lambda conversation: conversation == GENERAL):
        click_sidebar(qtbot, window, ("join", "general"))
    assert window.model.current == GENERAL


def send(qtbot, window, text):
    composer = window.chat_page.conversation.composer
    composer.edit.setPlainText(text)
    qtbot.keyClick(composer.edit, Qt.Key.Key_Return)


def shown_texts(window):
    return [m.text for m in window.chat_page.conversation.view.shown]


def test_register_checks_as_you_type_and_puts_server_errors_next_to_the_field(
        qtbot, make_window, accounts):
    accounts("alice")
    window = make_window()
    qtbot.mouseClick(window.login_page.create_account, Qt.MouseButton.LeftButton)
    page = window.register_page
    assert window.pages.currentWidget() is page
    assert page.address.text() == window.login_page.address.text()

    qtbot.keyClicks(page.name, "1x")
    assert page.name_error.isVisible() and not page.submit.isEnabled()
    page.name.clear()
    qtbot.keyClicks(page.name, "alice")
    qtbot.keyClicks(page.email, "alice@example.org")
    qtbot.keyClicks(page.password, "password1")
    assert "most common" in page.password_error.text() and not page.submit.isEnabled()
    page.password.clear()
    qtbot.keyClicks(page.password, "Alice")
    assert page.password_error.text().startswith("A password is 8")
    page.password.clear()
    qtbot.keyClicks(page.password, "correct horse")
    qtbot.keyClicks(page.confirm, "correct hors")
    assert page.confirm_error.text() == "The passwords do not match."
    assert not page.submit.isEnabled()
    qtbot.keyClicks(page.confirm, "e")
    assert not page.confirm_error.isVisible() and page.submit.isEnabled()

    with qtbot.waitSignal(window.model.registerFailed, timeout=PATIENCE):
        qtbot.mouseClick(page.submit, Qt.MouseButton.LeftButton)
    assert "taken" in page.name_error.text() and page.name_error.isVisible()
    assert not page.email_error.isVisible()

    page.name.clear()
    qtbot.keyClicks(page.name, "carol")
    with qtbot.waitSignal(window.model.registered, timeout=PATIENCE):
        qtbot.keyClick(page.confirm, Qt.Key.Key_Return)
    assert window.pages.currentWidget() is window.login_page
    assert window.login_page.name.text() == "carol"
    assert "created" in window.login_page.notice.text()


def test_bad_login_is_shown_inline_and_a_good_one_opens_the_chat(qtbot, make_window, accounts):
    accounts("bob")
    window = make_window()
    fill_login(window, "bob", "not the password")
    with qtbot.waitSignal(window.model.loginFailed, timeout=PATIENCE):
        qtbot.keyClick(window.login_page.password, Qt.Key.Key_Return)
    assert window.pages.currentWidget() is window.login_page
    assert window.login_page.error.text() == "Wrong name or password."
    assert window.login_page.submit.isEnabled()

    fill_login(window, "bob")
    with qtbot.waitSignal(window.model.loggedIn, timeout=PATIENCE):
        qtbot.mouseClick(window.login_page.submit, Qt.MouseButton.LeftButton)
    assert window.pages.currentWidget() is window.chat_page
    assert "as bob" in window.state_label.text()
    assert window.settings.value("server/name") == "bob"


def test_unreachable_server_is_an_inline_error(qtbot, make_window):
    window = make_window()
    window.login_page.address.setText("127.0.0.1:1")
    fill_login(window, "bob")
    with qtbot.waitSignal(window.model.loginFailed, timeout=PATIENCE):
        window.login_page.submit.click()
    assert window.login_page.error.text().startswith("Could not reach the server at 127.0.0.1:1")


def test_opening_a_channel_shows_its_history_and_scrolling_up_loads_older_pages(
        qtbot, logged_in_window, chat_server):
    # Seeding 70 messages at once is more than flood control allows one connection:
    # carol's connection (made now) gets a burst that fits; bob's window keeps the default.
    default_burst, chat_server.config.flood_burst = chat_server.config.flood_burst, 100
    carol = wait(protocol_login(chat_server, "carol"))
    chat_server.config.flood_burst = default_burst
    wait(carol.request({"join": "general"}))
    for n in range(70):
        wait(carol.request({"channel_message": f"message {n}", "channel": "general"}))
    window = logged_in_window("bob")
    join_general(qtbot, window)
    view = window.chat_page.conversation.view
    assert shown_texts(window) == [f"message {n}" for n in range(20, 70)]
    assert view.verticalScrollBar().value() == view.verticalScrollBar().maximum()

    with qtbot.waitSignal(window.model.historyLoaded, timeout=PATIENCE):
        view.verticalScrollBar().setValue(0)
    assert shown_texts(window) == [f"message {n}" for n in range(70)]
    assert not window.model.has_more(GENERAL)
    assert view.verticalScrollBar().value() > 0, "the reader's place is kept when older messages land"


def test_two_clients_send_and_receive(qtbot, logged_in_window):
    alice, bob = logged_in_window("alice"), logged_in_window("bob")
    join_general(qtbot, alice)
    join_general(qtbot, bob)
    with qtbot.waitSignal(alice.model.messageReceived, timeout=PATIENCE):
        send(qtbot, bob, "hello from bob")
    assert shown_texts(alice) == ["hello from bob"]
    qtbot.waitUntil(lambda: shown_texts(bob) == ["hello from bob"], timeout=PATIENCE)
    assert bob.chat_page.conversation.composer.edit.toPlainText() == ""
    assert "You" in bob.chat_page.conversation.view.toPlainText()
    assert "You" not in alice.chat_page.conversation.view.toPlainText()

    with qtbot.waitSignal(bob.model.messageReceived, timeout=PATIENCE):
        send(qtbot, alice, "hi bob")
    assert shown_texts(bob) == ["hello from bob", "hi bob"]


def test_empty_and_too_long_messages_are_refused_next_to_the_composer(qtbot, logged_in_window):
    bob = logged_in_window("bob")
    join_general(qtbot, bob)
    composer = bob.chat_page.conversation.composer
    send(qtbot, bob, "   ")
    assert composer.error.text() == "Type a message first."
    bob.model.send_text("x" * 4001) and composer.show_error(bob.model.send_text("x" * 4001))
    assert composer.error.text() == "A message is at most 4000 characters; this one has 4001."
    composer.edit.setPlainText("x" * 4001)  # said as you type, in the same words
    assert composer.error.text() == "A message is at most 4000 characters; this one has 4001."
    composer.edit.setPlainText("x" * 4000)
    assert not composer.error.isVisible()


def test_member_list_shows_the_other_going_away_and_coming_back(qtbot, logged_in_window):
    alice, bob = logged_in_window("alice"), logged_in_window("bob")
    join_general(qtbot, alice)
    join_general(qtbot, bob)
    members = alice.chat_page.people.members
    qtbot.waitUntil(lambda: members.looking() == {"alice": "online", "bob": "online"}, timeout=PATIENCE)

    bob.model.clock.advance(55)  # heartbeats keep going, still active
    qtbot.wait(100)
    assert members.looking()["bob"] == "online"
    bob.model.clock.advance(5)  # 60 s without mouse or keyboard: the next heartbeat says away
    qtbot.waitUntil(lambda: members.looking()["bob"] == "away", timeout=PATIENCE)
    assert "0 active" not in alice.chat_page.conversation.info.text()

    qtbot.keyClick(bob.chat_page.conversation.composer.edit, Qt.Key.Key_A)
    qtbot.waitUntil(lambda: members.looking()["bob"] == "online", timeout=PATIENCE)

    bob.close()  # bob's client goes away altogether: he leaves the list
    qtbot.waitUntil(lambda: members.looking() == {"alice": "online"}, timeout=PATIENCE)


def test_unread_badge_counts_messages_elsewhere_and_clears_when_opened(
        qtbot, logged_in_window, chat_server):
    alice, bob = logged_in_window("alice"), logged_in_window("bob")
    join_general(qtbot, alice)
    join_general(qtbot, bob)
    with qtbot.waitSignal(bob.model.peerStatusChanged, timeout=PATIENCE):  # the server saw him move
        bob.chat_page.open(Conversation.private("alice"))
    send(qtbot, alice, "one")
    send(qtbot, alice, "two")
    general_row = bob.chat_page.sidebar.item_for(("open", GENERAL))
    qtbot.waitUntil(lambda: general_row.data(0, UNREAD_ROLE) == 2, timeout=PATIENCE)

    with qtbot.waitSignal(bob.model.historyLoaded, timeout=PATIENCE):
        click_sidebar(qtbot, bob, ("open", GENERAL))
    assert general_row.data(0, UNREAD_ROLE) == 0
    assert shown_texts(bob) == ["one", "two"]


def test_private_message_reaches_the_other_with_a_badge(qtbot, logged_in_window):
    alice, bob = logged_in_window("alice"), logged_in_window("bob")
    join_general(qtbot, alice)
    join_general(qtbot, bob)
    members = alice.chat_page.people.members
    qtbot.waitUntil(lambda: "bob" in members.looking(), timeout=PATIENCE)
    (label, start_private), *_ = members.context_actions("bob")
    assert label == "Send a private message"
    with qtbot.waitSignal(alice.model.historyLoaded, timeout=PATIENCE):
        start_private()
    assert alice.chat_page.conversation.title.text() == "@ bob"
    assert alice.chat_page.sidebar.direct_users() == ["bob"]

    send(qtbot, alice, "psst, bob")
    qtbot.waitUntil(lambda: bob.chat_page.sidebar.direct_users() == ["alice"], timeout=PATIENCE)
    dm_row = bob.chat_page.sidebar.item_for(("open", Conversation.private("alice")))
    assert dm_row.data(0, UNREAD_ROLE) == 1
    assert shown_texts(bob) == []  # bob still looks at general

    with qtbot.waitSignal(bob.model.historyLoaded, timeout=PATIENCE):
        click_sidebar(qtbot, bob, ("open", Conversation.private("alice")))
    assert shown_texts(bob) == ["psst, bob"]
    assert dm_row.data(0, UNREAD_ROLE) == 0
    qtbot.waitUntil(lambda: shown_texts(alice) == ["psst, bob"], timeout=PATIENCE)
    assert bob.settings.value("direct/bob") == ["alice"]


def test_user_picker_filters_the_directory_and_leaves_me_out(qtbot):
    users = [UserInfo("alice", "online"), UserInfo("bob", "away"), UserInfo("barbara", "offline")]
    picker = UserPicker(users, "alice")
    qtbot.addWidget(picker)
    assert picker.list.count() == 2
    assert picker.chosen() == "barbara"
    qtbot.keyClicks(picker.search, "bo")
    assert picker.chosen() == "bob"
    qtbot.keyClicks(picker.search, "x")
    assert picker.chosen() is None


def test_day_separators_between_days_and_consecutive_messages_grouped(qtbot):
    view = MessageView()
    qtbot.addWidget(view)
    view.me = "bob"
    day = datetime(2026, 11, 23, 12, tzinfo=timezone.utc)
    general = Conversation.channel("general")
    view.show_messages([
        ChatMessage(1, day, "alice", "first", general),
        ChatMessage(2, day + timedelta(minutes=1), "alice", "second", general),
        ChatMessage(3, day + timedelta(days=1), "bob", "next day", general),
    ])
    text = view.toPlainText()
    assert text.count("———") == 2 * 2
    assert text.count("alice") == 1, "the second message of alice is grouped under the first"
    assert "You" in text


def test_logout_returns_to_the_login_page_and_allows_logging_in_again(qtbot, logged_in_window):
    window = logged_in_window("bob")
    with qtbot.waitSignal(window.model.loggedOut, timeout=PATIENCE):
        qtbot.mouseClick(window.chat_page.logout, Qt.MouseButton.LeftButton)
    assert window.pages.currentWidget() is window.login_page
    assert window.login_page.name.text() == "bob" and window.login_page.password.text() == ""
    assert window.model.user is None
    assert window.state_label.text().startswith("Connected to")

    fill_login(window, "bob")
    with qtbot.waitSignal(window.model.loggedIn, timeout=PATIENCE):
        window.login_page.submit.click()
    assert window.pages.currentWidget() is window.chat_page


def test_reconnects_after_the_server_restarts_and_fetches_what_was_missed(
        qtbot, logged_in_window, chat_server):
    """Backoff runs on the window's fake clock: each retry happens when the test advances it."""
    window = logged_in_window("bob", reconnect_delays=(1.0, 30.0))
    model = window.model
    join_general(qtbot, window)
    states = []
    model.connectionStateChanged.connect(states.append)
    port = chat_server.address.port
    stop_server(chat_server)
    qtbot.waitUntil(lambda: model.state == "reconnecting", timeout=PATIENCE)
    assert "reconnecting" in window.state_label.text()

    failed_attempt = []
    model.connectionStateChanged.connect(failed_attempt.append)
    model.clock.advance(1.0)  # first retry: the server is still down, next one in 2 s
    qtbot.waitUntil(lambda: failed_attempt[-1:] == ["reconnecting"], timeout=PATIENCE)
    assert "connecting" in failed_attempt

    restarted = start_server(chat_server.config.database,
                             listen=f"tcp:{port}:interface=127.0.0.1",
                             admins=chat_server.config.admins, presence_timeout=600)
    try:
        carol = wait(protocol_login(restarted, "carol"))
        wait(carol.request({"join": "general"}))
        wait(carol.request({"channel_message": "while you were away", "channel": "general"}))
        attempts_so_far = len(failed_attempt)
        model.clock.advance(1.0)  # a retry starts synchronously when its time comes
        assert failed_attempt[attempts_so_far:] == [], "the second retry waits 2 s, not 1 s"
        model.clock.advance(1.0)
        qtbot.waitUntil(lambda: shown_texts(window) == ["while you were away"], timeout=PATIENCE)
        assert model.state == "online" and states[0] == "reconnecting"
        assert model.current == GENERAL
    finally:
        stop_server(restarted)
