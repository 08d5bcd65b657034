"""Search and the full member list through the real windows against a real chatd."""

from PyQt6.QtCore import QPoint, Qt
from twisted.internet import defer

from chatd.searchindex import SEARCH_SCAN
from chatd.store import db_time, utcnow
from conftest import PATIENCE
from qtclient.entities import Conversation
from qtclient.model import HISTORY_PAGE, excerpt, match_spans
from qtclient.widgets.people import MATCH_STYLE
from support import login as protocol_login, wait
from test_client_gui import GENERAL, join_general

LATER = 320     # messages said after the one searched for: more than two history pages


@defer.inlineCallbacks
def say_many(clients, count, text):
    """`count` channel messages in #general, taking turns (each client's flood budget)."""
    for n in range(count):
        reply = yield clients[n % len(clients)].request(
            {"channel_message": f"{text} {n}", "channel": "general"})
        assert reply.get("ok"), reply


def search_in_general(qtbot, window, text):
    """Join #general, search for `text` from the sidebar's box; the results panel."""
    join_general(qtbot, window)
    window.chat_page.sidebar.search.setText(text)
    with qtbot.waitSignal(window.model.searchResults, timeout=PATIENCE):
        qtbot.keyClick(window.chat_page.sidebar.search, Qt.Key.Key_Return)
    return window.chat_page.people.search


def test_the_matched_words_are_found_whole_and_shown_around_the_first_one():
    assert match_spans("Release notes: the releases", "release NOTES") == [(0, 7), (8, 13)]
    shown, spans = excerpt("x " * 200 + "the release notes" + " y" * 200, "release", width=60)
    assert shown.startswith("…") and shown.endswith("…") and len(shown) <= 62
    assert [shown[a:b] for a, b in spans] == ["release"]


def test_a_search_result_opens_its_conversation_pages_back_and_highlights_the_message(
        qtbot, logged_in_window, accounts, chat_server):
    accounts("alice")
    earlier = wait(protocol_login(chat_server, "alice", register_first=False))
    wait(earlier.request({"join": "general"}))
    earlier.transport.loseConnection()
    talkers = [wait(protocol_login(chat_server, name)) for name in ("bob", "carol", "dave")]
    for client in talkers:
        wait(client.request({"join": "general"}))
    target = wait(talkers[0].request({"channel_message": "The release notes are out, read them",
                                      "channel": "general"}))["id"]
    wait(say_many(talkers, LATER, "chatter"), timeout=120)
    wait(talkers[0].request({"private_message": "release notes for you too",
                             "other_user": "alice"}))
    alice = logged_in_window("alice")       # opens #general: its latest page only
    qtbot.waitUntil(lambda: bool(alice.chat_page.conversation.view.shown), timeout=PATIENCE)
    assert target not in {m.id for m in alice.chat_page.conversation.view.shown}
    with qtbot.waitSignal(alice.model.historyLoaded, timeout=PATIENCE):
        alice.chat_page.open(Conversation.private("bob"))     # somewhere else meanwhile

    page, sidebar = alice.chat_page, alice.chat_page.sidebar
    qtbot.keyClick(page, Qt.Key.Key_K, Qt.KeyboardModifier.ControlModifier)
    assert sidebar.search.hasFocus()
    qtbot.keyClicks(sidebar.search, "release NOTES")
    with qtbot.waitSignal(alice.model.searchResults, timeout=PATIENCE):
        qtbot.keyClick(sidebar.search, Qt.Key.Key_Return)
    panel = page.people.search
    assert page.people.currentWidget() is panel
    assert panel.caption.text() == "2 RESULTS FOR “release NOTES”"
    newest, oldest = panel.result_rows()
    assert "@ bob" in newest.where.text() and "#general" in oldest.where.text()
    assert "bob" in oldest.where.text()
    assert oldest.text.text().count(MATCH_STYLE) == 2       # "release" and "notes", marked
    assert "read them" in oldest.text.text()
    assert oldest.message.id == target

    assert alice.model.has_more(GENERAL)
    with qtbot.waitSignal(alice.model.jumpedTo, timeout=PATIENCE):
        qtbot.mouseClick(oldest, Qt.MouseButton.LeftButton)
    view = page.conversation.view
    assert alice.model.current == GENERAL and page.conversation.title.text() == "general"
    ids = [m.id for m in view.shown]
    assert ids[0] <= target and ids[-1] > target + LATER - 1, "all of it, from there to now"
    assert ids == sorted(set(ids)), "pages joined without a gap or a repeat"
    assert view.highlighted == target
    top, bottom = view.highlighted_span()
    assert 0 <= top and bottom <= view.viewport().height(), (top, bottom)
    assert "#fef3c7" in view.toHtml().lower()

    viewport = panel.scroll.viewport()
    for row in panel.result_rows():
        for widget in (row, row.where, row.text):
            right = widget.mapTo(viewport, QPoint(widget.width(), 0)).x()
            assert right <= viewport.width(), f"{widget} ends at {right} in {viewport.width()}"

    qtbot.keyClick(sidebar.search, Qt.Key.Key_Escape)        # the results close
    assert page.people.indexOf(panel) < 0 and sidebar.search.text() == ""
    assert page.people.currentWidget() is page.people.members


