"""Telling the user about a message for them while the window is in the background."""

from PyQt6.QtCore import QObject, pyqtSignal
from PyQt6.QtWidgets import QApplication, QSystemTrayIcon

from .style import app_icon

SHOWN_FOR_MS = 8000
PREVIEW_LENGTH = 200


class Notifier(QObject):
    """A desktop notification (through the system tray, where there is one) and the
    taskbar alert (``QApplication.alert``: a blinking entry, a bouncing dock icon).

    ``notified`` reports every notification given, and ``clicked`` the conversation
    of the one the user clicked.
    """

    notified = pyqtSignal(str, str, object)  # title, text, Conversation
    clicked = pyqtSignal(object)  # Conversation

    def __init__(self, window):
        super().__init__(window)
        self.tray = None
        self._last = None
        if QSystemTrayIcon.isSystemTrayAvailable():
            self.tray = QSystemTrayIcon(app_icon(), window)
            self.tray.setToolTip("chatd")
            self.tray.messageClicked.connect(lambda: self._last and self.clicked.emit(self._last))
            self.tray.show()

    def notify(self, message):
        """Announce ``message`` (a ChatMessage for me) outside the window."""
        conversation = message.conversation
        title = (f"{message.sender} in #{conversation.name}" if conversation.is_channel
                 else message.sender)
        text = message.text if len(message.text) <= PREVIEW_LENGTH else (
            message.text[:PREVIEW_LENGTH - 1] + "…")
        self._last = conversation
        if self.tray is not None and self.tray.supportsMessages():
            self.tray.showMessage(title, text, QSystemTrayIcon.MessageIcon.Information, SHOWN_FOR_MS)
        QApplication.alert(self.parent())
        self.notified.emit(title, text, conversation)
