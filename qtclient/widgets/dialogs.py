"""Dialogs: asking to join a private channel, kick and ban, picking someone to message."""

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import (
    QComboBox, QDialog, QDialogButtonBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
    QListWidget, QListWidgetItem, QPushButton, QVBoxLayout)

from .style import lock_icon, status_icon

USER_ROLE = Qt.ItemDataRole.UserRole


class JoinRequestDialog(QDialog):
    """Ask to join a private channel, then watch the request's state change live."""

    openRequested = pyqtSignal(str)

    TEXTS = {
        None: "Only members can read it. An admin has to accept your request.",
        "pending": "Request sent. Waiting for an admin to decide…",
        "accepted": "Your request was accepted{by}. You are now a member.",
        "rejected": "Your request was rejected{by}.",
    }

    def __init__(self, model, channel, status=None, parent=None):
        super().__init__(parent)
        self.model = model
        self.channel = channel
        self.setWindowTitle(f"Join #{channel}")
        self.setMinimumWidth(420)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(24, 20, 24, 18)
        layout.setSpacing(12)
        heading = QHBoxLayout()
        icon = QLabel()
        icon.setPixmap(lock_icon("#4f46e5", 28).pixmap(28, 28))
        title = QLabel(f"#{channel} is a private channel")
        title.setObjectName("conversationTitle")
        heading.addWidget(icon)
        heading.addWidget(title, 1)
        layout.addLayout(heading)
        self.status_label = QLabel()
        self.status_label.setObjectName("dialogStatus")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.close_button = QPushButton("Close")
        self.request_button = QPushButton("Request to join")
        self.request_button.setObjectName("primary")
        self.open_button = QPushButton(f"Open #{channel}")
        self.open_button.setObjectName("primary")
        for button in (self.close_button, self.request_button, self.open_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)

        self.close_button.clicked.connect(self.reject)
        self.request_button.clicked.connect(self._request)
        self.open_button.clicked.connect(self._open)
        model.joinStatusChanged.connect(self._join_status)
        model.requestDecided.connect(self._decided)
        self.set_status(status)

    def set_status(self, status, decided_by=""):
        self.status = status
        self.status_label.setText(self.TEXTS[status].format(by=f" by {decided_by}" if decided_by else ""))
        self.request_button.setVisible(status in (None, "rejected"))
        self.request_button.setText("Ask again" if status == "rejected" else "Request to join")
        self.request_button.setEnabled(True)
        self.open_button.setVisible(status == "accepted")
        (self.open_button if status == "accepted" else self.request_button).setDefault(True)

    def _request(self):
        self.request_button.setEnabled(False)
        self.model.join(self.channel)

    def _join_status(self, channel, status):
        if channel == self.channel:
            self.set_status("accepted" if status in ("joined", "member") else status)

    def _decided(self, channel, status, decided_by):
        if channel == self.channel:
            self.set_status(status, decided_by)

    def _open(self):
        self.openRequested.emit(self.channel)
        self.accept()


class ReasonDialog(QDialog):
    """Kick or ban someone: a reason, and for bans a duration."""

    DURATIONS = [("1 hour", "1h"), ("1 day", "1d"), ("1 week", "7d"), ("Permanently", "")]  # no duration: permanent

    def __init__(self, action, user, with_duration, parent=None):
        super().__init__(parent)
        self.setWindowTitle(f"{action} {user}")
        self.setMinimumWidth(380)
        layout = QFormLayout(self)
        layout.setContentsMargins(20, 18, 20, 16)
        self.duration = QComboBox()
        for label, value in self.DURATIONS:
            self.duration.addItem(label, value)
        if with_duration:
            layout.addRow("Duration", self.duration)
        self.reason = QLineEdit()
        self.reason.setPlaceholderText("Shown to them")
        layout.addRow("Reason", self.reason)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.confirm = buttons.addButton(action, QDialogButtonBox.ButtonRole.AcceptRole)
        self.confirm.setObjectName("primary")
        layout.addRow(buttons)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)


class UserPicker(QDialog):
    """Pick someone from the user directory to send a private message to."""

    def __init__(self, users, me, parent=None):
        super().__init__(parent)
        self.setWindowTitle("New direct message")
        self.setMinimumSize(340, 420)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 16, 16, 14)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Search people")
        self.list = QListWidget()
        for user in sorted(users, key=lambda u: u.user.lower()):
            if user.user != me:
                item = QListWidgetItem(status_icon(user.status), f"{user.user}   ·  {user.status}")
                item.setData(USER_ROLE, user.user)
                self.list.addItem(item)
        layout.addWidget(self.search)
        layout.addWidget(self.list, 1)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        layout.addWidget(buttons)
        self.search.textChanged.connect(self._filter)
        self.search.returnPressed.connect(self.accept)
        self.list.itemActivated.connect(lambda _: self.accept())
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self._filter("")

    def _filter(self, text):
        first = None
        for i in range(self.list.count()):
            item = self.list.item(i)
            hidden = text.lower() not in item.data(USER_ROLE).lower()
            item.setHidden(hidden)
            if not hidden and first is None:
                first = item
        self.list.setCurrentItem(first)

    def chosen(self):
        item = self.list.currentItem()
        return item.data(USER_ROLE) if item is not None and not item.isHidden() else None