def test_a_search_the_server_refuses_says_why_in_the_results(qtbot, logged_in_window):
    alice = logged_in_window("alice")
    join_general(qtbot, alice)
    alice.chat_page.sidebar.search.setText("to be")
    with qtbot.waitSignal(alice.model.searchFailed, timeout=PATIENCE):
        qtbot.keyClick(alice.chat_page.sidebar.search, Qt.Key.Key_Return)
    panel = alice.chat_page.people.search
    assert panel.caption.text() == "Search for at least one word of 3 letters or more."
    assert panel.result_rows() == []
    alice.chat_page.sidebar.search.setText("nothing matches this")
    with qtbot.waitSignal(alice.model.searchResults, timeout=PATIENCE):
        qtbot.keyClick(alice.chat_page.sidebar.search, Qt.Key.Key_Return)
    assert panel.caption.text() == "NO RESULTS FOR “nothing matches this”"


def test_older_results_come_a_page_at_a_time_without_a_gap_or_a_repeat(
        qtbot, logged_in_window, chat_server):
    talkers = [wait(protocol_login(chat_server, name)) for name in ("bob", "carol", "dave")]
    for client in talkers:
        wait(client.request({"join": "general"}))
    wait(say_many(talkers, HISTORY_PAGE + 10, "banana bread"), timeout=120)
    alice = logged_in_window("alice")
    panel = search_in_general(qtbot, alice, "banana")
    assert panel.caption.text() == f"{HISTORY_PAGE}+ RESULTS FOR “banana”"
    assert len(panel.result_rows()) == HISTORY_PAGE and panel.older.isVisible()
    with qtbot.waitSignal(alice.model.searchResults, timeout=PATIENCE):
        qtbot.mouseClick(panel.older, Qt.MouseButton.LeftButton)
    texts = [row.message.text for row in panel.result_rows()]
    assert texts == [f"banana bread {n}" for n in reversed(range(HISTORY_PAGE + 10))]
    ids = [row.message.id for row in panel.result_rows()]
    assert ids == sorted(set(ids), reverse=True)
    assert panel.caption.text() == f"{HISTORY_PAGE + 10} RESULTS FOR “banana”"
    assert not panel.older.isVisible()


def test_the_member_list_shows_every_member_those_looking_first(
        qtbot, logged_in_window, chat_server):
    carol = wait(protocol_login(chat_server, "carol"))      # a member, then offline
    wait(carol.request({"join": "general"}))
    carol.transport.loseConnection()
    dave = wait(protocol_login(chat_server, "dave"))        # a member, online, elsewhere
    wait(dave.request({"join": "general"}))
    bob = logged_in_window("bob")
    join_general(qtbot, bob)
    alice = logged_in_window("alice")
    join_general(qtbot, alice)
    members = alice.chat_page.people.members
    everyone = {"alice": "online", "bob": "online", "carol": "offline", "dave": "online"}
    qtbot.waitUntil(lambda: members.statuses() == everyone, timeout=PATIENCE)
    assert members.looking() == {"alice": "online", "bob": "online"}
    assert members.caption.text() == "MEMBERS OF #general — 4"
    assert members.headings() == ["HERE — 2", "NOT HERE — 2"]
    rows = [members.list.item(i).text() for i in range(members.list.count())]
    assert rows == ["HERE — 2", "alice (you)", "bob", "NOT HERE — 2", "carol", "dave"]
    assert alice.chat_page.conversation.info.text() == "2 here, 2 active"

    erin = wait(protocol_login(chat_server, "erin"))        # joins and looks: listed again
    wait(erin.request({"join": "general"}))
    erin.send({"presence": "online", "channel": "general"})
    qtbot.waitUntil(lambda: "erin" in members.looking(), timeout=PATIENCE)
    alice.model.clock.advance(2.0)      # (at most one list every 2 s)
    qtbot.waitUntil(lambda: members.caption.text() == "MEMBERS OF #general — 5",
                    timeout=PATIENCE)
    wait(erin.request({"leave": "general"}))                # leaves: gone from the list
    qtbot.waitUntil(lambda: "erin" not in members.looking(), timeout=PATIENCE)
    alice.model.clock.advance(2.0)
    qtbot.waitUntil(lambda: "erin" not in members.statuses(), timeout=PATIENCE)

    bob.close()          # bob goes offline: still a member, no longer here
    qtbot.waitUntil(lambda: members.looking() == {"alice": "online"}, timeout=PATIENCE)
    assert members.statuses()["bob"] == "offline"
    assert members.headings() == ["HERE — 1", "NOT HERE — 3"]


def test_a_page_of_matches_she_may_not_read_does_not_end_the_search(
        qtbot, logged_in_window, chat_server):
    """More than one request's worth of newer matches in a channel alice is not in: the
    server answers the first request with no message and where to go on, and the
    client asks on by itself until it finds hers."""
    bob = wait(protocol_login(chat_server, "bob"))
    wait(bob.request({"join": "general"}))
    wait(bob.request({"channel_message": "a needle for alice", "channel": "general"}))
    top = wait(chat_server.store.last_message_id())
    now = db_time(utcnow())
    wait(chat_server.store.run("fill", lambda cursor: cursor.executemany(
        "INSERT INTO messages (id, sender, channel_id, body, sent_at) VALUES (?, ?, ?, ?, ?)",
        [(top + 1 + i, "bob", 999, f"needle elsewhere {i}", now)
         for i in range(SEARCH_SCAN + 100)])))
    wait(chat_server.store.execute("UPDATE message_ids SET next_id = ?",
                                   (top + SEARCH_SCAN + 200,)))
    panel = search_in_general(qtbot, logged_in_window("alice"), "needle")
    assert [row.message.text for row in panel.result_rows()] == ["a needle for alice"]
    assert panel.caption.text() == "1 RESULT FOR “needle”"
    assert not panel.older.isVisible()
