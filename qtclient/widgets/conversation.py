"""The centre: a conversation's messages with day separators, and the composer."""

import html
import math
import re
from datetime import timedelta

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtGui import QDesktopServices, QTextCursor
from PyQt6.QtWidgets import (
    QHBoxLayout, QLabel, QMenu, QPlainTextEdit, QPushButton, QTextBrowser, QVBoxLayout, QWidget)

from chatd import rules

from .style import ACCENT, hash_icon, lock_icon

PENDING_ACTIONS = ("retry", "delete")  # link schemes of a refused message's actions
HIGHLIGHT = "#fef3c7"  # the background of the message a search result jumped to
GROUP_WINDOW = timedelta(minutes=5)  # consecutive messages of one sender within this share a header
NAME_COLOURS = ["#b45309", "#047857", "#1d4ed8", "#7c3aed", "#be185d", "#0e7490", "#4d7c0f"]
# http(s) addresses and bare www. ones, up to a space; punctuation ending a sentence is not part of it.
LINK = re.compile(r"\b(?:https?://|www\.)[^\s<>\"]+?(?=[.,;:!?'\")\]]*(?:\s|$))", re.IGNORECASE)


def name_colour(name):
    return NAME_COLOURS[sum(map(ord, name)) % len(NAME_COLOURS)]


def text_html(text):
    """Message text as HTML: escaped, line breaks kept, web addresses as links."""
    parts, end = [], 0
    for link in LINK.finditer(text):
        address = link.group()
        href = address if "://" in address else f"https://{address}"
        parts.append(html.escape(text[end:link.start()]))
        parts.append(f'<a href="{html.escape(href)}" style="color:{ACCENT};">{html.escape(address)}</a>')
        end = link.end()
    parts.append(html.escape(text[end:]))
    return "".join(parts).replace("\n", "<br>")


