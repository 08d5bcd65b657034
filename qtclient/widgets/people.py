"""The right pane: who is looking at the channel, and (for admins) pending join requests."""

from PyQt6.QtCore import QSize, Qt, pyqtSignal
from PyQt6.QtWidgets import (
    QFrame, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QMenu, QPushButton, QScrollArea,
    QTabWidget, QVBoxLayout, QWidget)

from .style import status_icon

USER_ROLE = Qt.ItemDataRole.UserRole
STATUS_ROLE = Qt.ItemDataRole.UserRole + 1


class MemberList(QWidget):
    """Members looking at the channel with online/away dots; admins get kick/ban on right click."""

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
        self.list.clear()
        for member in members:
            label = f"{member.user} (you)" if member.user == self.me else member.user
            item = QListWidgetItem(status_icon(member.status), label)
            item.setData(USER_ROLE, member.user)
            item.setData(STATUS_ROLE, member.status)
            item.setToolTip(f"{member.user} is {member.status}")
            self.list.addItem(item)
        self.caption.setText(caption)

    def statuses(self):
        """User → status, as displayed."""
        items = [self.list.item(i) for i in range(self.list.count())]
        return {item.data(USER_ROLE): item.data(STATUS_ROLE) for item in items}

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


class PeoplePane(QTabWidget):
    """Members tab for everyone, Requests tab for admins only."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("rightPane")
        self.setMinimumWidth(200)
        self.members = MemberList()
        self.admin = AdminPanel()
        self.addTab(self.members, "Members")

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
