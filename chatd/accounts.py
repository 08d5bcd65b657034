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

import bisect
from dataclasses import dataclass

from twisted.internet import defer
from twisted.logger import Logger

from chatd.auth import ChatError, check_email, check_name, check_password
from chatd.moderation.common import MANHOLE
from chatd.rules import fold, name_key, skeleton

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
    """`registrations` (chatd.admission.RegistrationLimit) and `known`
    (chatd.admission.KnownLogins) are optional: without them nothing is limited."""

    def __init__(self, store, hasher, throttle, admins=(), registrations=None, known=None):
        self.store = store
        self.hasher = hasher
        self.throttle = throttle
        self.registrations = registrations
        self.known = known
        self.names = {}         # folded name (chatd.rules.fold) -> name as registered
        self.sorted_keys = []   # the folded names, sorted: the directory's order and cursor
        self.skeletons = {}     # chatd.rules.skeleton -> name as registered
        self.roles = {}         # name as registered -> USER | ADMIN
        # name as registered -> bcrypt hash: a login needs no SQL (accounts made on
        # another node are read from the database at their first login here).
        self.password_hashes = {}
        # --admin names without an account yet: they become admin when registered.
        self.pending_admins = {fold(name): name for name in admins}
        self.login_checks = []  # callables (name, ip) raising ChatError to refuse a login
        self.role_changes = []  # callables (name, role) told after a role changed
        self.account_created = []   # callables (name, role) told after an account is created
        # callables () raising ChatError to refuse a removal or a change (a ban lifted, a
        # channel deleted, a member gone, a role changed) before it is written: only the
        # bus can carry one to the other nodes (chatd.cluster, `check_change`).
        self.change_checks = []

    @defer.inlineCallbacks
    def load(self):
        """Read the directory (once, at start) and apply the --admin names that exist."""
        for name, role, password_hash in (yield self.store.all_users()):
            self.add(name, role)
            self.password_hashes[name] = password_hash
        for folded, given in sorted(self.pending_admins.items()):
            name = self.names.get(folded)
            if name is None:
                log.warn("--admin {name}: no such account yet; whoever registers {name} first"
                         " becomes admin. Register it now (or drop the option).", name=given)
            elif self.roles[name] != ADMIN:
                yield self.set_role(name, ADMIN)

    def add(self, name, role=USER):
        key = fold(name)
        if key not in self.names:
            bisect.insort(self.sorted_keys, key)
        self.names[key] = name
        self.skeletons.setdefault(skeleton(name), name)
        self.roles[name] = role

    # -- the directory ---------------------------------------------------------------

    def name_of(self, name, must_exist=True):
        """The name as registered, whatever case `name` is given in."""
        registered = self.names.get(name_key(name))
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
        return [self.names[key] for key in self.sorted_keys]

    def names_after(self, cursor):
        """The names in directory order, from the first one whose folded form sorts after
        `cursor` (a folded name; "" for the start)."""
        for index in range(bisect.bisect_right(self.sorted_keys, cursor), len(self.sorted_keys)):
            yield self.sorted_keys[index], self.names[self.sorted_keys[index]]

    def check_change(self):
        """Raise ChatError if a removal or change of the shared state is refused now."""
        for check in self.change_checks:
            check()

    @defer.inlineCallbacks
    def set_role(self, name, role):
        """Give or take a role; it applies at once, to a session already logged in too."""
        registered = self.name_of(name)
        self.check_change()
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
        if fold(name) == MANHOLE.name:
            raise ChatError(f"The name {name!r} is reserved: the audit log uses it for actions "
                            "taken from the SSH manhole. Pick another one.")
        if fold(name) in self.names:
            raise ChatError(f"The name {name!r} is taken. Pick another one.")
        look_alike = self.skeletons.get(skeleton(name))
        if look_alike is not None:
            raise ChatError(f"The name {name!r} looks too much like {look_alike!r}, which is "
                            "taken (I, l and 1, O and 0, rn and m, '.', '_' and '-' are easily "
                            "mistaken for each other); pick a name that looks different.")
        if self.registrations is not None:
            self.registrations.take(ip)     # counted now, so parallel requests count too
        role = ADMIN if fold(name) in self.pending_admins else USER
        try:
            password_hash = yield self.hasher.hash(password)
            yield self.store.create_user(name, email, password_hash, role)
        except Exception as e:
            if self.registrations is not None:
                self.registrations.give_back(ip)    # busy, or the database: not the user's fault
            if self.store.engine.is_integrity_error(e):
                raise ChatError(f"The name {name!r} is taken. Pick another one.")
            raise
        self.add(name, role)
        self.password_hashes[name] = password_hash
        for created in self.account_created:
            created(name, role)
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
        registered = self.names.get(name_key(name))
        password_hash = self.password_hashes.get(registered)
        if password_hash is None:       # unknown here: maybe made on another node
            row = yield self.store.get_user(name)
            if row is not None:
                registered, password_hash, role = row
                self.add(registered, role)
                self.password_hashes[registered] = password_hash
        known = self.known is not None and (name, ip) in self.known
        matches = yield self.hasher.check(credentials.password, password_hash, priority=known)
        if not matches:
            self.store.log_auth(registered or name, "login_failed", ip)
            backoff = self.throttle.failed(name, ip)
            log.info("failed login for {name!r} from {ip}{backoff}", name=name, ip=ip,
                     backoff=f"; backoff {backoff:g} s" if backoff else "")
            raise ChatError("Wrong name or password.")
        name = registered
        self._check_allowed(name, ip)
        avatar = realm(name)
        self.throttle.succeeded(name, ip)
        if self.known is not None:
            self.known.add(name, ip)
        self.store.log_auth(name, "login", ip)
        return avatar

    def logout(self, name, ip):
        self.store.log_auth(name, "logout", ip)
