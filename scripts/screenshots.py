"""Regenerate the client screenshots in docs/img/ from the real app and a real chatd.

Starts a chatd (SQLite in a temporary directory) inside this process, fills it
with demo data through the real protocol (users, channels, a busy #general, a
private #ops channel with a pending join request), then opens the real
``ChatWindow`` and saves:

    docs/img/login.png         the login page
    docs/img/main.png          alice (admin) in the busy #general, with every member
    docs/img/edits.png         #design: a message edited, one deleted, someone typing
    docs/img/search.png        a search's results, one opened and highlighted in #general
    docs/img/requests.png      alice's Requests tab: pending join requests to accept or reject
    docs/img/join-request.png  erin asking to join the private #ops channel
    docs/img/outbox.png        alice's private conversation: a message refused, one sending…

Run it under a virtual X server so it looks like a desktop, not the offscreen plugin:

    apt-get install -y xvfb
    xvfb-run -s "-screen 0 1400x900x24" python scripts/screenshots.py

(``QT_QPA_PLATFORM=offscreen python scripts/screenshots.py`` works too, with
Qt's built-in fonts.)
"""

import gc
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_API", "pyqt6")

from PyQt6.QtCore import QPoint, QSettings  # noqa: E402
from PyQt6.QtGui import QColor, QPainter  # noqa: E402
from PyQt6.QtWidgets import QApplication  # noqa: E402

APP = QApplication(sys.argv[:1])
APP.setStyle("Fusion")
from qtclient.qtreactor import install  # noqa: E402

install()
from twisted.internet import defer, reactor, task  # noqa: E402
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol  # noqa: E402

from chatd.server import ChatServer, ServerConfig  # noqa: E402
from qtclient.entities import Conversation  # noqa: E402
from qtclient.model import ChatModel  # noqa: E402
from qtclient.protocol import ChatProtocol  # noqa: E402
from qtclient.widgets.window import ChatWindow  # noqa: E402

OUTPUT = ROOT / "docs" / "img"
PASSWORD = "demo password 1"
USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
CHANNELS = [("general", False), ("random", False), ("design", False), ("release", False),
            ("ops", True), ("security-review", True)]
GENERAL = [
    ("bob", "Morning all! Coffee machine on the 3rd floor is fixed"),
    ("carol", "Finally. Did anyone look at the flaky login test from yesterday?"),
    ("dave", "I did — it was waiting 5 s for a signal on a slow CI runner."),
    ("dave", "Now it waits for the right conversation's history, with a generous bound."),
    ("alice", "Nice catch. Can you link the PR in #release?"),
    ("dave", "Done."),
    ("grace", "Quick poll: should the desktop client remember the last channel?"),
    ("bob", "Yes please, I always land in #general otherwise"),
    ("carol", "+1"),
    ("alice", "It already does, per user. Log out and back in to try it."),
    ("grace", "Oh, so it does. Thanks!"),
    ("erin", "Heads-up: I'm moving the staging database at 14:00.\nExpect a 2 minute blip \U0001F64F"),
    ("bob", "The client will reconnect on its own, right?"),
    ("erin", "It should: backoff from 1 s up to 30 s, then it logs in again and fetches what it missed."),
    ("carol", "Love that. No more refreshing."),
    ("frank", "@alice can you give me access to #ops? I'm on call next week."),
    ("alice", "Request it from the sidebar (the lock icon), I'll accept it."),
    ("frank", "Sent, thanks!"),
    ("grace", "Release notes draft: https://example.org/chatd/release-notes \u2014 "
              "comments welcome \U0001F389"),
    ("dave", "Reading it now. The TLS section could use an example with --ca-file."),
    ("grace", "Good point, adding one."),
    ("bob", "* bob goes to refill the coffee \u2615"),  # what "/me goes to refill..." sends
    ("bob", "Lunch at 12:30? The Thai place again?"),
    ("carol", "Count me in."),
    ("alice", "Same. Let's ship the release candidate first, then food."),
]
RANDOM = [("bob", "Anyone seen my blue mug?"), ("carol", "Kitchen, second shelf."),
          ("grace", "Friday quiz is on!")]
RELEASE = [("alice", "Release candidate 0.9 is tagged. Release notes are in the wiki."),
           ("dave", "The release notes still mention the old --db option; I'll fix it."),
           ("grace", "Changelog and release notes are final for 0.9.")]


@defer.inlineCallbacks
def connect(port):
    protocol = ChatProtocol(_Ignore())
    yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), protocol)
    return protocol


