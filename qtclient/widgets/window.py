"""The main window: login, register and chat pages in a stack, and the status bar."""

from PyQt6.QtCore import QSettings
from PyQt6.QtWidgets import QApplication, QLabel, QMainWindow, QMessageBox, QStackedWidget

from ..entities import Conversation
from .chat import ChatPage
from .forms import LoginPage, RegisterPage
from .notify import Notifier
from .style import STATE_COLOURS, STYLE_SHEET, app_icon, dot_icon

DEFAULT_ADDRESS = "localhost:7878"
NOTIFICATIONS_KEY = "notifications/enabled"
STATE_TEXTS = {
    "disconnected": "Not connected",
    "connecting": "Connecting to {address}…",
    "connected": "Connected to {address}",
    "online": "Connected to {address} as {user}",
    "reconnecting": "Connection lost — reconnecting to {address}…",
}
ENDED_TEXTS = {
    "kicked": ("You were kicked", "An admin removed you from chatd."),
    "banned": ("You are banned", "An admin banned you from chatd."),
    "replaced": ("Signed in elsewhere", "You signed in from another place, so this session ended."),
    "abuse": ("Disconnected", "The server closed the connection."),
    "logout": ("Logged out", "The server logged you out."),
    "login": ("Could not sign in again", "The server refused the saved login."),
}


class ChatWindow(QMainWindow):
    """One window per model. ``settings`` remembers the server address, direct messages and
    whether to notify."""

    def __init__(self, model, settings=None, parent=None):
        super().__init__(parent)
        self.model = model
        self.settings = settings if settings is not None else QSettings()
        self.setWindowTitle("chatd")
        self.setWindowIcon(app_icon())
        self.setStyleSheet(STYLE_SHEET)
        self.setMinimumSize(900, 600)
        self.resize(1180, 760)
        self.pages = QStackedWidget()
        self.login_page = LoginPage()
        self.register_page = RegisterPage()
        self.chat_page = ChatPage(model)
        for page in (self.login_page, self.register_page, self.chat_page):
            self.pages.addWidget(page)
        self.setCentralWidget(self.pages)
        self.state_icon = QLabel()
        self.state_label = QLabel()
        self.statusBar().addWidget(self.state_icon)
        self.statusBar().addWidget(self.state_label, 1)
        self.outbox_label = QLabel()  # how many typed messages the server does not have yet
        self.statusBar().addPermanentWidget(self.outbox_label)
        self.statusBar().setSizeGripEnabled(False)
        self.last_ended = None  # (title, text) of the last "session ended" notice, for tests
        self.notifier = Notifier(self)

        self.login_page.set_server(self.settings.value("server/address", DEFAULT_ADDRESS))
        self.login_page.caFileChanged.connect(self._trust)
        self.login_page.set_ca_file(model.ca_file or self.settings.value("server/ca_file", ""))
        self.login_page.name.setText(self.settings.value("server/name", ""))
        self.login_page.loginRequested.connect(self._login)
        self.login_page.registerRequested.connect(self.show_register)
        self.register_page.registerRequested.connect(model.register)
        self.register_page.backRequested.connect(self.show_login)
        self.chat_page.logoutRequested.connect(model.logout)
        self.chat_page.directMessagesChanged.connect(self._remember_direct_messages)
        notifications = self.chat_page.notifications_action
        notifications.setChecked(self.settings.value(NOTIFICATIONS_KEY, True, type=bool))
        notifications.toggled.connect(lambda on: self.settings.setValue(NOTIFICATIONS_KEY, on))
        self.notifier.clicked.connect(self._notification_clicked)

        model.loggedIn.connect(self._logged_in)
        model.loginFailed.connect(self.login_page.show_error)
        model.registered.connect(self._registered)
        model.registerFailed.connect(self.register_page.show_server_error)
        model.loggedOut.connect(self.show_login)
        model.sessionEnded.connect(self._session_ended)
        model.connectionStateChanged.connect(self._show_state)
        model.outboxChanged.connect(self._show_outbox)
        model.conversationOpened.connect(self._remember_last)
        model.messageForMe.connect(self._message_for_me)
        QApplication.instance().installEventFilter(model.activity)
        self._show_state(model.state)
        self.show_login()

    def _trust(self, ca_file):
        self.model.ca_file = ca_file or None
        self.settings.setValue("server/ca_file", ca_file)

    def _login(self, address, name, password):
        self.settings.setValue("server/address", address)
        self.model.login(address, name, password)

    def show_login(self):
        self.pages.setCurrentWidget(self.login_page)
        self.login_page.reset()

    def show_register(self):
        self.register_page.reset(self.login_page.server())
        self.pages.setCurrentWidget(self.register_page)

    def _registered(self, user):
        self.login_page.set_server(self.register_page.address.text())
        self.show_login()
        self.login_page.reset(user)
        self.login_page.show_notice(f"Account '{user}' created. Sign in with your password.")

    def _logged_in(self, user, role):
        self.settings.setValue("server/name", user)
        self.chat_page.restore_direct_messages(self.settings.value(f"direct/{user}", []) or [])
        self.pages.setCurrentWidget(self.chat_page)
        self.setWindowTitle(f"chatd — {user}")
        self.model.channelsChanged.connect(self._open_first_channel)

    def _open_first_channel(self, channels):
        """Right after login, open the channel used last time (or the first one)."""
        self.model.channelsChanged.disconnect(self._open_first_channel)
        if self.model.current is not None or self.model.user is None:
            return
        mine = [c.name for c in channels if c.member]
        last = self.settings.value(f"last/{self.model.user}", "")
        if mine:
            self.model.open_conversation(Conversation.channel(last if last in mine else sorted(mine)[0]))

    def _remember_last(self, conversation):
        if conversation.is_channel and self.model.user:
            self.settings.setValue(f"last/{self.model.user}", conversation.name)

    def _remember_direct_messages(self, users):
        if self.model.user:
            self.settings.setValue(f"direct/{self.model.user}", users)

    def _message_for_me(self, message):
        """A private message or a mention: notify, unless I am looking at this window or said no."""
        if self.chat_page.notifications_action.isChecked() and not self.isActiveWindow():
            self.notifier.notify(message)

    def _notification_clicked(self, conversation):
        self.showNormal()
        self.raise_()
        self.activateWindow()
        self.chat_page.open(conversation)

    def _session_ended(self, kind, reason):
        title, text = ENDED_TEXTS.get(kind, ("Disconnected", "The session ended."))
        if reason:
            text += f"\n\nReason: {reason}"
        self.last_ended = (title, text)
        self.show_login()
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, self)
        box.setObjectName("sessionEnded")
        box.open()

    def _show_outbox(self):
        waiting = self.model.outbox.all()
        refused = sum(m.error is not None for m in waiting)
        parts = []
        if len(waiting) > refused:
            parts.append(f"{len(waiting) - refused} sending…")
        if refused:
            parts.append(f"{refused} not sent")
        self.outbox_label.setText("Outbox: " + ", ".join(parts) if parts else "")

    def _show_state(self, state):
        self.state_icon.setPixmap(dot_icon(STATE_COLOURS.get(state, "#9ca3af")).pixmap(12, 12))
        self.state_label.setText(STATE_TEXTS.get(state, state).format(
            address=self.model.server or self.settings.value("server/address", DEFAULT_ADDRESS),
            user=self.model.user or ""))

    def closeEvent(self, event):
        self.model.close()
        super().closeEvent(event)