class MessageView(QTextBrowser):
    """Renders messages as HTML; asks for older ones when scrolled to the top."""

    olderWanted = pyqtSignal()
    retryRequested = pyqtSignal(str)  # nonce of a refused message
    deleteRequested = pyqtSignal(str)  # nonce of an unsent message
    editRequested = pyqtSignal(object)  # ChatMessage of mine
    deleteStoredRequested = pyqtSignal(object)  # ChatMessage of mine, or anyone's for an admin

    def __init__(self, parent=None):
        super().__init__(parent)
        self.can_delete = lambda message: False  # set by the page: mine, or an admin's right
        self._tables = []  # per top-level table of the document: its message (None: a day line)
        self.setObjectName("conversation")
        # Links are handled in _link_clicked: web addresses go to QDesktopServices.openUrl,
        # a refused message's Retry and Delete to the model.
        self.setOpenLinks(False)
        self.anchorClicked.connect(self._link_clicked)
        self.document().setDocumentMargin(16)
        self.me = None
        self.shown = []  # the messages on screen, oldest first
        self.pending = []  # my messages not acknowledged yet, in the order typed, after them
        self.notes = []  # command results and errors shown after the messages
        self.highlighted = None  # the id of the message a search result jumped to
        self._rendering = False  # setHtml moves the scroll bar; that is not the reader scrolling
        self.verticalScrollBar().valueChanged.connect(self._scrolled)

    def show_messages(self, messages):
        """Replace what is shown, keeping the reader's place (older pages land above it)."""
        bar = self.verticalScrollBar()
        at_bottom = bar.value() >= bar.maximum() - 4
        from_bottom = bar.maximum() - bar.value()
        was_empty = not self.shown
        self.shown = list(messages)
        self._rendering = True
        try:
            self._render()
            bar.setValue(bar.maximum() if at_bottom or was_empty else bar.maximum() - from_bottom)
        finally:
            self._rendering = False

    def resizeEvent(self, event):
        """A reader at the bottom stays there when the view shrinks (the composer grew)."""
        bar = self.verticalScrollBar()
        at_bottom = bar.value() >= bar.maximum() - 4
        super().resizeEvent(event)
        if at_bottom:
            bar.setValue(bar.maximum())

    def jump_to(self, message_id):
        """Highlight a shown message and scroll it to the upper third of the view."""
        if message_id not in (m.id for m in self.shown):
            return
        self.highlighted = message_id
        self._rendering = True
        try:
            self._render()
            bar = self.verticalScrollBar()
            top, _ = self.highlighted_span()
            bar.setValue(bar.value() + top - self.viewport().height() // 3)
        finally:
            self._rendering = False

    def highlighted_span(self):
        """(top, bottom) of the highlighted message in viewport coordinates, or None."""
        index = next((i for i, m in enumerate(self._tables)
                      if m is not None and m.id == self.highlighted), None)
        if self.highlighted is None or index is None:
            return None
        frame = self.document().rootFrame().childFrames()[index]
        cursor = QTextCursor(self.document())
        cursor.setPosition(frame.firstPosition())
        top = self.cursorRect(cursor).top()
        cursor.setPosition(frame.lastPosition())
        return top, self.cursorRect(cursor).bottom()

    def fills_view(self):
        """Whether there is anything to scroll; if not, scrolling up cannot ask for more."""
        return self.verticalScrollBar().maximum() > 0

    def add_message(self, message):
        if any(m.id == message.id for m in self.shown):
            return
        self.show_messages(sorted([*self.shown, message], key=lambda m: m.id))

    def update_message(self, message):
        """Show an edited message's new text, or a deleted one's tombstone, in place."""
        if any(m.id == message.id for m in self.shown):
            self.show_messages([message if m.id == message.id else m for m in self.shown])

    def message_at(self, position):
        """The message drawn at ``position`` (viewport coordinates), or None."""
        table = self.cursorForPosition(position).currentTable()
        frames = self.document().rootFrame().childFrames()
        while table is not None and table not in frames:
            table = table.parentFrame()
        index = frames.index(table) if table is not None else len(self._tables)
        return self._tables[index] if index < len(self._tables) else None   # (pending: none)

    def context_actions(self, message):
        """What right-clicking a message offers, as (label, callback)."""
        actions = []
        if message is not None and not message.deleted and message.sender == self.me:
            actions.append(("Edit message", lambda: self.editRequested.emit(message)))
        if message is not None and self.can_delete(message):
            actions.append(("Delete message", lambda: self.deleteStoredRequested.emit(message)))
        return actions

    def contextMenuEvent(self, event):
        actions = self.context_actions(self.message_at(event.pos()))
        if not actions:
            return super().contextMenuEvent(event)
        menu = QMenu(self)
        for label, callback in actions:
            menu.addAction(label, callback)
        menu.exec(event.globalPos())

    def set_pending(self, messages):
        """Show these unacknowledged messages (sending… or refused) after the stored ones."""
        self.pending = list(messages)
        self.show_messages(self.shown)

    def _link_clicked(self, url):
        if url.scheme() in PENDING_ACTIONS:
            signal = self.retryRequested if url.scheme() == "retry" else self.deleteRequested
            signal.emit(url.path())
        else:
            QDesktopServices.openUrl(url)

    def add_note(self, text):
        self.notes.append(text)
        self.show_messages(self.shown)

    def clear_all(self):
        self.shown, self.notes, self.pending = [], [], []
        self.highlighted = None
        self.clear()

    def _render(self):
        parts, self._tables = [], []
        previous = None
        for message in self.shown:
            local = message.time.astimezone()
            if previous is None or previous.time.astimezone().date() != local.date():
                parts.append(
                    '<table width="100%" cellspacing="0" style="margin: 10px 0 6px 0;"><tr>'
                    '<td align="center" style="color:#6b7280; font-size:9pt; font-weight:600;">'
                    f'——— {local.strftime("%A, %d %B %Y")} ———</td></tr></table>')
                self._tables.append(None)
                previous = None
            grouped = (previous is not None and previous.sender == message.sender
                       and message.time - previous.time < GROUP_WINDOW)
            parts.append(self._message_html(message, local, grouped))
            self._tables.append(message)
            previous = message
        for message in self.pending:
            parts.append(self._pending_html(message))
        for note in self.notes:
            parts.append('<p style="color:#6b7280; margin: 6px 8px; white-space: pre-wrap;">'
                         f'{html.escape(note)}</p>')
        self.setHtml("".join(parts))

    def _message_html(self, message, local, grouped):
        mine = message.sender == self.me
        background = (f' bgcolor="{HIGHLIGHT}"' if message.id == self.highlighted
                      else ' bgcolor="#eef2ff"' if mine else "")
        if message.deleted:
            text = '<i style="color:#9ca3af;">message deleted</i>'
        elif message.action is not None:
            text = (f'<i style="color:#374151;">* <b style="color:{name_colour(message.sender)};">'
                    f'{html.escape(message.sender)}</b> {text_html(message.action)}</i>')
        else:
            text = text_html(message.text)
        if message.edited is not None and not message.deleted:
            text += ' <span style="color:#9ca3af; font-size:8.5pt;">(edited)</span>'
        header = ""
        if not grouped:
            who = "You" if mine else html.escape(message.sender)
            header = (f'<span style="font-weight:700; color:{"#4338ca" if mine else name_colour(message.sender)};">'
                      f'{who}</span>&nbsp;&nbsp;<span style="color:#9ca3af; font-size:8.5pt;">'
                      f'{local.strftime("%H:%M")}</span><br>')
        top = 2 if grouped else 8
        return (f'<table width="100%" cellspacing="0" cellpadding="6" style="margin-top:{top}px;">'
                f'<tr><td{background} style="color:#111827;">{header}{text}</td></tr></table>')

    def _pending_html(self, message):
        """Greyed, labelled "sending…"; a refused one with the server's reason, Retry and Delete."""
        if message.error is None:
            status = '<i style="color:#9ca3af; font-size:8.5pt;">sending…</i>'
            problem = ""
        else:
            status = '<span style="color:#b91c1c; font-size:8.5pt; font-weight:600;">not sent</span>'
            problem = (f'<br><span style="color:#b91c1c;">{html.escape(message.error)}</span>'
                       f'&nbsp;&nbsp;<a href="retry:{message.nonce}" style="color:{ACCENT};">Retry</a>'
                       f'&nbsp;·&nbsp;<a href="delete:{message.nonce}" style="color:{ACCENT};">Delete</a>')
        header = f'<span style="font-weight:700; color:#9ca3af;">You</span>&nbsp;&nbsp;{status}<br>'
        return ('<table width="100%" cellspacing="0" cellpadding="6" style="margin-top:8px;">'
                f'<tr><td bgcolor="#f3f4f6" style="color:#9ca3af;">{header}'
                f'{text_html(message.text)}{problem}</td></tr></table>')

    def _scrolled(self, value):
        if not self._rendering and value == self.verticalScrollBar().minimum() and self.shown:
            self.olderWanted.emit()


class MessageEdit(QPlainTextEdit):
    """Where a message is typed: Enter sends, Shift+Enter starts a new line.

    It grows with what is typed, up to ``MAX_LINES`` lines, then scrolls.
    """

    submitted = pyqtSignal()
    upOnEmpty = pyqtSignal()  # Up arrow with nothing typed: edit my last message
    escaped = pyqtSignal()
    MAX_LINES = 6

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("composer")
        self.setTabChangesFocus(True)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        # (The widget's own signal: the document's would still fire while the widget is destroyed.)
        self.textChanged.connect(self._fit)
        self._fit()

    def keyPressEvent(self, event):
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            if event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
                self.insertPlainText("\n")
            else:
                self.submitted.emit()
            return
        if event.key() == Qt.Key.Key_Up and not self.toPlainText():
            self.upOnEmpty.emit()
            return
        if event.key() == Qt.Key.Key_Escape:
            self.escaped.emit()
            return
        super().keyPressEvent(event)

    def _fit(self):
        """As tall as its lines (wrapped ones count), between one and MAX_LINES."""
        document = self.document()
        lines = min(max(int(document.size().height()), 1), self.MAX_LINES)  # the layout counts lines
        first_line = document.firstBlock().layout().lineAt(0)
        line_height = first_line.height() if first_line.isValid() else self.fontMetrics().height()
        frame = self.height() - self.viewport().height() if self.isVisible() else 2 * self.frameWidth()
        # (+1: QPlainTextEdit scrolls unless a pixel is left below the last line.)
        self.setFixedHeight(math.ceil(lines * line_height + 2 * document.documentMargin()) + 1 + frame)

    def showEvent(self, event):
        super().showEvent(event)
        self._fit()

    def resizeEvent(self, event):
        super().resizeEvent(event)
        if event.size().width() != event.oldSize().width():
            self._fit()  # long lines wrap differently


class Composer(QWidget):
    """The message being written and the Send button. Errors from sending show right above it."""

    sendRequested = pyqtSignal(str)
    editDone = pyqtSignal(object, str)  # the message being edited, its new text
    typing = pyqtSignal()  # something (not a command) was typed

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("composerBar")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 10, 16, 12)
        layout.setSpacing(4)
        self.error = QLabel()
        self.error.setObjectName("fieldError")
        self.error.hide()
        layout.addWidget(self.error)
        self.editing = None  # the message whose text the composer holds, while editing
        self.editing_label = QLabel("Editing your message — Enter saves, Escape cancels")
        self.editing_label.setObjectName("conversationInfo")
        self.editing_label.hide()
        layout.addWidget(self.editing_label)
        row = QHBoxLayout()
        row.setAlignment(Qt.AlignmentFlag.AlignBottom)
        self.edit = MessageEdit()
        self.edit.setPlaceholderText(
            "Write a message…  (Enter sends, Shift+Enter for a new line, /help for commands)")
        self.send = QPushButton("Send")
        self.send.setObjectName("primary")
        row.addWidget(self.edit, 1)
        row.addWidget(self.send, 0, Qt.AlignmentFlag.AlignBottom)
        layout.addLayout(row)
        self.edit.submitted.connect(self._send)
        self.send.clicked.connect(self._send)
        self.edit.textChanged.connect(self._typed)
        self.edit.escaped.connect(self.stop_editing)

    def _send(self):
        if self.editing is not None:
            self.editDone.emit(self.editing, self.edit.toPlainText())
        else:
            self.sendRequested.emit(self.edit.toPlainText())

    def _typed(self):
        text = self.edit.toPlainText()
        self.show_error(rules.message_problem(text.strip()) or "")
        if text.strip() and not text.startswith("/") and self.editing is None:
            self.typing.emit()

    def start_editing(self, message):
        """Put ``message``'s text in the composer; Enter then saves it instead of sending."""
        self.editing = message
        self.edit.setPlainText(message.text)
        self.edit.moveCursor(self.edit.textCursor().MoveOperation.End)
        self.editing_label.show()
        self.edit.setFocus()

    def stop_editing(self):
        if self.editing is not None:
            self.editing = None
            self.editing_label.hide()
            self.edit.clear()

    def show_error(self, message):
        self.error.setText(message)
        self.error.setVisible(bool(message))

    def sent(self):
        self.stop_editing()
        self.edit.clear()
        self.show_error("")


