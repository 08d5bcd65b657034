"""The main page after login: sidebar, conversation, people; wired to the model."""

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtGui import QKeySequence, QShortcut
from PyQt6.QtWidgets import (
    QDialog, QLabel, QMenu, QPushButton, QSplitter, QVBoxLayout, QWidget)

from ..entities import Conversation
from .conversation import ConversationPane
from .dialogs import JoinRequestDialog, ReasonDialog, UserPicker
from .people import PeoplePane
from .sidebar import Sidebar
from .style import status_icon


class ChatPage(QWidget):
    """Everything the logged-in user sees. Widgets here only call the model."""

    logoutRequested = pyqtSignal()
    directMessagesChanged = pyqtSignal(list)  # users, to remember between sessions

    def __init__(self, model, parent=None):
        super().__init__(parent)
        self.model = model
        self.join_dialog = None
        self.showing = None  # the conversation whose messages the centre shows
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        self.sidebar = Sidebar()
        self.conversation = ConversationPane()
        self.people = PeoplePane()
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.setChildrenCollapsible(False)
        splitter.setHandleWidth(1)
        splitter.addWidget(self.sidebar)
        splitter.addWidget(self._centre())
        splitter.addWidget(self.people)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([240, 660, 280])
        layout.addWidget(splitter, 1)

        self.sidebar.conversationPicked.connect(self.open)
        self.sidebar.joinPicked.connect(self._join_public)
        self.sidebar.requestPicked.connect(self.show_join_dialog)
        self.sidebar.newMessageRequested.connect(self._pick_user)
        self.sidebar.leaveRequested.connect(model.leave)
        self.sidebar.searchRequested.connect(model.search)
        self.sidebar.searchCleared.connect(self.people.hide_search)
        self.people.search.resultPicked.connect(model.jump_to)
        self.people.search.olderRequested.connect(
            lambda query, before: model.search(query, before=before))
        for keys in ("Ctrl+K", "Ctrl+F"):
            QShortcut(QKeySequence(keys), self, self.focus_search)
        self.conversation.composer.sendRequested.connect(self._send)
        self.conversation.view.olderWanted.connect(model.load_older)
        self.conversation.view.retryRequested.connect(model.retry_message)
        self.conversation.view.deleteStoredRequested.connect(model.delete_stored_message)
        self.people.members.privateMessageRequested.connect(
            lambda user: self.open(Conversation.private(user)))
        self.people.members.kickRequested.connect(self._kick)
        self.people.members.banRequested.connect(self._ban)
        self.people.admin.decisionMade.connect(model.decide_request)
        self.logout.clicked.connect(self.logoutRequested)

        model.loggedIn.connect(self._logged_in)
        model.channelsChanged.connect(self.sidebar.set_channels)
        model.channelsChanged.connect(self._show_place)  # a channel's lock may arrive after it opened
        model.usersChanged.connect(self._users_changed)
        model.conversationOpened.connect(self._conversation_opened)
        model.historyLoaded.connect(self._history_loaded)
        model.messageReceived.connect(self._message_received)
        model.outboxChanged.connect(self._show_pending)
        model.membersChanged.connect(self._members_changed)
        model.searchResults.connect(self._search_results)
        model.searchFailed.connect(self._search_failed)
        model.jumpedTo.connect(self._jumped_to)
        model.peerStatusChanged.connect(self._peer_status)
        model.unreadChanged.connect(self.sidebar.set_unread)
        model.conversationsListed.connect(self._conversations_listed)
        model.messageChanged.connect(self.conversation.view.update_message)
        model.typersChanged.connect(self._typers_changed)
        composer = self.conversation.composer
        composer.edit.upOnEmpty.connect(self._edit_last)
        composer.editDone.connect(self._edit_done)
        composer.typing.connect(model.typing)
        self.conversation.view.can_delete = model.can_delete
        self.conversation.view.editRequested.connect(composer.start_editing)
        self.conversation.view.deleteRequested.connect(model.delete_message)
        model.joinStatusChanged.connect(self._join_status)
        model.leftChannel.connect(self._left_channel)
        model.joinRequestsChanged.connect(self._requests_changed)
        model.commandResult.connect(self.conversation.view.add_note)
        model.removedFromChannel.connect(self._removed_from_channel)
        model.errorOccurred.connect(self.conversation.composer.show_error)
        model.activity.activityResumed.connect(self._show_me)
        model.connectionStateChanged.connect(self._show_me)
        model.connectionStateChanged.connect(self._show_place)

    def _centre(self):
        """The conversation pane, with who I am, settings and the logout button at its top right."""
        self.me_icon = QLabel()
        self.me_label = QLabel()
        self.me_label.setObjectName("conversationInfo")
        self.settings_button = QPushButton("Settings")
        settings_menu = QMenu(self.settings_button)
        self.notifications_action = settings_menu.addAction(
            "Notify me of private messages and @mentions")
        self.notifications_action.setCheckable(True)
        self.notifications_action.setChecked(True)
        self.settings_button.setMenu(settings_menu)
        self.logout = QPushButton("Log out")
        header = self.conversation.header_layout
        header.addWidget(self.me_icon)
        header.addWidget(self.me_label)
        header.addSpacing(8)
        header.addWidget(self.settings_button)
        header.addWidget(self.logout)
        return self.conversation

    # --- model → widgets ------------------------------------------------------

    def _logged_in(self, user, role):
        self.sidebar.reset()
        self.conversation.view.me = user
        self.people.members.me = user
        self.people.set_admin(role == "admin")
        self.people.admin.set_requests([])
        self.people.set_request_count(0)
        self.people.hide_search()
        self.conversation.view.clear_all()
        self.showing = None
        self._show_place()
        self._show_me()

    def _show_me(self, *_):
        status = "offline" if self.model.state != "online" else self.model.activity.status
        self.me_icon.setPixmap(status_icon(status).pixmap(12, 12))
        role = " · admin" if self.model.is_admin else ""
        self.me_label.setText(f"{self.model.user or ''}{role}")

    def _removed_from_channel(self, channel, by, how):
        text = (f"{by} removed you from #{channel}." if how == "removed"
                else f"{by} deleted #{channel}.")
        self.conversation.view.add_note(text)

    def _users_changed(self, users):
        for user in users:
            self.sidebar.set_user_status(user.user, user.status)
        if self.model.current is not None and not self.model.current.is_channel:
            self._show_place()

    def _show_place(self, *_):
        """Header and member list of the open conversation, from what the model knows now.

        Called whenever any of it may have changed, so nothing stays blank or stale:
        after a reconnect the server's member list arrives before the conversation reopens.
        """
        conversation, pane = self.model.current, self.conversation
        connected = self.model.state == "online"
        if conversation is None:
            pane.set_title("Pick a channel")
            pane.info.setText("")
            self.people.members.set_members([], "")
        elif conversation.is_channel:
            info = self.model.channel_info(conversation.name)
            pane.set_title(conversation.name, "lock" if info is not None and info.private else "hash")
            looking = self.model.members_of(conversation.name)
            everyone = self.model.roster_of(conversation.name)
            if looking is None:
                pane.info.setText("" if connected else "not connected")
            else:
                active = sum(m.status == "online" for m in looking)
                pane.info.setText(f"{len(looking)} here, {active} active" if connected
                                  else "not connected")
            if everyone is not None:
                self.people.members.set_members(
                    everyone, f"MEMBERS OF #{conversation.name} — {len(everyone)}")
            elif looking is not None:   # (until the server has listed every member)
                self.people.members.set_members(
                    looking, f"LOOKING AT #{conversation.name} — {len(looking)}")
            else:
                self.people.members.set_members([], "")
        else:
            pane.set_title(f"@ {conversation.name}")
            pane.info.setText(self.model.status_of(conversation.name) if connected
                              else "not connected")
            self.people.members.set_members([], "PRIVATE CONVERSATION")

    def _conversation_opened(self, conversation):
        self.showing = conversation
        self.sidebar.select(("open", conversation))
        self.conversation.view.clear_all()
        self.conversation.view.show_messages(self.model.messages(conversation))
        self.conversation.composer.stop_editing()
        self._show_pending()
        self.conversation.composer.show_error("")
        self.conversation.composer.edit.setFocus()
        self.conversation.show_typers(self.model.typers(conversation))
        if not conversation.is_channel:
            self.sidebar.add_direct(conversation.name)
            self.directMessagesChanged.emit(self.sidebar.direct_users())
        self._show_place()

    def _history_loaded(self, conversation):
        if conversation == self.model.current:
            view = self.conversation.view
            view.show_messages(self.model.messages(conversation))
            if not view.fills_view() and self.model.has_more(conversation):
                self.model.load_older()

    def _message_received(self, message):
        if message.conversation == self.model.current:
            self.conversation.view.add_message(message)
        if not message.conversation.is_channel:
            self.sidebar.add_direct(message.conversation.name)
            self.directMessagesChanged.emit(self.sidebar.direct_users())

    def _typers_changed(self, conversation, users):
        if conversation == self.model.current:
            self.conversation.show_typers(users)

    def _edit_last(self):
        message = self.model.last_own_message(self.model.current) if self.model.current else None
        if message is not None:
            self.conversation.composer.start_editing(message)

    def _edit_done(self, message, text):
        error = self.model.edit_message(message, text)
        if error:
            self.conversation.composer.show_error(error)
        else:
            self.conversation.composer.sent()

    def _conversations_listed(self, conversations):
        """Every private conversation the server knows of gets its row, not only the ones
        this machine remembers."""
        for conversation in conversations:
            if not conversation.is_channel:
                self.sidebar.add_direct(conversation.name)
        self.directMessagesChanged.emit(self.sidebar.direct_users())

    def _show_pending(self):
        """The open conversation's unacknowledged messages, as the model has them now."""
        if self.showing is not None and self.showing == self.model.current:
            self.conversation.view.set_pending(self.model.pending(self.showing))

    def _members_changed(self, channel, members):
        if self.model.current == Conversation.channel(channel):
            self._show_place()

    def focus_search(self):
        self.sidebar.search.setFocus()
        self.sidebar.search.selectAll()

    def _search_results(self, query, messages, more_before, appended):
        self.people.search.set_results(query, messages, more_before, appended)
        self.people.show_search()

    def _search_failed(self, query, reason):
        self.people.search.show_error(reason)
        self.people.show_search()

    def _jumped_to(self, message):
        if message.conversation == self.showing:
            self.conversation.view.jump_to(message.id)

    def _peer_status(self, user, status):
        self.sidebar.set_user_status(user, status)
        if self.model.current == Conversation.private(user):
            self._show_place()

    def _left_channel(self, channel):
        if self.showing == Conversation.channel(channel):
            self.showing = None
            self.conversation.view.clear_all()
            self.conversation.view.add_note(
                f"You left #{channel}. Join it again from the sidebar, or pick another conversation.")
            self._show_place()

    def _join_status(self, channel, status):
        if status in ("joined", "member") and self.join_dialog is None:
            self.open(Conversation.channel(channel))

    def _requests_changed(self, requests):
        self.people.admin.set_requests(requests)
        self.people.set_request_count(len(requests))

    # --- user → model ---------------------------------------------------------

    def open(self, conversation):
        if conversation != self.model.current:
            self.model.open_conversation(conversation)

    def _join_public(self, channel):
        self.model.join(channel)

    def show_join_dialog(self, channel):
        """The join-request dialog for a private channel; returns it (not modal)."""
        info = next((c for c in self.model.channels if c.name == channel), None)
        self.join_dialog = JoinRequestDialog(self.model, channel, info.request if info else None, self)
        self.join_dialog.openRequested.connect(lambda name: self.open(Conversation.channel(name)))
        self.join_dialog.finished.connect(self._join_dialog_closed)
        self.join_dialog.show()
        return self.join_dialog

    def _join_dialog_closed(self):
        self.join_dialog.deleteLater()
        self.join_dialog = None

    def _send(self, text):
        error = self.model.send_text(text)
        if error:
            self.conversation.composer.show_error(error)
        else:
            self.conversation.composer.sent()

    def _pick_user(self):
        picker = UserPicker(self.model.users, self.model.user, self)
        if picker.exec() == QDialog.DialogCode.Accepted and picker.chosen():
            self.open(Conversation.private(picker.chosen()))

    def _kick(self, user):
        return self._ask_reason("Kick", user, False,
                                lambda dialog: self.model.kick(user, dialog.reason.text().strip()))

    def _ban(self, user):
        return self._ask_reason("Ban", user, True, lambda dialog: self.model.ban(
            user, dialog.duration.currentData(), dialog.reason.text().strip()))

    def _ask_reason(self, action, user, with_duration, act):
        """Open the kick/ban dialog (not modal, so the reactor keeps running); returns it."""
        dialog = ReasonDialog(action, user, with_duration=with_duration, parent=self)
        dialog.accepted.connect(lambda: act(dialog))
        dialog.finished.connect(dialog.deleteLater)
        dialog.open()
        return dialog

    def restore_direct_messages(self, users):
        for user in users:
            self.sidebar.add_direct(user)