class _Ignore:
    """Receiver for the demo users' connections: they do not read what arrives."""

    def connection_made(self, protocol):
        pass

    def server_line(self, line):
        pass

    def connection_lost(self, protocol, reason):
        pass


@defer.inlineCallbacks
def populate(port):
    """Demo accounts, channels and conversations; returns logged-in connections by name."""
    sessions = {}
    for name in USERS:
        client = yield connect(port)
        yield client.request("register", name, email=f"{name}@example.org", password=PASSWORD)
        yield client.request("user:pwd", f"{name}:{PASSWORD}")
        sessions[name] = client
    alice = sessions["alice"]
    existing = {c["name"] for c in (yield alice.request("list_channels"))["channels"]}
    for channel, private in CHANNELS:
        if channel not in existing:
            yield alice.request("command", f"create {channel}{' private' if private else ''}")
    for name, client in sessions.items():
        for channel in ("general", "random", "design"):
            yield client.request("join", channel)
    yield sessions["frank"].request("join", "ops")  # stays pending: the admin panel shows it
    yield sessions["dave"].request("join", "security-review")
    for name, text in GENERAL:
        yield sessions[name].request("channel_message", text, channel="general")
    for name in ("dave", "grace"):
        yield sessions[name].request("join", "release")
    for name, text in RELEASE:
        yield sessions[name].request("channel_message", text, channel="release")
    yield sessions["dave"].request("private_message", "Could you proofread the release notes "
                                   "before lunch?", other_user="alice")
    return sessions


def look_at_general(sessions, away=()):
    """Demo users looking at #general, some of them idle (away), as the member list shows."""
    for name in ("bob", "carol", "dave", "erin", "grace"):
        status = "away" if name in away else "online"
        sessions[name].send({"presence": status, "channel": "general"})


def make_window(address, name, directory):
    settings = QSettings(str(directory / f"{name}.ini"), QSettings.Format.IniFormat)
    settings.setValue("server/address", address)
    settings.setValue("server/name", name)
    settings.setValue(f"last/{name}", "general")
    window = ChatWindow(ChatModel(reactor, data_dir=str(directory / "data")), settings)
    window.resize(1240, 780)
    window.move(0, 0)
    window.show()
    return window


@defer.inlineCallbacks
def settle(seconds=0.6):
    """Let the event loop deliver what is in flight and repaint."""
    yield task.deferLater(reactor, seconds, lambda: None)
    APP.processEvents()


@defer.inlineCallbacks
def wait_for(signal):
    deferred = defer.Deferred()

    def fired(*args):
        signal.disconnect(fired)
        deferred.callback(args)
    signal.connect(fired)
    result = yield deferred
    return result


def save(pixmap, name):
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / name
    pixmap.save(str(path))
    print(f"wrote {path.relative_to(ROOT)} ({pixmap.width()}x{pixmap.height()})")


