"""The right pane: the channel's members (those looking first), search results, and (for
admins) pending join requests."""

import html
from datetime import datetime

from PyQt6.QtCore import QSize, Qt, pyqtSignal
from PyQt6.QtWidgets import (
    QFrame, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QMenu, QPushButton, QScrollArea,
    QTabWidget, QVBoxLayout, QWidget)

from ..model import excerpt
from .style import status_icon

USER_ROLE = Qt.ItemDataRole.UserRole
STATUS_ROLE = Qt.ItemDataRole.UserRole + 1
LOOKING_ROLE = Qt.ItemDataRole.UserRole + 2
MATCH_STYLE = "background-color:#fde68a; font-weight:600;"


class MemberList(QWidget):
    """A channel's members with online/away/offline dots, those looking at it first under
    their own heading; admins get kick/ban on right click."""

    privateMessageRequested = pyqtSignal(str)
    kickRequested = pyqtSignal(str)
    banRequested = pyqtSignal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 10, 12, 10)
        self.caption = QLabel("")
        self.caption.setObjectName("sectionTitle")
        layout.addWidget(self.caption)
        self.list = QListWidget()
        self.list.setIconSize(QSize(12, 12))  # the same dots as in the sidebar
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        layout.addWidget(self.list, 1)
        self.me = None
        self.admin_controls = False
        self.list.customContextMenuRequested.connect(self._menu)
        self.list.itemActivated.connect(
            lambda item: self._message(item.data(USER_ROLE)))

    def set_members(self, members, caption):
        """Show ``members`` in order; when some do not look at the channel, the ones
        looking (first) and the others get a heading each."""
        self.list.clear()
        here = [m for m in members if m.looking]
        headings = len(here) < len(members)
        for index, member in enumerate(members):
            if headings and index in (0, len(here)):
                self._heading(f"HERE — {len(here)}" if member.looking
                              else f"NOT HERE — {len(members) - len(here)}")
            label = f"{member.user} (you)" if member.user == self.me else member.user
            item = QListWidgetItem(status_icon(member.status), label)
            item.setData(USER_ROLE, member.user)
            item.setData(STATUS_ROLE, member.status)
            item.setData(LOOKING_ROLE, member.looking)
            where = "looking at this channel" if member.looking else "not looking at it"
            item.setToolTip(f"{member.user} is {member.status}, {where}")
            self.list.addItem(item)
        self.caption.setText(caption)

    def _heading(self, text):
        item = QListWidgetItem(text)
        item.setFlags(Qt.ItemFlag.NoItemFlags)
        font = item.font()
        font.setPointSizeF(8.5)
        font.setBold(True)
        item.setFont(font)
        item.setForeground(Qt.GlobalColor.gray)
        self.list.addItem(item)

    def _members(self):
        items = (self.list.item(i) for i in range(self.list.count()))
        return [item for item in items if item.data(USER_ROLE) is not None]

    def statuses(self):
        """User → status of every member shown."""
        return {item.data(USER_ROLE): item.data(STATUS_ROLE) for item in self._members()}

    def looking(self):
        """User → status of those shown as looking at the channel."""
        return {item.data(USER_ROLE): item.data(STATUS_ROLE) for item in self._members()
                if item.data(LOOKING_ROLE)}

    def headings(self):
        items = (self.list.item(i) for i in range(self.list.count()))
        return [item.text() for item in items if item.data(USER_ROLE) is None]

    def context_actions(self, user):
        """The actions the context menu offers for ``user``, as (label, callback)."""
        actions = []
        if user != self.me:
            actions.append(("Send a private message", lambda: self._message(user)))
            if self.admin_controls:
                actions.append(("Kick…", lambda: self.kickRequested.emit(user)))
                actions.append(("Ban…", lambda: self.banRequested.emit(user)))
        return actions

    def _message(self, user):
        if user and user != self.me:
            self.privateMessageRequested.emit(user)

    def _menu(self, position):
        item = self.list.itemAt(position)
        actions = self.context_actions(item.data(USER_ROLE)) if item else []
        if not actions:
            return
        menu = QMenu(self)
        for label, callback in actions:
            menu.addAction(label, callback)
        menu.exec(self.list.viewport().mapToGlobal(position))


