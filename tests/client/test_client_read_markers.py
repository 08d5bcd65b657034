"""Unread badges and direct conversations come from the server's read markers: right on
a machine never used before, after being signed out, and after opening a conversation."""

from support import login as protocol_login, wait

from conftest import PATIENCE
from qtclient.entities import Conversation
from qtclient.widgets.sidebar import UNREAD_ROLE
from test_client_gui import GENERAL, click_sidebar, shown_texts

WITH_CAROL = Conversation.private("carol")
RANDOM = Conversation.channel("random")


def badge(window, conversation):
    item = window.chat_page.sidebar.item_for(("open", conversation))
    assert item is not None, f"no sidebar row for {conversation}"
    return item.data(0, UNREAD_ROLE)


def test_badges_and_direct_rows_come_from_the_server_and_opening_marks_read(
        qtbot, make_window, accounts, chat_server):
    from conftest import fill_login
    accounts("alice", "bob")
    alice = wait(protocol_login(chat_server, "alice", register_first=False))    # an admin
    assert wait(alice.request({"create_channel": "random"}))["ok"]
    bob = wait(protocol_login(chat_server, "bob", register_first=False))
    for channel in ("general", "random"):
        wait(bob.request({"join": channel}))
    bob.transport.loseConnection()
    wait(bob.closed)
    carol = wait(protocol_login(chat_server, "carol"))
    wait(carol.request({"join": "random"}))
    for text in ("while you were out", "still out?"):
        wait(carol.request({"channel_message": text, "channel": "random"}))
        wait(carol.request({"private_message": text, "other_user": "bob"}))

    def signed_in(settings_name):
        window = make_window(settings_name)
        fill_login(window, "bob")
        with qtbot.waitSignal(window.model.conversationsListed, timeout=PATIENCE):
            window.login_page.submit.click()
        return window

    first = signed_in("first-machine")
    assert first.chat_page.sidebar.direct_users() == ["carol"]   # never seen on this machine
    assert first.model.current == GENERAL     # what the client opens first
    assert badge(first, RANDOM) == 2 and badge(first, WITH_CAROL) == 2

    with qtbot.waitSignal(first.model.historyLoaded, timeout=PATIENCE):
        click_sidebar(qtbot, first, ("open", WITH_CAROL))
    assert shown_texts(first) == ["while you were out", "still out?"]
    assert badge(first, WITH_CAROL) == 0
    wait(first.model.refresh_conversations())   # answered after the mark_read sent before it
    first.model.close()

    second = signed_in("second-machine")
    assert second.chat_page.sidebar.direct_users() == ["carol"]
    assert badge(second, WITH_CAROL) == 0       # read on the first machine
    assert badge(second, RANDOM) == 2           # not opened anywhere yet
    wait(carol.request({"private_message": "one more", "other_user": "bob"}))
    qtbot.waitUntil(lambda: badge(second, WITH_CAROL) == 1, timeout=PATIENCE)

    with qtbot.waitSignal(second.model.historyLoaded, timeout=PATIENCE):
        click_sidebar(qtbot, second, ("open", RANDOM))
    with qtbot.waitSignal(second.model.historyLoaded, timeout=PATIENCE):
        click_sidebar(qtbot, second, ("open", GENERAL))
    wait(second.model.refresh_conversations())
    assert badge(second, RANDOM) == 0 and badge(second, WITH_CAROL) == 1