def dialog_over(window, dialog):
    """The window dimmed, with the dialog drawn in its middle, as a user sees a modal dialog."""
    shot = window.grab()
    painter = QPainter(shot)
    painter.fillRect(shot.rect(), QColor(17, 24, 39, 90))
    box = dialog.grab()
    corner = QPoint((shot.width() - box.width()) // 2, (shot.height() - box.height()) // 3)
    painter.fillRect(corner.x() - 1, corner.y() - 1, box.width() + 2, box.height() + 2,
                     QColor("#9ca3af"))
    painter.drawPixmap(corner, box)
    painter.end()
    return shot


@defer.inlineCallbacks
def run(directory):
    server = ChatServer(ServerConfig(listen="tcp:0:interface=127.0.0.1",
                                     database=f"sqlite:{directory / 'demo.sqlite'}",
                                     admins=["alice"], bcrypt_rounds=4, presence_timeout=600))
    server.startService()
    yield server.ready
    port = server.port.getHost().port
    address = f"localhost:{port}"
    sessions = yield populate(port)
    sessions.pop("frank").transport.loseConnection()    # a member who is offline

    login = make_window(address, "alice", directory)
    login.login_page.password.setText("password")
    yield settle()
    save(login.grab(), "login.png")

    look_at_general(sessions, away=("dave", "grace"))
    login.login_page.password.setText(PASSWORD)
    login.login_page.submit.click()
    yield wait_for(login.model.historyLoaded)
    for name, text in RANDOM:  # arrive while alice reads #general: an unread badge on #random
        yield sessions[name].request("channel_message", text, channel="random")
    yield settle(1.0)
    save(login.grab(), "main.png")
    people = login.chat_page.people
    people.setCurrentWidget(people.admin)
    yield settle()
    save(login.grab(), "requests.png")
    people.setCurrentWidget(people.members)

    erin = make_window(address, "erin", directory)
    erin.login_page.password.setText(PASSWORD)
    erin.login_page.submit.click()
    yield wait_for(erin.model.historyLoaded)
    dialog = erin.chat_page.show_join_dialog("ops")
    dialog.request_button.click()
    yield wait_for(erin.model.joinStatusChanged)
    yield settle()
    save(dialog_over(erin, dialog), "join-request.png")

    yield edits_shot(login, sessions)
    yield search_shot(login)
    yield outbox_shot(login, sessions, server)

    for window in (login, erin):
        window.close()
    for client in sessions.values():
        client.transport.loseConnection()
    if server.running:
        yield server.stopService()


@defer.inlineCallbacks
def edits_shot(window, sessions):
    """#design: dave fixes a typo (edited), bob takes back a message (deleted), carol types."""
    model = window.chat_page.model
    window.chat_page.open(Conversation.channel("design"))
    yield wait_for(model.historyLoaded)
    say = {}
    for key, name, text in [
            ("mockups", "carol", "New sidebar mockups are in the shared folder, page 3 onwards."),
            ("contrast", "dave", "The 'Join a channel' heading needs more contrats"),
            ("oops", "bob", "ok pushing to prod now"),
            ("lgtm", "alice", "Looks good to me. Ship the darker heading."),
            ("sorry", "bob", "(wrong channel, sorry)")]:
        if name == "alice":     # (her window's login replaced her demo connection)
            model.send_text(text)
            yield wait_for(model.messageReceived)
        else:
            say[key] = (yield sessions[name].request("channel_message", text,
                                                     channel="design"))["id"]
    yield sessions["dave"].request("edit_message", "The 'Join a channel' heading needs more "
                                   "contrast on dark screens", id=say["contrast"])
    yield sessions["bob"].request("delete_message", say["oops"])
    sessions["carol"].send({"presence": "online", "channel": "design"})
    sessions["carol"].send({"typing": True, "channel": "design"})
    yield settle(1.0)
    save(window.grab(), "edits.png")
    sessions["carol"].send({"typing": False, "channel": "design"})


@defer.inlineCallbacks
def search_shot(window):
    """alice searches for "release notes" and opens the result in #general, highlighted."""
    page, model = window.chat_page, window.chat_page.model
    page.focus_search()
    page.sidebar.search.setText("release notes")
    page.sidebar.search.returnPressed.emit()
    _, results, _, _ = yield wait_for(model.searchResults)
    general = next(m for m in results if m.conversation == Conversation.channel("general"))
    row = next(r for r in page.people.search.result_rows() if r.message == general)
    row.setFocus()
    model.jump_to(general)
    yield wait_for(model.jumpedTo)
    yield settle(1.0)
    save(window.grab(), "search.png")
    page.sidebar.search.escaped.emit()


@defer.inlineCallbacks
def outbox_shot(window, sessions, server):
    """alice talks to bob; bob gets banned, so her next message is refused; the server
    goes away, so the one after waits in the outbox as "sending…"."""
    model = window.chat_page.model
    bob = Conversation.private("bob")
    window.chat_page.open(bob)
    yield wait_for(model.historyLoaded)
    yield sessions["bob"].request("private_message", "Can you restart the build bot?",
                                  other_user="alice")
    model.send_text("Sure, give me a minute.")
    yield settle()
    yield model.ban("bob", "1h", "demo: shows a refused message")
    model.send_text("Done, it is back up.")
    yield settle()
    window.chat_page.conversation.view.notes.clear()  # the ban's own result: not the point here
    yield server.stopService()
    yield settle()
    model.send_text("Also, the nightly job is moved to 02:00.")
    yield settle(1.0)
    save(window.grab(), "outbox.png")


def main():
    failures = []
    with tempfile.TemporaryDirectory() as directory:
        deferred = run(Path(directory))
        deferred.addErrback(lambda failure: failures.append(failure) or print(
            failure.getTraceback(), file=sys.stderr))
        deferred.addBoth(lambda _: reactor.stop())
        reactor.run()
    gc.collect()  # free the windows before exit (see qtclient/app.py)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