class ConversationPane(QWidget):
    """Title bar, messages and composer of the open conversation."""

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        header = QWidget()
        header.setObjectName("header")
        header.setAttribute(Qt.WidgetAttribute.WA_StyledBackground)
        self.header_layout = header_layout = QHBoxLayout(header)
        header_layout.setContentsMargins(18, 10, 18, 10)
        self.symbol = QLabel()
        self.symbol_kind = None  # "hash" or "lock" in front of a channel's name
        self.title = QLabel("No conversation open")
        self.title.setObjectName("conversationTitle")
        self.info = QLabel("")
        self.info.setObjectName("conversationInfo")
        header_layout.addWidget(self.symbol)
        header_layout.addWidget(self.title)
        header_layout.addSpacing(8)
        header_layout.addWidget(self.info, 1)
        layout.addWidget(header)
        self.view = MessageView()
        layout.addWidget(self.view, 1)
        self.typing = QLabel("")
        self.typing.setObjectName("conversationInfo")
        self.typing.setContentsMargins(18, 2, 18, 0)
        layout.addWidget(self.typing)
        self.composer = Composer()
        layout.addWidget(self.composer)

    SYMBOLS = {"hash": hash_icon, "lock": lock_icon}

    def set_title(self, text, symbol=None):
        """The header's title, after a '#' (public channel) or a lock (private one) if given."""
        self.title.setText(text)
        self.symbol_kind = symbol
        if symbol is not None:
            self.symbol.setPixmap(self.SYMBOLS[symbol]("#4b5563", 18).pixmap(18, 18))
        self.symbol.setVisible(symbol is not None)

    def show_typers(self, users):
        """ "alice is typing…" under the messages (empty: nobody)."""
        if not users:
            text = ""
        elif len(users) == 1:
            text = f"{users[0]} is typing…"
        elif len(users) == 2:
            text = f"{users[0]} and {users[1]} are typing…"
        else:
            text = "Several people are typing…"
        self.typing.setText(text)