class RequestRow(QFrame):
    """One pending join request with its two buttons."""

    def __init__(self, request, decide, parent=None):
        super().__init__(parent)
        self.setObjectName("requestRow")
        self.request = request
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        self.label = QLabel(f"<b>{request.user}</b> wants to join <b>#{request.channel}</b>")
        self.label.setWordWrap(True)  # long names wrap instead of widening the card past the pane
        layout.addWidget(self.label)
        buttons = QHBoxLayout()
        self.accept = QPushButton("Accept")
        self.accept.setObjectName("primary")
        self.reject = QPushButton("Reject")
        self.reject.setObjectName("danger")
        buttons.addWidget(self.accept)
        buttons.addWidget(self.reject)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        self.accept.clicked.connect(lambda: decide(request, True))
        self.reject.clicked.connect(lambda: decide(request, False))


class AdminPanel(QWidget):
    """Pending join requests, updated live, each with accept and reject."""

    decisionMade = pyqtSignal(object, bool)  # JoinRequest, accept

    def __init__(self, parent=None):
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(12, 10, 12, 10)
        self.caption = QLabel("NO PENDING REQUESTS")
        self.caption.setObjectName("sectionTitle")
        outer.addWidget(self.caption)
        self.scroll = scroll = QScrollArea()
        scroll.setObjectName("requestScroll")  # transparent in style.py; the cards keep their colours
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.rows_widget = QWidget()
        self.rows_widget.setObjectName("requestRows")
        self.rows = QVBoxLayout(self.rows_widget)
        self.rows.setContentsMargins(0, 4, 0, 0)
        self.rows.setSpacing(8)
        self.rows.addStretch(1)
        scroll.setWidget(self.rows_widget)
        outer.addWidget(scroll, 1)

    def set_requests(self, requests):
        while self.rows.count() > 1:
            self.rows.takeAt(0).widget().deleteLater()
        for request in sorted(requests, key=lambda r: r.id):
            self.rows.insertWidget(self.rows.count() - 1,
                                   RequestRow(request, self.decisionMade.emit))
        self.caption.setText(f"PENDING REQUESTS — {len(requests)}" if requests
                             else "NO PENDING REQUESTS")

    def request_rows(self):
        return [self.rows.itemAt(i).widget() for i in range(self.rows.count() - 1)]


def highlighted_html(text, spans):
    """``text`` as HTML with the ``spans`` marked."""
    parts, end = [], 0
    for start, stop in spans:
        parts.append(html.escape(text[end:start]))
        parts.append(f'<span style="{MATCH_STYLE}">{html.escape(text[start:stop])}</span>')
        end = stop
    parts.append(html.escape(text[end:]))
    return "".join(parts).replace("\n", " ")


class SearchResultRow(QFrame):
    """One message found: where, who, when, and its text with the matched words marked.
    A click (or Enter once focused) asks to jump to it."""

    def __init__(self, message, query, picked, parent=None):
        super().__init__(parent)
        self.setObjectName("resultRow")
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.message, self._picked = message, picked
        conversation = message.conversation
        place = f"#{conversation.name}" if conversation.is_channel else f"@ {conversation.name}"
        local = message.time.astimezone()
        when = local.strftime("%d %b %H:%M" if local.year == datetime.now().year
                              else "%d %b %Y %H:%M")
        shown, spans = excerpt(message.text, query)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 7, 10, 8)
        layout.setSpacing(2)
        self.where = QLabel(f'<b>{html.escape(place)}</b> · {html.escape(message.sender)} · '
                            f'<span style="color:#6b7280;">{when}</span>')
        self.where.setWordWrap(True)  # (as the text: the row never gets wider than the pane)
        self.text = QLabel(highlighted_html(shown, spans))
        self.text.setWordWrap(True)
        self.text.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.where)
        layout.addWidget(self.text)
        self.setToolTip("Show this message in its conversation")

    def mouseReleaseEvent(self, event):
        if event.button() == Qt.MouseButton.LeftButton:
            self._picked(self.message)

    def keyPressEvent(self, event):
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Space):
            self._picked(self.message)
        else:
            super().keyPressEvent(event)


