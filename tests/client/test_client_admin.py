"""Admin features through the real windows: join requests decided live, kick and ban dialogs."""

from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QMessageBox

from conftest import PATIENCE
from qtclient.entities import Conversation
from qtclient.widgets.dialogs import ReasonDialog
from test_client_gui import click_sidebar, join_general

SECRET = Conversation.channel("secret")


def run_command(qtbot, window, command):
    with qtbot.waitSignal(window.model.commandResult, timeout=PATIENCE) as result:
        window.model.run_command(command)
    return result.args[0]


def test_join_request_is_accepted_live_through_the_admin_panel(qtbot, logged_in_window):
    alice = logged_in_window("alice")
    run_command(qtbot, alice, "create secret private")
    bob = logged_in_window("bob")
    assert bob.chat_page.people.indexOf(bob.chat_page.people.admin) < 0, "no admin panel for bob"
    assert alice.chat_page.people.indexOf(alice.chat_page.people.admin) >= 0

    click_sidebar(qtbot, bob, ("request", "secret"))
    dialog = bob.chat_page.join_dialog
    assert dialog is not None and dialog.isVisible()
    assert dialog.request_button.isVisible() and not dialog.open_button.isVisible()
    with qtbot.waitSignal(alice.model.joinRequestsChanged, timeout=PATIENCE):
        qtbot.mouseClick(dialog.request_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.status == "pending", timeout=PATIENCE)
    assert "Waiting for an admin" in dialog.status_label.text()

    panel = alice.chat_page.people.admin
    (row,) = panel.request_rows()
    assert row.request.user == "bob" and row.request.channel == "secret"
    assert alice.chat_page.people.tabText(alice.chat_page.people.indexOf(panel)) == "Requests (1)"
    with qtbot.waitSignal(bob.model.requestDecided, timeout=PATIENCE):
        qtbot.mouseClick(row.accept, Qt.MouseButton.LeftButton)
    assert dialog.status == "accepted"
    assert "accepted by alice" in dialog.status_label.text()
    assert dialog.open_button.isVisible() and not dialog.request_button.isVisible()
    qtbot.waitUntil(lambda: panel.request_rows() == [], timeout=PATIENCE)
    assert panel.caption.text() == "NO PENDING REQUESTS"

    qtbot.waitUntil(lambda: bob.chat_page.sidebar.item_for(("open", SECRET)) is not None,
                    timeout=PATIENCE)
    with qtbot.waitSignal(bob.model.historyLoaded, timeout=PATIENCE,
                          check_params_cb=lambda conversation: conversation == SECRET):
        qtbot.mouseClick(dialog.open_button, Qt.MouseButton.LeftButton)
    header = bob.chat_page.conversation
    assert header.title.text() == "secret" and header.symbol_kind == "lock", "a lock, not '#'"
    assert header.symbol.isVisible()


def test_a_rejected_request_says_so_and_can_be_asked_again(qtbot, logged_in_window):
    alice = logged_in_window("alice")
    run_command(qtbot, alice, "create secret private")
    bob = logged_in_window("bob")
    dialog = bob.chat_page.show_join_dialog("secret")
    with qtbot.waitSignal(alice.model.joinRequestsChanged, timeout=PATIENCE):
        dialog.request_button.click()
    (row,) = alice.chat_page.people.admin.request_rows()
    with qtbot.waitSignal(bob.model.requestDecided, timeout=PATIENCE):
        qtbot.mouseClick(row.reject, Qt.MouseButton.LeftButton)
    assert "rejected by alice" in dialog.status_label.text()
    assert dialog.request_button.text() == "Ask again" and dialog.request_button.isVisible()


def kick_or_ban(qtbot, admin, user, action, reason, duration=None):
    """Right-click action on ``user`` in the admin's member list, then fill the reason dialog."""
    qtbot.waitUntil(lambda: user in admin.chat_page.people.members.looking(), timeout=PATIENCE)
    actions = dict(admin.chat_page.people.members.context_actions(user))
    actions[f"{action}…"]()
    dialog = admin.chat_page.findChild(ReasonDialog)
    assert dialog is not None and dialog.isVisible()
    dialog.reason.setText(reason)
    if duration is not None:
        dialog.duration.setCurrentIndex(dialog.duration.findText(duration))
    qtbot.mouseClick(dialog.confirm, Qt.MouseButton.LeftButton)


def session_ended_box(window):
    return window.findChild(QMessageBox, "sessionEnded")


