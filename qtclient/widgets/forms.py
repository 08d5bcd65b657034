"""The login and register pages: centred cards with inline errors."""

from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtWidgets import (
    QCheckBox, QFileDialog, QFrame, QGridLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton,
    QVBoxLayout, QWidget)

from chatd import rules



def _label(text, name):
    label = QLabel(text)
    label.setObjectName(name)
    label.setWordWrap(True)
    return label


class _CardPage(QWidget):
    """A page with a fixed-width card centred in it."""

    def __init__(self, title, subtitle, parent=None):
        super().__init__(parent)
        self.setObjectName("page")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground)
        self.card = QFrame()
        self.card.setObjectName("card")
        self.card.setFixedWidth(400)
        self.form = QVBoxLayout(self.card)
        self.form.setContentsMargins(32, 28, 32, 28)
        self.form.setSpacing(6)
        self.form.addWidget(_label(title, "title"))
        self.form.addWidget(_label(subtitle, "subtitle"))
        self.form.addSpacing(12)
        outer = QGridLayout(self)
        outer.addWidget(self.card, 0, 0, Qt.AlignmentFlag.AlignCenter)

    def _field(self, label, placeholder, password=False):
        """A labelled line edit with its own error label underneath."""
        self.form.addWidget(_label(label, "fieldLabel"))
        edit = QLineEdit()
        edit.setPlaceholderText(placeholder)
        if password:
            edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.form.addWidget(edit)
        error = _label("", "fieldError")
        error.hide()
        self.form.addWidget(error)
        self.form.addSpacing(4)
        return edit, error

    @staticmethod
    def _show_error(edit, label, message):
        label.setText(message)
        label.setVisible(bool(message))
        edit.setProperty("invalid", bool(message))
        edit.style().unpolish(edit)
        edit.style().polish(edit)


class LoginPage(_CardPage):
    """Server address, name and password; errors from the model appear under the form.

    "Use TLS" turns the address into ``tls://address``; "Trust a certificate file…"
    picks the PEM certificate of a self-signed server (``ca_file``, empty for the
    system's roots).
    """

    loginRequested = pyqtSignal(str, str, str)  # address, name, password
    registerRequested = pyqtSignal()
    caFileChanged = pyqtSignal(str)

    def __init__(self, parent=None):
        super().__init__("Sign in to chatd", "Chat with your team, channel by channel.", parent)
        self.address, self.address_error = self._field("Server", "localhost:7878")
        self.address.setToolTip("host:port, or several separated by commas (the servers of one"
                                " cluster): if one goes away, the next one takes over.")
        self.ca_file = ""
        tls_row = QHBoxLayout()
        self.use_tls = QCheckBox("Use TLS")
        self.use_tls.setToolTip("Encrypt the connection and check the server's certificate.")
        self.trust_button = QPushButton("Trust a certificate file…")
        self.trust_button.setObjectName("link")
        self.trust_button.setCursor(Qt.CursorShape.PointingHandCursor)
        tls_row.addWidget(self.use_tls)
        tls_row.addStretch(1)
        tls_row.addWidget(self.trust_button)
        self.form.addLayout(tls_row)
        self.trust_label = _label("", "hint")
        self.trust_label.hide()
        self.form.addWidget(self.trust_label)
        self.form.addSpacing(4)
        self.name, self.name_error = self._field("Name", "your name")
        self.password, self.password_error = self._field("Password", "password", password=True)
        self.error = _label("", "formError")
        self.error.hide()
        self.notice = _label("", "formNotice")
        self.notice.hide()
        self.form.addWidget(self.error)
        self.form.addWidget(self.notice)
        self.submit = QPushButton("Sign in")
        self.submit.setObjectName("primary")
        self.submit.setDefault(True)
        self.form.addSpacing(6)
        self.form.addWidget(self.submit)
        self.create_account = QPushButton("No account yet? Create an account")
        self.create_account.setObjectName("link")
        self.create_account.setCursor(Qt.CursorShape.PointingHandCursor)
        self.form.addWidget(self.create_account, 0, Qt.AlignmentFlag.AlignHCenter)

        self.submit.clicked.connect(self._submit)
        for edit in (self.address, self.name, self.password):
            edit.returnPressed.connect(self._submit)
        self.create_account.clicked.connect(self.registerRequested)
        self.trust_button.clicked.connect(self._choose_ca_file)

    def set_ca_file(self, path):
        """Trust only the certificate in ``path`` for TLS ("" for the system's roots)."""
        self.ca_file = path or ""
        self.trust_label.setText(f"Trusting only the certificate in {self.ca_file}"
                                 if self.ca_file else "")
        self.trust_label.setVisible(bool(self.ca_file))
        self.trust_button.setText("Use the system's certificates" if self.ca_file
                                  else "Trust a certificate file…")
        if self.ca_file:
            self.use_tls.setChecked(True)
        self.caFileChanged.emit(self.ca_file)

    def _choose_ca_file(self):
        if self.ca_file:
            self.set_ca_file("")
            return
        path, _ = QFileDialog.getOpenFileName(
            self, "Trust the server's certificate", "", "PEM certificates (*.pem *.crt);;All files (*)")
        if path:
            self.set_ca_file(path)

    def set_server(self, address):
        """Fill in an address, or several separated by commas (the nodes of one cluster);
        a ``tls://`` prefix on every one ticks "Use TLS" instead of staying in the text."""
        parts = [part.strip() for part in address.split(",") if part.strip()]
        schemes = {part.partition("://")[0].lower() if "://" in part else "" for part in parts}
        if len(schemes) == 1 and schemes <= {"tls", "tcp"}:
            self.use_tls.setChecked(schemes == {"tls"})
            parts = [part.partition("://")[2] for part in parts]
        self.address.setText(", ".join(parts))

    def server(self):
        """The address(es) to connect to, each with ``tls://`` when "Use TLS" is ticked."""
        parts = [part.strip() for part in self.address.text().split(",") if part.strip()]
        if self.use_tls.isChecked():
            parts = [part if "://" in part else f"tls://{part}" for part in parts]
        return ",".join(parts)

    def _submit(self):
        self.show_notice("")
        missing = [(edit, label) for edit, label in (
            (self.address, self.address_error), (self.name, self.name_error),
            (self.password, self.password_error)) if not edit.text().strip()]
        for edit, label in ((self.address, self.address_error), (self.name, self.name_error),
                            (self.password, self.password_error)):
            self._show_error(edit, label, "Required." if (edit, label) in missing else "")
        if missing:
            missing[0][0].setFocus()
            return
        self.show_error("")
        self.set_busy(True)
        self.loginRequested.emit(self.server(), self.name.text().strip(), self.password.text())

    def set_busy(self, busy):
        self.submit.setEnabled(not busy)
        self.submit.setText("Signing in…" if busy else "Sign in")

    def show_error(self, message):
        self.set_busy(False)
        self.error.setText(message)
        self.error.setVisible(bool(message))
        if message:
            self.password.selectAll()
            self.password.setFocus()

    def show_notice(self, message):
        self.notice.setText(message)
        self.notice.setVisible(bool(message))

    def reset(self, name=""):
        """Ready for a new login: keep address and name, clear the password."""
        self.set_busy(False)
        self.show_error("")
        if name:
            self.name.setText(name)
        self.password.clear()
        (self.password if self.name.text() else self.name).setFocus()


