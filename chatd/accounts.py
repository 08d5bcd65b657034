"""Accounts: register, log in, log out, roles — for every front end.

In the shape of twisted.cred: `Accounts.login(credentials, ip, realm)` checks
the credentials (the checker: name rules, bans and failed-login backoff, bcrypt
in its bounded thread pool, a dummy hash for unknown names so a wrong name costs
as long as a wrong password), then asks `realm(name)` for the front end's avatar
(the chat protocol's Session) and returns it. An IRC or web front end calls the
same methods with its own realm.

The directory of accounts and their roles lives here and only here (loaded at
start, written through to SQL), so nothing on the message path waits for the
database.
"""

from dataclasses import dataclass

from twisted.internet import defer
from twisted.logger import Logger

from chatd.auth import ChatError, check_email, check_name, check_password
from chatd.moderation.common import MANHOLE

log = Logger()
USER, ADMIN = "user", "admin"


@dataclass(frozen=True)
class Credentials:
    """A name and a password, as twisted.cred's IUsernamePassword."""
    name: str
    password: str

    @classmethod
    def from_wire(cls, text):
        """From the notes' "name:password" (split at the first ':')."""
        name, colon, password = text.partition(":")
        if not colon or not name or not password:
            raise ChatError("Send your name and password as \"name:password\".")
        return cls(name, password)


class Accounts:
    def __init__(self, store, hasher, throttle, admins=()):
        self.store = store
        self.hasher = hasher
        self.throttle = throttle
        self.names = {}         # casefolded name -> name as registered
        self.roles = {}         # name as registered -> USER | ADMIN
        # --admin names without an account yet: they become admin when registered.
        self.pending_admins = {name.casefold(): name for name in admins}
        self.login_checks = []  # callables (name, ip) raising ChatError to refuse a login
        self.role_changes = []  # callables (name, role) told after a role changed
        self.registrations = []     # callables (name, role) told after an account is created

    @defer.inlineCallbacks
    def load(self):
        """Read the directory (once, at start) and apply the --admin names that exist."""
        for name, role in (yield self.store.all_users()):
            self.add(name, role)
        for folded, given in sorted(self.pending_admins.items()):
            name = self.names.get(folded)
            if name is None:
                log.warn("--admin {name}: no such account yet; whoever registers {name} first"
                         " becomes admin. Register it now (or drop the option).", name=given)
            elif self.roles[name] != ADMIN:
                yield self.set_role(name, ADMIN)

    def add(self, name, role=USER):
        self.names[name.casefold()] = name
        self.roles[name] = role

    # -- the directory ---------------------------------------------------------------

    def name_of(self, name, must_exist=True):
        """The name as registered, whatever case `name` is given in."""
        registered = self.names.get(name.casefold()) if isinstance(name, str) else None
        if registered is None:
            if must_exist:
                raise ChatError(f"There is no user named {name!r}.")
            return name
        return registered

    def role_of(self, name):
        return self.roles.get(name, USER)

    def is_admin(self, name):
        return self.role_of(name) == ADMIN

    def all_names(self):
        return sorted(self.roles, key=str.casefold)

    @defer.inlineCallbacks
    def set_role(self, name, role):
        """Give or take a role; it applies at once, to a session already logged in too."""
        registered = self.name_of(name)
        yield self.store.set_role(registered, role)
        self.roles[registered] = role
        for changed in self.role_changes:
            changed(registered, role)
        return role

    # -- register, log in, log out ---------------------------------------------------

    @defer.inlineCallbacks
    def register(self, name, password, email, ip):
        """Create an account; Deferred firing with its name."""
        check_name(name)
        check_email(email)
        check_password(name, password)
        if name.casefold() == MANHOLE.name:
            raise ChatError(f"The name {name!r} is reserved: the audit log uses it for actions "
                            "taken from the SSH manhole. Pick another one.")
        if name.casefold() in self.names:
            raise ChatError(f"The name {name!r} is taken. Pick another one.")
        password_hash = yield self.hasher.hash(password)
        role = ADMIN if name.casefold() in self.pending_admins else USER
        try:
            yield self.store.create_user(name, email, password_hash, role)
        except Exception as e:
            if self.store.engine.is_integrity_error(e):
                raise ChatError(f"The name {name!r} is taken. Pick another one.")
            raise
        self.add(name, role)
        for registered in self.registrations:
            registered(name, role)
        self.store.log_auth(name, "register", ip)
        return name

    def _check_allowed(self, name, ip):
        for check in self.login_checks:
            check(name, ip)

    def _check_throttle(self, name, ip):
        try:
            self.throttle.check(name, ip)
        except ChatError:
            log.warn("login for {name!r} from {ip} refused: failed-login backoff",
                     name=name, ip=ip)
            self.store.log_auth(name, "login_throttled", ip)
            raise

    @defer.inlineCallbacks
    def login(self, credentials, ip, realm):
        """Check `credentials`, then return `realm(name)`: the front end's avatar.

        A refusal is a ChatError with the sentence to show; the realm may refuse
        too (the connection closed meanwhile), and the login then counts as not made.
        """
        name = credentials.name
        check_name(name)    # no account breaks the rules; keeps logs and throttle keys short
        self._check_allowed(name, ip)
        self._check_throttle(name, ip)
        row = yield self.store.get_user(name)
        matches = yield self.hasher.check(credentials.password, row[1] if row else None)
        if not matches:
            self.store.log_auth(row[0] if row else name, "login_failed", ip)
            backoff = self.throttle.failed(name, ip)
            log.info("failed login for {name!r} from {ip}{backoff}", name=name, ip=ip,
                     backoff=f"; backoff {backoff:g} s" if backoff else "")
            raise ChatError("Wrong name or password.")
        name, _, role = row
        self._check_allowed(name, ip)
        self.add(name, role)   # the database's role wins over a stale copy
        avatar = realm(name)
        self.throttle.succeeded(name, ip)
        self.store.log_auth(name, "login", ip)
        return avatar

    def logout(self, name, ip):
        self.store.log_auth(name, "logout", ip)
