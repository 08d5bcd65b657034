"""The left sidebar: my channels, channels to join, private channels, direct messages."""

from PyQt6.QtCore import QRect, QSize, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QFont, QPainter
from PyQt6.QtWidgets import (
    QLabel, QLineEdit, QMenu, QPushButton, QStyledItemDelegate, QTreeWidget, QTreeWidgetItem, QVBoxLayout,
    QWidget)

from ..entities import Conversation
from .style import hash_icon, lock_icon, status_icon

TARGET_ROLE = Qt.ItemDataRole.UserRole  # ("open", Conversation) or ("join", channel name)
UNREAD_ROLE = Qt.ItemDataRole.UserRole + 1


class BadgeDelegate(QStyledItemDelegate):
    """Paints the unread count as a pill at the right end of a row."""

    def paint(self, painter, option, index):
        super().paint(painter, option, index)
        count = index.data(UNREAD_ROLE) or 0
        if not count:
            return
        text = "99+" if count > 99 else str(count)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = QFont(option.font)
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 0.85)
        painter.setFont(font)
        width = max(painter.fontMetrics().horizontalAdvance(text) + 12, 20)
        height = 18
        rect = QRect(option.rect.right() - width - 8, option.rect.center().y() - height // 2 + 1,
                     width, height)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor("#ef4444"))
        painter.drawRoundedRect(rect, height / 2, height / 2)
        painter.setPen(QColor("white"))
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()

    def sizeHint(self, option, index):
        hint = super().sizeHint(option, index)
        return QSize(hint.width(), max(hint.height(), 28))