class RegisterPage(_CardPage):
    """Account creation, checked as you type; server errors go next to their field."""

    registerRequested = pyqtSignal(str, str, str, str)  # address, name, email, password
    backRequested = pyqtSignal()

    def __init__(self, parent=None):
        super().__init__("Create an account", "Pick a name people will recognise.", parent)
        self.address, self.address_error = self._field("Server", "localhost:7878")
        self.name, self.name_error = self._field("Name", "2–32 letters, digits, _ . -")
        self.email, self.email_error = self._field("Email", "you@example.org")
        self.password, self.password_error = self._field(
            "Password", f"at least {rules.PASSWORD_MIN} characters", password=True)
        self.confirm, self.confirm_error = self._field(
            "Confirm password", "the same again", password=True)
        self.error = _label("", "formError")
        self.error.hide()
        self.form.addWidget(self.error)
        self.submit = QPushButton("Create account")
        self.submit.setObjectName("primary")
        self.submit.setEnabled(False)
        self.form.addSpacing(6)
        self.form.addWidget(self.submit)
        self.back = QPushButton("Already have an account? Sign in")
        self.back.setObjectName("link")
        self.back.setCursor(Qt.CursorShape.PointingHandCursor)
        self.form.addWidget(self.back, 0, Qt.AlignmentFlag.AlignHCenter)

        self._errors = {
            "address": (self.address, self.address_error), "name": (self.name, self.name_error),
            "email": (self.email, self.email_error),
            "password": (self.password, self.password_error),
            "confirm": (self.confirm, self.confirm_error),
        }
        for edit in (self.address, self.name, self.email, self.password, self.confirm):
            edit.textEdited.connect(self._validate)
            edit.returnPressed.connect(self._submit)
        self.submit.clicked.connect(self._submit)
        self.back.clicked.connect(self.backRequested)

    def problems(self):
        """Field → what is wrong with it now (empty fields count, but are shown only once typed in)."""
        name, password = self.name.text().strip(), self.password.text()
        problems = {}
        if not self.address.text().strip():
            problems["address"] = "Required."
        for field, problem in (("name", rules.name_problem(name)),
                               ("email", rules.email_problem(self.email.text().strip())),
                               ("password", rules.password_problem(name, password))):
            if problem:
                problems[field] = problem
        if self.confirm.text() != password:
            problems["confirm"] = "The passwords do not match."
        return problems

    def _validate(self):
        problems = self.problems()
        for field, (edit, label) in self._errors.items():
            shown = problems.get(field, "") if edit.text() else ""
            self._show_error(edit, label, shown)
        self.submit.setEnabled(not problems)
        self.error.hide()

    def _submit(self):
        if self.problems():
            return
        self.submit.setEnabled(False)
        self.submit.setText("Creating…")
        self.registerRequested.emit(self.address.text().strip(), self.name.text().strip(),
                                    self.email.text().strip(), self.password.text())

    def show_server_error(self, field, message):
        """Show the server's refusal next to the field it concerns (or under the form)."""
        self.submit.setText("Create account")
        self.submit.setEnabled(True)
        if field in self._errors:
            edit, label = self._errors[field]
            self._show_error(edit, label, message)
            edit.setFocus()
        else:
            self.error.setText(message)
            self.error.show()

    def reset(self, address):
        for edit, label in self._errors.values():
            edit.clear()
            self._show_error(edit, label, "")
        self.address.setText(address)
        self.error.hide()
        self.submit.setText("Create account")
        self.submit.setEnabled(False)
        self.name.setFocus()
