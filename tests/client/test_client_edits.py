"""Edit, delete and typing through the real windows against a real chatd."""

from PyQt6.QtCore import Qt

from conftest import PATIENCE
from test_client_gui import join_general, send, shown_texts


def shown(window):
    return window.chat_page.conversation.view.shown


def test_up_on_an_empty_composer_edits_my_last_message_in_place_for_everyone(
        qtbot, logged_in_window):
    alice, bob = logged_in_window("alice"), logged_in_window("bob")
    join_general(qtbot, alice)
    join_general(qtbot, bob)
    send(qtbot, alice, "relase notes are out")
    send(qtbot, alice, "see you")
    for window in (alice, bob):     # alice's own: acknowledged, not still "sending…"
        qtbot.waitUntil(lambda: shown_texts(window) == ["relase notes are out", "see you"],
                        timeout=PATIENCE)
    composer = alice.chat_page.conversation.composer
    qtbot.keyClick(composer.edit, Qt.Key.Key_Up)
    assert composer.edit.toPlainText() == "see you" and composer.editing_label.isVisible()
    qtbot.keyClick(composer.edit, Qt.Key.Key_Escape)      # changed my mind
    assert composer.editing is None and composer.edit.toPlainText() == ""

    first = shown(alice)[0]
    view = alice.chat_page.conversation.view
    where = view.document().find("relase")
    assert view.message_at(view.cursorRect(where).center()) == first
    (label, edit), (delete_label, _) = view.context_actions(first)
    assert (label, delete_label) == ("Edit message", "Delete message")
    edit()
    assert composer.edit.toPlainText() == "relase notes are out"
    composer.edit.setPlainText("release notes are out")
    qtbot.keyClick(composer.edit, Qt.Key.Key_Return)
    for window in (alice, bob):
        qtbot.waitUntil(lambda: shown_texts(window)[0] == "release notes are out",
                        timeout=PATIENCE)
        assert shown(window)[0].edited is not None
        assert "(edited)" in window.chat_page.conversation.view.toPlainText()
    assert composer.editing is None and composer.edit.toPlainText() == ""
    assert bob.chat_page.conversation.view.context_actions(shown(bob)[0]) == []   # not his


def test_deleting_shows_message_deleted_in_place_and_admins_may_delete_any(
        qtbot, logged_in_window):
    alice, bob = logged_in_window("alice"), logged_in_window("bob")   # alice is an admin
    join_general(qtbot, alice)
    join_general(qtbot, bob)
    send(qtbot, bob, "oops, wrong channel")
    send(qtbot, bob, "buy cheap pills")
    qtbot.waitUntil(lambda: len(shown(alice)) == len(shown(bob)) == 2, timeout=PATIENCE)
    bob_view, alice_view = (w.chat_page.conversation.view for w in (bob, alice))
    (_, _), (label, delete) = bob_view.context_actions(shown(bob)[0])
    assert label == "Delete message"
    delete()
    (label, delete_as_admin), = alice_view.context_actions(shown(alice)[1])
    assert label == "Delete message"
    delete_as_admin()
    for window in (alice, bob):
        qtbot.waitUntil(lambda: all(m.deleted for m in shown(window)), timeout=PATIENCE)
        text = window.chat_page.conversation.view.toPlainText()
        assert text.count("message deleted") == 2 and "pills" not in text
    assert bob_view.context_actions(shown(bob)[0]) == []


def test_typing_shows_under_the_conversation_until_the_message_arrives(
        qtbot, logged_in_window, chat_server):
    alice, bob = logged_in_window("alice"), logged_in_window("bob")
    join_general(qtbot, alice)
    join_general(qtbot, bob)
    qtbot.waitUntil(lambda: "bob" in alice.chat_page.people.members.looking(),
                    timeout=PATIENCE)
    typing = alice.chat_page.conversation.typing
    qtbot.keyClicks(bob.chat_page.conversation.composer.edit, "hel")
    qtbot.waitUntil(lambda: typing.text() == "bob is typing…", timeout=PATIENCE)
    qtbot.keyClicks(bob.chat_page.conversation.composer.edit, "lo")
    qtbot.keyClick(bob.chat_page.conversation.composer.edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: shown_texts(alice) == ["hello"], timeout=PATIENCE)
    assert typing.text() == ""

    bob.model.clock.advance(3.0)        # bob's own pace: a notice at most every 3 s
    chat_server.hub.sessions["bob"].typing.clear()      # and the server's, as if 3 s passed
    qtbot.keyClicks(bob.chat_page.conversation.composer.edit, "again")
    qtbot.waitUntil(lambda: typing.text() == "bob is typing…", timeout=PATIENCE)
    alice.model.clock.advance(6.0)      # no further notice for 6 s: it goes away
    assert typing.text() == ""