class Sidebar(QWidget):
    """Lists what the user can open; emits what they picked."""

    conversationPicked = pyqtSignal(object)  # Conversation I may read
    joinPicked = pyqtSignal(str)  # public channel I am not in
    requestPicked = pyqtSignal(str)  # private channel I am not in
    newMessageRequested = pyqtSignal()
    leaveRequested = pyqtSignal(str)  # channel I am a member of
    searchRequested = pyqtSignal(str)  # words to look for in my conversations
    searchCleared = pyqtSignal()  # Escape in the search field

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("sidebar")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground)
        self.setMinimumWidth(220)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 14, 12, 12)
        layout.setSpacing(10)
        title = QLabel("chatd")
        title.setObjectName("appName")
        layout.addWidget(title)
        self.search = SearchField()
        self.search.setPlaceholderText("Search messages  (Ctrl+K)")
        self.search.setClearButtonEnabled(True)
        layout.addWidget(self.search)
        self.tree = QTreeWidget()
        self.tree.setHeaderHidden(True)
        self.tree.setRootIsDecorated(False)
        self.tree.setIndentation(0)  # no branch area, which Fusion paints on selection
        self.tree.setItemDelegate(BadgeDelegate(self.tree))
        self.tree.setIconSize(QSize(14, 14))
        self.tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        layout.addWidget(self.tree, 1)
        self.new_message = QPushButton("New direct message…")
        layout.addWidget(self.new_message)

        self.my_channels = self._section("CHANNELS")
        self.browse = self._section("JOIN A CHANNEL")
        self.direct = self._section("DIRECT MESSAGES")
        self._statuses = {}
        self._unread = {}
        self.tree.itemClicked.connect(self._picked)
        self.tree.itemActivated.connect(self._picked)
        self.new_message.clicked.connect(self.newMessageRequested)
        self.search.returnPressed.connect(self._search)
        self.search.escaped.connect(self._clear_search)
        self.tree.customContextMenuRequested.connect(self._menu)

    def _section(self, title):
        item = QTreeWidgetItem(self.tree, [title])
        item.setFlags(Qt.ItemFlag.ItemIsEnabled)
        font = item.font(0)
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 0.8)
        item.setFont(0, font)
        item.setForeground(0, QColor("#a5b4fc"))
        item.setExpanded(True)
        return item

    def _search(self):
        if self.search.text().strip():
            self.searchRequested.emit(self.search.text().strip())

    def _clear_search(self):
        self.search.clear()
        self.searchCleared.emit()

    def reset(self):
        """Empty, for the next user to log in."""
        self.search.clear()
        for section in (self.my_channels, self.browse, self.direct):
            section.takeChildren()
        self._statuses.clear()
        self._unread.clear()

    def set_channels(self, channels):
        """Rebuild the channel sections from ``ChannelInfo`` values, keeping the selection."""
        selected = self.selected_target()
        for section in (self.my_channels, self.browse):
            section.takeChildren()
        for channel in sorted(channels, key=lambda c: c.name.lower()):
            icon = lock_icon() if channel.private else hash_icon()
            if channel.member:
                target = ("open", Conversation.channel(channel.name))
                self._add(self.my_channels, channel.name, icon, target)
            else:
                label = channel.name
                if channel.private and channel.request == "pending":
                    label += "  · requested"
                target = ("join" if not channel.private else "request", channel.name)
                self._add(self.browse, label, icon, target)
        self.browse.setHidden(self.browse.childCount() == 0)
        self.select(selected)

    def add_direct(self, user, status=None):
        """Make sure there is a direct-message row for ``user``."""
        conversation = Conversation.private(user)
        if self.item_for(("open", conversation)) is None:
            self._add(self.direct, user, status_icon(self._statuses.get(user, "offline")),
                      ("open", conversation))
            self.direct.sortChildren(0, Qt.SortOrder.AscendingOrder)
        if status is not None:
            self.set_user_status(user, status)

    def direct_users(self):
        return [self.direct.child(i).data(0, TARGET_ROLE)[1].name
                for i in range(self.direct.childCount())]

    def user_status(self, user):
        """The status the dot of ``user``'s row shows."""
        return self._statuses.get(user, "offline")

    def set_user_status(self, user, status):
        self._statuses[user] = status
        item = self.item_for(("open", Conversation.private(user)))
        if item is not None:
            item.setIcon(0, status_icon(status))

    def _add(self, section, label, icon, target):
        item = QTreeWidgetItem(section, [label])
        item.setIcon(0, icon)
        item.setData(0, TARGET_ROLE, target)
        item.setData(0, UNREAD_ROLE, self._unread.get(target[1], 0))
        return item

    def item_for(self, target):
        for section in (self.my_channels, self.browse, self.direct):
            for i in range(section.childCount()):
                if section.child(i).data(0, TARGET_ROLE) == target:
                    return section.child(i)
        return None

    def set_unread(self, conversation, count):
        self._unread[conversation] = count
        item = self.item_for(("open", conversation))
        if item is not None:
            item.setData(0, UNREAD_ROLE, count)

    def unread(self, conversation):
        return self._unread.get(conversation, 0)

    def select(self, target):
        item = self.item_for(target) if target else None
        self.tree.setCurrentItem(item) if item else self.tree.clearSelection()

    def selected_target(self):
        item = self.tree.currentItem()
        return item.data(0, TARGET_ROLE) if item is not None else None

    def context_actions(self, target):
        """What the right-click menu offers for a row, as (label, callback)."""
        kind, value = target
        if kind == "open" and value.is_channel:
            return [(f"Leave #{value.name}", lambda: self.leaveRequested.emit(value.name))]
        return []

    def _menu(self, position):
        item = self.tree.itemAt(position)
        target = item.data(0, TARGET_ROLE) if item is not None else None
        actions = self.context_actions(target) if target else []
        if not actions:
            return
        menu = QMenu(self)
        for label, callback in actions:
            menu.addAction(label, callback)
        menu.exec(self.tree.viewport().mapToGlobal(position))

    def _picked(self, item):
        target = item.data(0, TARGET_ROLE)
        if target is None:
            return
        kind, value = target
        if kind == "open":
            self.conversationPicked.emit(value)
        elif kind == "join":
            self.joinPicked.emit(value)
        else:
            self.requestPicked.emit(value)


class SearchField(QLineEdit):
    """The search box: Enter searches, Escape clears it and closes the results."""

    escaped = pyqtSignal()

    def keyPressEvent(self, event):
        if event.key() == Qt.Key.Key_Escape:
            self.escaped.emit()
            return
        super().keyPressEvent(event)