class SearchPanel(QWidget):
    """The results of the last search, newest first; picking one emits ``resultPicked``."""

    resultPicked = pyqtSignal(object)  # ChatMessage
    olderRequested = pyqtSignal(str, object)  # query, the id to search below: the next page

    def __init__(self, parent=None):
        super().__init__(parent)
        self.query = ""
        self.more_before = None     # where the next page starts, while there may be one
        outer = QVBoxLayout(self)
        outer.setContentsMargins(12, 10, 12, 10)
        self.caption = QLabel("")
        self.caption.setObjectName("sectionTitle")
        self.caption.setWordWrap(True)
        outer.addWidget(self.caption)
        self.scroll = scroll = QScrollArea()
        scroll.setObjectName("requestScroll")   # (transparent, as the requests' list)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        rows_widget = QWidget()
        rows_widget.setObjectName("requestRows")
        self.rows = QVBoxLayout(rows_widget)
        self.rows.setContentsMargins(0, 4, 0, 0)
        self.rows.setSpacing(6)
        # Under the results, while the server may have older ones.
        self.older = QPushButton("Older results")
        self.older.setCursor(Qt.CursorShape.PointingHandCursor)
        self.older.clicked.connect(self._ask_older)
        self.older.hide()
        self.rows.addWidget(self.older)
        self.rows.addStretch(1)
        scroll.setWidget(rows_widget)
        outer.addWidget(scroll, 1)

    _AFTER_ROWS = 2     # the "Older results" button and the stretch

    def _clear(self):
        while self.rows.count() > self._AFTER_ROWS:
            self.rows.takeAt(0).widget().deleteLater()

    def set_results(self, query, messages, more_before=None, appended=False):
        """Show a page of results: the first (replacing what is shown) or the next;
        `more_before` is where the page after it starts (None: it is the last)."""
        if not appended:
            self._clear()
            self.query = query
        elif query != self.query:
            return      # a page of an earlier search, answered after a new one began
        self.more_before = more_before
        more = more_before is not None
        for message in messages:
            self.rows.insertWidget(self.rows.count() - self._AFTER_ROWS,
                                   SearchResultRow(message, query, self.resultPicked.emit))
        shown = len(self.result_rows())
        count = f"{shown}{'+' if more else ''} RESULT{'' if shown == 1 and not more else 'S'}" \
            if shown else "NO RESULTS"
        self.caption.setText(f"{count} FOR “{query}”")
        self.older.setVisible(more)
        self.older.setEnabled(True)

    def _ask_older(self):
        if self.more_before is not None:
            self.older.setEnabled(False)    # until the page is shown
            self.olderRequested.emit(self.query, self.more_before)

    def show_error(self, reason):
        self._clear()
        self.older.hide()
        self.caption.setText(reason)

    def result_rows(self):
        return [self.rows.itemAt(i).widget()
                for i in range(self.rows.count() - self._AFTER_ROWS)]


class PeoplePane(QTabWidget):
    """Members tab for everyone, Search once something was searched, Requests for admins."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("rightPane")
        self.setMinimumWidth(200)
        self.members = MemberList()
        self.admin = AdminPanel()
        self.search = SearchPanel()
        self.addTab(self.members, "Members")

    def show_search(self):
        """The Search tab, added after Members the first time."""
        if self.indexOf(self.search) < 0:
            self.insertTab(1, self.search, "Search")
        self.setCurrentWidget(self.search)

    def hide_search(self):
        """Close the Search tab, back to Members if it was showing."""
        index = self.indexOf(self.search)
        if index >= 0:
            if self.currentIndex() == index:
                self.setCurrentWidget(self.members)
            self.removeTab(index)

    def set_admin(self, admin):
        self.members.admin_controls = admin
        index = self.indexOf(self.admin)
        if admin and index < 0:
            self.addTab(self.admin, "Requests")
        elif not admin and index >= 0:
            self.removeTab(index)

    def set_request_count(self, count):
        index = self.indexOf(self.admin)
        if index >= 0:
            self.setTabText(index, f"Requests ({count})" if count else "Requests")