def test_kicked_user_sees_a_dialog_with_the_reason_and_the_login_page(qtbot, logged_in_window):
    alice, bob = logged_in_window("alice"), logged_in_window("bob")
    join_general(qtbot, alice)
    join_general(qtbot, bob)
    assert [label for label, _ in bob.chat_page.people.members.context_actions("alice")] == [
        "Send a private message"], "no kick or ban for non-admins"

    with qtbot.waitSignal(bob.model.kicked, timeout=PATIENCE):
        kick_or_ban(qtbot, alice, "bob", "Kick", "calm down")
    box = session_ended_box(bob)
    assert box is not None and box.isVisible()
    assert box.windowTitle() == "You were kicked"
    assert "calm down" in box.text()
    assert bob.pages.currentWidget() is bob.login_page
    assert bob.model.state != "reconnecting", "a kicked client does not reconnect by itself"
    qtbot.waitUntil(lambda: "bob" not in alice.chat_page.people.members.looking(),
                    timeout=PATIENCE)


def test_banned_user_sees_the_reason_and_cannot_log_in_again(qtbot, logged_in_window):
    alice, bob = logged_in_window("alice"), logged_in_window("bob")
    join_general(qtbot, alice)
    join_general(qtbot, bob)
    with qtbot.waitSignal(bob.model.banned, timeout=PATIENCE) as banned:
        kick_or_ban(qtbot, alice, "bob", "Ban", "spamming", duration="1 day")
    assert "spamming" in banned.args[0]
    box = session_ended_box(bob)
    assert box.windowTitle() == "You are banned" and "spamming" in box.text()
    assert bob.pages.currentWidget() is bob.login_page

    bob.login_page.password.setText("correct horse battery")
    with qtbot.waitSignal(bob.model.loginFailed, timeout=PATIENCE) as refused:
        bob.login_page.submit.click()
    assert "spamming" in refused.args[0] or "banned" in refused.args[0].lower()
    assert bob.login_page.error.isVisible()


def test_requests_made_while_the_admin_was_away_are_listed_at_login(
        qtbot, logged_in_window, make_model, login, accounts):
    accounts("alice")
    creator = login(make_model(), "alice")
    with qtbot.waitSignal(creator.commandResult, timeout=PATIENCE):
        creator.run_command("create secret private")
    creator.close()
    bob = logged_in_window("bob")
    dialog = bob.chat_page.show_join_dialog("secret")
    dialog.request_button.click()
    qtbot.waitUntil(lambda: dialog.status == "pending", timeout=PATIENCE)

    alice = logged_in_window("alice")
    panel = alice.chat_page.people.admin
    qtbot.waitUntil(lambda: len(panel.request_rows()) == 1, timeout=PATIENCE)
    assert panel.request_rows()[0].request.user == "bob"
    assert panel.caption.text() == "PENDING REQUESTS — 1"


def test_a_member_removed_by_an_admin_is_told_and_loses_the_channel(qtbot, logged_in_window):
    alice = logged_in_window("alice")
    run_command(qtbot, alice, "create lobby")
    bob = logged_in_window("bob")
    lobby = Conversation.channel("lobby")
    qtbot.waitUntil(lambda: bob.chat_page.sidebar.item_for(("join", "lobby")) is not None,
                    timeout=PATIENCE)
    with qtbot.waitSignal(bob.model.historyLoaded, timeout=PATIENCE,
                          check_params_cb=lambda conversation: conversation == lobby):
        click_sidebar(qtbot, bob, ("join", "lobby"))
    assert bob.chat_page.sidebar.item_for(("open", lobby)) is not None

    with qtbot.waitSignal(bob.model.removedFromChannel, timeout=PATIENCE) as removed:
        run_command(qtbot, alice, "remove bob lobby")
    assert removed.args == ["lobby", "alice", "removed"]
    qtbot.waitUntil(lambda: bob.chat_page.sidebar.item_for(("open", lobby)) is None,
                    timeout=PATIENCE)
    assert "alice removed you from #lobby." in bob.chat_page.conversation.view.notes


def test_a_permanent_ban_whose_reason_starts_like_a_duration_stays_permanent(
        qtbot, logged_in_window, chat_server):
    """Regression: the dialog built 'ban bob 3d of spam', which the server read as 3 days."""
    alice, bob = logged_in_window("alice"), logged_in_window("bob")
    join_general(qtbot, alice)
    join_general(qtbot, bob)
    with qtbot.waitSignal(bob.model.banned, timeout=PATIENCE) as banned:
        kick_or_ban(qtbot, alice, "bob", "Ban", "3d of spam", duration="Permanently")
    assert banned.args[0] == "You are banned permanently. Reason: 3d of spam."
    ban = chat_server.moderation.ban_list.name_ban("bob")
    assert ban.expires_at is None and ban.reason == "3d of spam"


def test_a_kick_reason_is_sent_as_a_field(qtbot, logged_in_window, chat_server):
    alice, bob = logged_in_window("alice"), logged_in_window("bob")
    join_general(qtbot, alice)
    join_general(qtbot, bob)
    with qtbot.waitSignal(bob.model.kicked, timeout=PATIENCE) as kicked:
        kick_or_ban(qtbot, alice, "bob", "Kick", "2h  of  noise")
    assert kicked.args[0] == "You were kicked by alice: 2h  of  noise You may log in again."
