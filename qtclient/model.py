"""The client model: owns the connection and turns server lines into typed Qt signals.

Widgets call the model's methods and listen to its signals; they never see the
protocol or raw JSON. Every timer (heartbeat, away detection, reconnect backoff)
runs on an injected ``clock`` (any ``IReactorTime``), so tests can drive minutes
of idleness with ``twisted.internet.task.Clock`` instead of sleeping.
"""

import dataclasses
from dataclasses import dataclass

from PyQt6.QtCore import QEvent, QObject, QStandardPaths, pyqtSignal
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.task import LoopingCall, deferLater

from chatd import rules
from chatd.auth import BUSY as HASHING_BUSY
from chatd.cluster import CATCHING_UP
from chatd.limits import TOO_FAST
from chatd.protocol import BUSY, UNAVAILABLE

from .entities import (
    ACTION_FORMAT, ChannelInfo, ChatMessage, Conversation, JoinRequest, Member, UserInfo,
    parse_time)
from .outbox import Outbox
from .protocol import ChatProtocol, ServerError

DEFAULT_PORT = 7878
HISTORY_PAGE = 50
CATCH_UP_PAGE = 200
TYPING_EVERY = 3.0  # seconds between my "typing" notices in one conversation (the server's pace)
TYPING_SHOWN = 6.0  # seconds "alice is typing…" stays without another notice
PAGE_RETRIES, PAGE_RETRY_DELAY = 30, 1.0    # a directory page refused for flooding: again after 1 s
# Refusals that say "not now" rather than "no": the message is sent again after RESEND_DELAY
# seconds instead of being shown as refused. One message waits at a time, so a backlog
# never draws more than one flood-control refusal per RESEND_DELAY.
TRANSIENT_REFUSALS = frozenset({TOO_FAST, BUSY, UNAVAILABLE})
RESEND_DELAY = 2.0
# A login refused for a moment (by a node catching up after a network cut, or busy
# hashing passwords): a reconnect goes on to the next server instead of giving up.
LOGIN_NOT_NOW = frozenset({HASHING_BUSY, CATCHING_UP, UNAVAILABLE})
MARK_EVERY = 1.0  # seconds between two mark_read of one conversation
ROSTER_EVERY = 2.0  # seconds: a channel's full member list is asked again at most this often
SEARCH_TRIES = 10  # requests one search page may take while the server finds nothing readable
EXCERPT = 140  # characters of a search result's text shown around its first match


def text_problem(text, if_empty):
    """The sentence to show next to the composer for `text` (stripped), or None."""
    return if_empty if not text else rules.message_problem(text)

# The commands the client runs itself (the rest go to the server), as /help explains them.
CLIENT_COMMANDS = {
    "me": ("/me waves", 'say what you are doing: everyone sees "* {user} waves"'),
    "leave": ("/leave [channel]", "leave this channel (or the one named); "
              "you can join it again from the sidebar"),
    "help": ("/help", "show this list"),
}
HELP_FOOTER = ("Enter sends; Shift+Enter starts a new line; Up on an empty line edits your "
               "last message (right-click a message to edit or delete it). Write @name in a "
               "channel to get that person's attention.")


def match_spans(text, query):
    """(start, end) of each word of ``text`` a search for ``query`` matched (whole words, any
    case), in order: what the results list highlights."""
    words = {rules.word_key(w) for w in rules.search_words(query)}
    return [m.span() for m in rules.WORD_RULE.finditer(text) if rules.word_key(m.group()) in words]


def excerpt(text, query, width=EXCERPT):
    """(shown text, its match spans): ``text`` cut to about ``width`` characters around its
    first match, with "…" where something was left out."""
    spans = match_spans(text, query)
    if len(text) <= width:
        return text, spans
    first = spans[0][0] if spans else 0
    start = max(0, min(first - width // 4, len(text) - width))
    start = text.rfind(" ", 0, start) + 1 if start else 0   # not in the middle of a word
    end = min(len(text), start + width)
    prefix, suffix = ("…" if start else ""), ("…" if end < len(text) else "")
    shift = len(prefix) - start
    shown = prefix + text[start:end] + suffix
    return shown, [(a + shift, b + shift) for a, b in spans if a >= start and b <= end]


class State:
    """Connection states, as shown in the status bar."""

    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"  # connected, not logged in
    ONLINE = "online"  # logged in
    RECONNECTING = "reconnecting"


@dataclass(frozen=True)
class ServerAddress:
    host: str
    port: int
    tls: bool = False

    def __str__(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'tls://' if self.tls else ''}{host}:{self.port}"


def parse_address(address):
    """``"[tls://]host[:port]"`` → :class:`ServerAddress`; raises ValueError with a sentence to show.

    ``tls://`` asks for an encrypted connection whose certificate is verified;
    ``tcp://`` or no prefix is plain TCP.
    """
    address = address.strip()
    tls = False
    scheme, sep, rest = address.partition("://")
    if sep:
        if scheme.lower() not in ("tls", "tcp"):
            raise ValueError(f"'{scheme}://' is not supported: write tls://host:port or host:port.")
        tls, address = scheme.lower() == "tls", rest.strip()
    if not address:
        raise ValueError("Enter the server address, for example localhost:7878.")
    host, colon, port = address.rpartition(":")
    if not colon or (host.count(":") and not host.startswith("[")):
        return ServerAddress(address.strip("[]"), DEFAULT_PORT, tls)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{address}' is not a server address like localhost:7878.")
    return ServerAddress(host.strip("[]"), int(port), tls)


def parse_servers(text):
    """``"a:7878, b:7878"`` → the :class:`ServerAddress` of each, in order (the nodes of
    one cluster, tried in turn); ValueError with a sentence to show."""
    servers = tuple(parse_address(part) for part in text.split(",") if part.strip())
    if not servers:
        raise ValueError("Enter the server address, for example localhost:7878.")
    return servers


def servers_text(servers):
    """The canonical spelling of a server list (the key of its outbox file)."""
    return ",".join(str(server) for server in servers)


def tls_options(host, ca_file=None):
    """Client TLS options verifying ``host``'s certificate against the system's roots,
    or only against the certificate(s) in ``ca_file`` (for a self-signed server)."""
    from twisted.internet import ssl
    trust_root = None  # None: the platform's trusted roots
    if ca_file:
        try:
            with open(ca_file, "rb") as pem:
                trust_root = ssl.Certificate.loadPEM(pem.read())
        except OSError as error:
            raise ValueError(f"Cannot read the certificate file {ca_file}: {error.strerror}.")
        except Exception:
            raise ValueError(f"{ca_file} is not a PEM certificate file.")
    return ssl.optionsForClientTLS(host, trustRoot=trust_root)


def field_of_error(message):
    """Which register-form field a server error is about, so it is shown next to it."""
    lowered = message.lower()
    for field in ("email", "password", "name"):
        if field in lowered:
            return field
    return ""


class ActivityMonitor(QObject):
    """Application-wide event filter remembering when the user last used mouse or keyboard.

    Install with ``QApplication.instance().installEventFilter(monitor)``.
    """

    activityResumed = pyqtSignal()

    ACTIVITY_EVENTS = frozenset({
        QEvent.Type.KeyPress, QEvent.Type.MouseButtonPress, QEvent.Type.MouseMove,
        QEvent.Type.Wheel, QEvent.Type.HoverMove, QEvent.Type.TouchBegin,
    })

    def __init__(self, clock, away_after=60.0, parent=None):
        super().__init__(parent)
        self._clock = clock
        self.away_after = away_after
        self._last_activity = clock.seconds()

    def eventFilter(self, watched, event):
        if event.type() in self.ACTIVITY_EVENTS:
            self.touch()
        return False

    def touch(self):
        was_away = self.is_away()
        self._last_activity = self._clock.seconds()
        if was_away:
            self.activityResumed.emit()

    def is_away(self):
        return self._clock.seconds() - self._last_activity >= self.away_after

    @property
    def status(self):
        return "away" if self.is_away() else "online"


@dataclass(frozen=True)
class Session:
    """What a reconnect needs to log in again; kept in memory only."""

    address: str
    user: str
    password: str
    role: str


class ChatModel(QObject):
    """One user's view of one chatd server."""

    connectionStateChanged = pyqtSignal(str)
    loggedIn = pyqtSignal(str, str)  # user, role
    loginFailed = pyqtSignal(str)
    registered = pyqtSignal(str)
    registerFailed = pyqtSignal(str, str)  # field ("name", "email", "password" or ""), message
    loggedOut = pyqtSignal()
    channelsChanged = pyqtSignal(list)  # [ChannelInfo]
    usersChanged = pyqtSignal(list)  # [UserInfo]
    conversationOpened = pyqtSignal(object)  # Conversation
    historyLoaded = pyqtSignal(object)  # Conversation whose stored messages changed in bulk
    messageReceived = pyqtSignal(object)  # ChatMessage, live
    messageForMe = pyqtSignal(object)  # ChatMessage, live: private to me, or mentioning me
    # channel, [Member] of those looking at it; also when its roster_of changed
    membersChanged = pyqtSignal(str, list)
    # query, [ChatMessage] matching it (newest first), the id to search below for more
    # (None: no more), whether they follow those shown (a page asked for with
    # search(query, before=...))
    searchResults = pyqtSignal(str, list, object, bool)
    searchFailed = pyqtSignal(str, str)  # query, the server's reason
    jumpedTo = pyqtSignal(object)  # ChatMessage now loaded in the open conversation: show it
    peerStatusChanged = pyqtSignal(str, str)  # user, status
    unreadChanged = pyqtSignal(object, int)  # Conversation, count
    conversationsListed = pyqtSignal(list)  # [Conversation] I take part in, from the server
    messageChanged = pyqtSignal(object)  # ChatMessage edited or deleted (a tombstone)
    typersChanged = pyqtSignal(object, list)  # Conversation, [user] typing there now
    joinStatusChanged = pyqtSignal(str, str)  # channel, "joined"/"member"/"pending"
    leftChannel = pyqtSignal(str)  # channel I left myself
    requestDecided = pyqtSignal(str, str, str)  # channel, "accepted"/"rejected", decided_by
    removedFromChannel = pyqtSignal(str, str, str)  # channel, by, "removed"/"deleted"
    joinRequestsChanged = pyqtSignal(list)  # [JoinRequest] pending (admins)
    commandResult = pyqtSignal(str)
    kicked = pyqtSignal(str)  # reason
    banned = pyqtSignal(str)  # reason
    sessionEnded = pyqtSignal(str, str)  # kind, reason: the server ended the session
    outboxChanged = pyqtSignal()  # a message was typed, acknowledged, refused or deleted
    errorOccurred = pyqtSignal(str)

    def __init__(self, reactor=None, clock=None, heartbeat_interval=5.0, away_after=60.0,
                 reconnect_delays=(1.0, 30.0), ca_file=None, data_dir=None, parent=None):
        super().__init__(parent)
        # Where each account's outbox file lives; by default the application's data directory.
        self.data_dir = data_dir or QStandardPaths.writableLocation(
            QStandardPaths.StandardLocation.AppDataLocation)
        # For tls:// addresses: trust only this PEM certificate (a self-signed server's)
        # instead of the system's roots.
        self.ca_file = ca_file
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self.activity = ActivityMonitor(self._clock, away_after, self)
        self.activity.activityResumed.connect(self.send_presence)
        self._heartbeat = LoopingCall(self.send_presence)
        self._heartbeat.clock = self._clock
        self._heartbeat_interval = heartbeat_interval
        self._first_delay, self._max_delay = reconnect_delays
        self._next_delay = self._first_delay
        self._reconnect_call = None
        self._resend_call = None  # after a "not now" refusal: when the outbox goes on
        self._protocol = None
        self._address = None    # the server list as given ("a:7878,b:7878")
        self._server_index = 0  # which of them is (or is next) tried
        self.server = None      # the ServerAddress connected to, or being tried
        self._farewell = None  # the server's reason for closing a connection before login
        self._session = None
        self.state = State.DISCONNECTED
        self._roster_call = None
        self._marking = {}
        self._reset_session_state()

    def _reset_session_state(self):
        self.current = None
        self.channels = []
        self.users = []
        self.statuses = {}  # user → "online"/"away"/"offline", from the directory and peer events
        self.members = {}  # channel → {user: Member}, for the channel I look at
        self.rosters = {}  # channel → {user: Member} every member (list_members), the one I look at
        self._roster_asked = None  # when the open channel's members were last asked for
        if self._roster_call is not None and self._roster_call.active():
            self._roster_call.cancel()
        self._roster_call = None  # the next list_members, ROSTER_EVERY s after the last
        self.pending_requests = {}
        self._messages = {}
        self._has_more = {}
        self._private_unread = {}
        self._read = {}  # Conversation → the newest message id the server has as read
        for call in self._marking.values():
            call.cancel()
        self._marking = {}  # Conversation → the end of the pause after its last mark_read
        self._typers = {}  # Conversation → {user: the call that ends their "typing…"}
        self._typing_sent = {}  # Conversation → when I last said I was typing there
        self._loading_older = False
        self.outbox = Outbox()  # replaced by the account's own at login
        self._in_flight = None  # the nonce of the outbox message sent and not answered yet
        self._cancel_resend()

    # --- what the widgets read ---------------------------------------------

    @property
    def user(self):
        return self._session.user if self._session else None

    @property
    def is_admin(self):
        return bool(self._session) and self._session.role == "admin"

    def messages(self, conversation):
        """Known messages of a conversation, oldest first."""
        return sorted(self._messages.get(conversation, {}).values(), key=lambda m: m.id)

    def pending(self, conversation):
        """Messages typed in a conversation and not acknowledged yet (sending or refused), in order."""
        return self.outbox.of(conversation)

    def has_more(self, conversation):
        return self._has_more.get(conversation, False)

    def members_of(self, channel):
        """Who looks at ``channel``, by name; None until the server has said."""
        members = self.members.get(channel)
        return None if members is None else sorted(members.values(), key=lambda m: m.user.lower())

    def roster_of(self, channel):
        """Every member of ``channel``: those looking at it first, then the others, each
        group by name; None until the server has listed them."""
        roster = self.rosters.get(channel)
        if roster is None:
            return None
        looking = self.members.get(channel, {})
        everyone = {name: Member(name, looking[name].status, True) if name in looking
                    else dataclasses.replace(member, looking=False)
                    for name, member in roster.items()}
        for name, member in looking.items():
            everyone.setdefault(name, member)  # (looking since the list was asked for)
        return sorted(everyone.values(), key=lambda m: (not m.looking, m.user.lower()))

    def status_of(self, user):
        return self.statuses.get(user, "offline")

    def channel_info(self, name):
        return next((c for c in self.channels if c.name == name), None)

    # --- connection ----------------------------------------------------------

    def _set_state(self, state):
        if state != self.state:
            self.state = state
            self.connectionStateChanged.emit(state)

    @defer.inlineCallbacks
    def _connection(self, address, tries=None):
        """The open connection to one of ``address``'s servers, opening (or replacing) it
        if needed. A new connection tries them in turn from the current one, ``tries``
        of them (default: each once)."""
        if self._protocol is not None and self._address == address:
            return self._protocol
        self._drop_connection()
        self._farewell = None
        servers = parse_servers(address)
        if address != self._address:
            self._address, self._server_index = address, 0
        failure = None
        for _ in range(tries or len(servers)):
            self.server = servers[self._server_index % len(servers)]
            self._set_state(State.CONNECTING)
            endpoint = HostnameEndpoint(self._reactor, self.server.host, self.server.port,
                                        timeout=10)
            if self.server.tls:
                endpoint = wrapClientTLS(tls_options(self.server.host, self.ca_file), endpoint)
            try:
                protocol = yield connectProtocol(endpoint, ChatProtocol(self))
            except Exception as error:
                failure = error
                self._server_index += 1
                continue
            return protocol
        self._set_state(State.DISCONNECTED)
        raise failure

    def _drop_connection(self):
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.transport.loseConnection()

    def connection_made(self, protocol):
        self._protocol = protocol
        self._set_state(State.CONNECTED)

    def connection_lost(self, protocol, reason):
        if protocol is not self._protocol:
            return
        self._protocol = None
        self._stop_heartbeat()
        if self.state == State.ONLINE and self._session is not None:
            self._server_index += 1     # the next server in turn (the same one if alone)
            self._schedule_reconnect()
            self._presence_unknown()
        elif self.state != State.RECONNECTING:
            self._set_state(State.DISCONNECTED)

    def _presence_unknown(self):
        """Disconnected: nobody can be seen online until the server says so again."""
        self.statuses = dict.fromkeys(self.statuses, "offline")
        self.users = [UserInfo(u.user, "offline") for u in self.users]
        self.usersChanged.emit(self.users)
        for channel, roster in self.rosters.items():
            self.rosters[channel] = {name: Member(name, "offline", False) for name in roster}
        for channel, members in self.members.items():
            self.members[channel] = {name: Member(name, "offline") for name in members}
            self._emit_members(channel)

    def _schedule_reconnect(self):
        self._set_state(State.RECONNECTING)
        self._reconnect_call = self._clock.callLater(self._next_delay, self._reconnect)
        self._next_delay = min(self._next_delay * 2, self._max_delay)

    @defer.inlineCallbacks
    def _reconnect(self):
        self._reconnect_call = None
        session = self._session
        try:
            protocol = yield self._connection(session.address, tries=1)
            self._set_state(State.RECONNECTING)
            yield protocol.request("user:pwd", f"{session.user}:{session.password}")
        except ServerError as error:
            if error.message not in LOGIN_NOT_NOW:
                self._end_session("login", error.message)
                return
            self._drop_connection()
            self._server_index += 1
            if self._session is session:
                self._schedule_reconnect()
            return
        except Exception:
            if self._session is session:
                self._schedule_reconnect()
            return
        if self._session is not session:
            return
        self._next_delay = self._first_delay
        self._set_state(State.ONLINE)
        self._start_heartbeat()
        self._send_outbox()
        yield self._after_login()
        if self.current is not None:
            yield self.open_conversation(self.current)

    def close(self):
        """Stop timers and drop the connection (the application is quitting)."""
        self._session = None
        self._cancel_reconnect()
        self._cancel_resend()
        self._stop_heartbeat()
        self._drop_connection()

    def _cancel_reconnect(self):
        if self._reconnect_call is not None and self._reconnect_call.active():
            self._reconnect_call.cancel()
        self._reconnect_call = None
        self._next_delay = self._first_delay

    # --- account -------------------------------------------------------------

    @defer.inlineCallbacks
    def login(self, address, user, password):
        """Connect if needed and log in; answers with ``loggedIn`` or ``loginFailed``."""
        try:
            protocol = yield self._connection(address)
            reply = yield protocol.request("user:pwd", f"{user}:{password}")
        except ValueError as error:
            self.loginFailed.emit(str(error))
            return
        except ServerError as error:
            self.loginFailed.emit(error.message)
            return
        except Exception as error:
            self.loginFailed.emit(self._unreachable(address, error))
            return
        self._reset_session_state()
        self._session = Session(address, reply["user"], password, reply.get("role", "user"))
        self.outbox = Outbox.for_account(self.data_dir, servers_text(parse_servers(address)),
                                         self._session.user)
        self._set_state(State.ONLINE)
        self._start_heartbeat()
        self.loggedIn.emit(self._session.user, self._session.role)
        self.outboxChanged.emit()
        self._send_outbox()
        yield self._after_login()

    def _unreachable(self, address, error):
        """The sentence for a connection that failed, saying what to do about a bad certificate."""
        from OpenSSL import SSL
        if isinstance(error, SSL.Error):
            trusted = (f"the certificate in {self.ca_file}" if self.ca_file
                       else "the certificates this system trusts")
            return (f"The server at {address} could not prove its identity: its certificate "
                    f"is not signed by {trusted}, or is not for that host name ({_ssl_reason(error)}). "
                    "If the server uses a self-signed certificate you trust, choose its file "
                    "with 'Trust a certificate file…' (or start chatd-client with --ca-file).")
        if self._farewell:
            return self._farewell  # e.g. "You are banned until …. Reason: …"
        return f"Could not reach the server at {address}: {_reason(error)}"

    @defer.inlineCallbacks
    def _after_login(self):
        yield self.refresh_channels()
        yield self.refresh_users()
        yield self.refresh_conversations()
        if self.is_admin:
            yield self.refresh_requests()

    @defer.inlineCallbacks
    def register(self, address, user, email, password):
        """Create an account (does not log in); answers with ``registered`` or ``registerFailed``."""
        try:
            protocol = yield self._connection(address)
            reply = yield protocol.request("register", user, email=email, password=password)
        except ValueError as error:
            self.registerFailed.emit("address", str(error))
            return
        except ServerError as error:
            self.registerFailed.emit(field_of_error(error.message), error.message)
            return
        except Exception as error:
            self.registerFailed.emit("address", self._unreachable(address, error))
            return
        self.registered.emit(reply.get("user", user))

    def logout(self):
        """Log out, keeping the connection for the next login (and the outbox on disk for it)."""
        if self._protocol is not None and self.state == State.ONLINE:
            self._protocol.request("logout", self._session.user).addErrback(lambda _: None)
        self._session = None
        self._cancel_reconnect()
        self._stop_heartbeat()
        self._reset_session_state()
        self.outboxChanged.emit()
        self._set_state(State.CONNECTED if self._protocol is not None else State.DISCONNECTED)
        self.loggedOut.emit()

    def _end_session(self, kind, reason):
        """The server ended the session (kicked, banned, replaced...): no reconnect.

        The server closes this connection too; dropping it now makes the next login
        open a fresh one instead of writing into the closing one.
        """
        self._session = None
        self._cancel_reconnect()
        self._stop_heartbeat()
        self._reset_session_state()
        self._drop_connection()
        self._set_state(State.DISCONNECTED)
        if kind == "kicked":
            self.kicked.emit(reason)
        elif kind == "banned":
            self.banned.emit(reason)
        self.sessionEnded.emit(kind, reason)

    # --- presence ------------------------------------------------------------

    def _start_heartbeat(self):
        if not self._heartbeat.running:
            self._heartbeat.start(self._heartbeat_interval, now=True)

    def _stop_heartbeat(self):
        if self._heartbeat.running:
            self._heartbeat.stop()

    def send_presence(self):
        """Say what I look at and whether I am active (the heartbeat, also sent on change)."""
        if self._protocol is None or self.state != State.ONLINE:
            return
        line = {"presence": self.activity.status}
        if self.current is not None and self.current.is_channel:
            if any(c.name == self.current.name and c.member for c in self.channels):
                line["channel"] = self.current.name
        elif self.current is not None:
            line["other_user"] = self.current.name
        self._protocol.send(line)

    # --- requests ------------------------------------------------------------

    def _request(self, action, value="", **fields):
        """A request whose failure is shown through ``errorOccurred``; fires None then."""
        if self._protocol is None or self.state != State.ONLINE:
            self.errorOccurred.emit("Not connected to the server.")
            return defer.succeed(None)

        def failed(failure):
            if failure.check(ServerError):
                self.errorOccurred.emit(failure.value.message)
            return None
        return self._protocol.request(action, value, **fields).addErrback(failed)

    @defer.inlineCallbacks
    def _every_page(self, action, key, value=""):
        """Every entry of a paged list (list_users, list_channels, list_members), following `next`;
        None if a page failed. A page refused for flooding is asked again a moment later:
        a large directory takes more pages than the flood budget's burst."""
        entries, cursor, refusals = [], None, 0
        while True:
            fields = {} if cursor is None else {"after": cursor}
            try:
                reply = yield self._protocol.request(action, value, **fields) \
                    if self._protocol is not None and self.state == State.ONLINE else None
            except ServerError as error:
                if error.message != TOO_FAST or refusals >= PAGE_RETRIES:
                    self.errorOccurred.emit(error.message)
                    return None
                refusals += 1
                yield deferLater(self._reactor, PAGE_RETRY_DELAY, lambda: None)
                continue
            except Exception:
                return None     # the connection closed: a reconnect lists again
            if reply is None:
                self.errorOccurred.emit("Not connected to the server.")
                return None
            entries.extend(reply[key])
            cursor = reply.get("next")
            if cursor is None:
                return entries

    @defer.inlineCallbacks
    def refresh_channels(self):
        channels = yield self._every_page("list_channels", "channels")
        if channels is not None:
            self.channels = [
                ChannelInfo(c["name"], c["private"], c["member"], c.get("request"))
                for c in channels]
            self.channelsChanged.emit(self.channels)

    @defer.inlineCallbacks
    def refresh_users(self):
        users = yield self._every_page("list_users", "users")
        if users is not None:
            self.users = [UserInfo(u["user"], u["status"]) for u in users]
            self.statuses = {u.user: u.status for u in self.users}
            self.usersChanged.emit(self.users)

    # --- a channel's members ------------------------------------------------------

    @defer.inlineCallbacks
    def refresh_roster(self):
        """List every member of the open channel (``roster_of``; ``membersChanged``)."""
        self._roster_call = None
        conversation = self.current
        if conversation is None or not conversation.is_channel:
            return
        self._roster_asked = self._clock.seconds()
        members = yield self._every_page("list_members", "members", conversation.name)
        if members is None or self.current != conversation:
            return
        self.rosters[conversation.name] = {
            m["user"]: Member(m["user"], m["status"], m["looking"]) for m in members}
        self._emit_members(conversation.name)

    def _want_roster(self):
        """Someone new looks at the open channel, or someone stopped: they may have joined
        or left it, so list its members again, at most every ROSTER_EVERY s."""
        if self._roster_call is not None and self._roster_call.active():
            return
        wait = (0 if self._roster_asked is None
                else self._roster_asked + ROSTER_EVERY - self._clock.seconds())
        if wait > 0:
            self._roster_call = self._clock.callLater(wait, self.refresh_roster)
        else:
            self.refresh_roster()

    # --- search ----------------------------------------------------------------------

    @defer.inlineCallbacks
    def search(self, query, before=None):
        """Messages with every word of ``query`` from the conversations I may read, a
        page of at most HISTORY_PAGE (older than the id ``before``, for the next page):
        ``searchResults`` (newest first) or ``searchFailed``. The server looks at a
        bounded number of matches per request, so a page of matches I may not read
        comes back empty with where to go on: then ask on, up to SEARCH_TRIES times."""
        query = query.strip()
        if self._protocol is None or self.state != State.ONLINE:
            self.searchFailed.emit(query, "Not connected to the server.")
            return
        appended, found = before is not None, []
        for _ in range(SEARCH_TRIES):
            older = {} if before is None else {"before": before}
            try:
                reply = yield self._protocol.request("search", query, limit=HISTORY_PAGE,
                                                     **older)
            except ServerError as error:
                self.searchFailed.emit(query, error.message)
                return
            except Exception:
                return  # the connection closed
            found = [ChatMessage.from_line(m, self.user) for m in reply["messages"]]
            before = reply.get("more_before")
            if found or before is None:
                break
        self.searchResults.emit(query, found, before, appended)

    @defer.inlineCallbacks
    def jump_to(self, message):
        """Open ``message``'s conversation and page its history back until the message is
        there; then ``jumpedTo`` with it as stored (edited since, perhaps)."""
        conversation = message.conversation
        if self.current != conversation:
            yield self.open_conversation(conversation)
        stored = self._messages.get(conversation, {})
        if message.id not in stored and self.current == conversation:
            self._loading_older = True  # scrolling up meanwhile must not load the same pages
            try:
                while message.id not in stored and self.has_more(conversation):
                    page = yield self._history(conversation, min(stored, default=None),
                                               CATCH_UP_PAGE)
                    if page is None or self.current != conversation:
                        return
                    messages, self._has_more[conversation] = page
                    if not messages:
                        break
                    self._store(conversation, messages)
                    stored = self._messages[conversation]
            finally:
                self._loading_older = False
            self.historyLoaded.emit(conversation)
        if self.current == conversation and message.id in stored:
            self.jumpedTo.emit(stored[message.id])

    # --- conversations and read markers ------------------------------------------

    @defer.inlineCallbacks
    def refresh_conversations(self):
        """Every conversation I take part in and its unread count, as the server has them
        (so they are right after a restart, and on a machine I never used)."""
        reply = yield self._request("list_conversations")
        if reply is None:
            return
        conversations = []
        for entry in reply["conversations"]:
            if "channel" in entry:
                conversation = Conversation.channel(entry["channel"])
            else:
                conversation = Conversation.private(entry["other_user"])
                self._private_unread[conversation] = entry["unread"]
            self._read[conversation] = entry["read"]
            conversations.append(conversation)
            self.unreadChanged.emit(conversation, 0 if conversation == self.current
                                    else entry["unread"])
        self.conversationsListed.emit(conversations)

    def _mark_read(self, conversation):
        """Tell the server I have read ``conversation`` up to the newest message shown.

        At most one mark every MARK_EVERY s per conversation (on the reactor's time): what
        arrives meanwhile is marked after that, so a busy channel does not spend the flood
        budget (and get my own messages refused) on one request per message."""
        newest = max(self._messages.get(conversation, {}), default=None)
        if newest is None or newest <= self._read.get(conversation, 0):
            return
        if conversation in self._marking:
            return      # (marked when the pause ends)
        self._read[conversation] = newest
        place = "channel" if conversation.is_channel else "other_user"
        self._request("mark_read", newest, **{place: conversation.name})
        self._marking[conversation] = self._reactor.callLater(
            MARK_EVERY, self._marked, conversation)

    def _marked(self, conversation):
        del self._marking[conversation]
        if self.current == conversation and self._session is not None:
            self._mark_read(conversation)

    def _on_read(self, line):
        """Another session of mine read a conversation: its badge follows."""
        if "channel" in line:
            conversation = Conversation.channel(line["channel"])
        else:
            conversation = Conversation.private(line["other_user"])
            self._private_unread[conversation] = line["unread"]
        self._read[conversation] = max(self._read.get(conversation, 0), line["read"])
        if conversation != self.current:
            self.unreadChanged.emit(conversation, line["unread"])

    # --- edits, deletions and typing -------------------------------------------

    def last_own_message(self, conversation):
        """My newest message there that is not deleted (what Up on an empty composer edits)."""
        mine = [m for m in self.messages(conversation) if m.sender == self.user and not m.deleted]
        return mine[-1] if mine else None

    def can_delete(self, message):
        return not message.deleted and (message.sender == self.user or self.is_admin)

    def edit_message(self, message, text):
        """Replace the text of one of my messages; returns an error to show, or None."""
        text = text.strip()
        problem = text_problem(text, "Type the new text, or press Escape to keep the message.")
        if problem:
            return problem
        self._request("edit_message", text, id=message.id)
        return None

    def delete_stored_message(self, message):
        """Delete a message the server has (mine; an admin: anyone's)."""
        return self._request("delete_message", message.id)

    def _changed(self, line, **changes):
        me = self.user
        if "channel" in line:
            conversation = Conversation.channel(line["channel"])
        else:
            conversation = Conversation.private(line["other_user"] if line["user"] == me
                                                else line["user"])
        stored = self._messages.get(conversation, {})
        if line["id"] in stored:
            stored[line["id"]] = message = dataclasses.replace(stored[line["id"]], **changes)
            self.messageChanged.emit(message)

    def _on_message_edited(self, line):
        self._changed(line, text=line["text"], edited=parse_time(line["edited"]))

    def _on_message_deleted(self, line):
        self._changed(line, text="", deleted=True)

    def typing(self):
        """I am typing in the open conversation: say so, at most every TYPING_EVERY s."""
        conversation, now = self.current, self._clock.seconds()
        if conversation is None or self.state != State.ONLINE or self._protocol is None:
            return
        if now - self._typing_sent.get(conversation, -TYPING_EVERY) < TYPING_EVERY:
            return
        self._typing_sent[conversation] = now
        place = "channel" if conversation.is_channel else "other_user"
        self._protocol.send({"typing": True, place: conversation.name})

    def typers(self, conversation):
        return sorted(self._typers.get(conversation, {}))

    def _on_typing(self, line):
        conversation = (Conversation.channel(line["channel"]) if "channel" in line
                        else Conversation.private(line["user"]))
        self._stop_typer(conversation, line["user"])
        if line.get("typing", True):
            self._typers.setdefault(conversation, {})[line["user"]] = self._clock.callLater(
                TYPING_SHOWN, self._stop_typer, conversation, line["user"])
        self.typersChanged.emit(conversation, self.typers(conversation))

    def _stop_typer(self, conversation, user, tell=True):
        call = self._typers.get(conversation, {}).pop(user, None)
        if call is not None:
            if call.active():
                call.cancel()
            if tell:
                self.typersChanged.emit(conversation, self.typers(conversation))

    @defer.inlineCallbacks
    def join(self, channel):
        """Join a public channel or ask to join a private one."""
        reply = yield self._request("join", channel)
        if reply is None:
            return
        if reply["status"] == "pending":
            # At once: an admin's decision may arrive while the channel list reloads,
            # and "pending" must not land after it.
            self.joinStatusChanged.emit(channel, "pending")
            yield self.refresh_channels()
        else:
            yield self.refresh_channels()  # first, so that listeners see me as a member
            self.joinStatusChanged.emit(channel, reply["status"])

    @defer.inlineCallbacks
    def leave(self, channel):
        """Stop being a member of ``channel``; ``leftChannel`` then the new channel list follow."""
        reply = yield self._request("leave", channel)
        if reply is not None:
            channel = reply.get("channel", channel)
            if self.current == Conversation.channel(channel):
                self.current = None
                self.send_presence()
            self.members.pop(channel, None)
            self.rosters.pop(channel, None)
            self._messages.pop(Conversation.channel(channel), None)
            self._has_more.pop(Conversation.channel(channel), None)
            self.leftChannel.emit(channel)
            yield self.refresh_channels()

    @defer.inlineCallbacks
    def open_conversation(self, conversation):
        """Look at a conversation: tell the server at once, then load what is new."""
        previous, self.current = self.current, conversation
        if previous is not None and previous != conversation and previous.is_channel:
            self.members.pop(previous.name, None)  # the server stops telling me who is there
            self.rosters.pop(previous.name, None)
        self._loading_older = False
        self.conversationOpened.emit(conversation)
        self.send_presence()
        if conversation.is_channel:
            member = any(c.name == conversation.name and c.member for c in self.channels)
            if not member:
                return
            self.refresh_roster()
        else:
            self._private_unread.pop(conversation, None)
        self.unreadChanged.emit(conversation, 0)
        yield self._catch_up(conversation)

    @defer.inlineCallbacks
    def _catch_up(self, conversation):
        """Fetch the latest page, and for a conversation seen before, page back until
        the messages missed meanwhile (e.g. while disconnected) are all there."""
        known = self._messages.get(conversation)
        newest_known = max(known) if known else None
        before = None
        while True:
            page = yield self._history(conversation, before,
                                       CATCH_UP_PAGE if newest_known else HISTORY_PAGE)
            if page is None:
                return
            messages, has_more = page
            if before is None and (known is None or conversation not in self._has_more):
                self._has_more[conversation] = has_more
            self._store(conversation, messages)
            if newest_known is None or not has_more or not messages:
                break
            if messages[0].id <= newest_known:
                break
            before = messages[0].id
        if self.current == conversation:
            self.historyLoaded.emit(conversation)
            self._mark_read(conversation)

    @defer.inlineCallbacks
    def load_older(self):
        """Fetch the page before the oldest message shown (the user scrolled up)."""
        conversation = self.current
        if conversation is None or self._loading_older or not self.has_more(conversation):
            return
        oldest = min(self._messages.get(conversation, {}), default=None)
        self._loading_older = True
        try:
            page = yield self._history(conversation, oldest, HISTORY_PAGE)
        finally:
            self._loading_older = False
        if page is not None and self.current == conversation:
            messages, self._has_more[conversation] = page
            self._store(conversation, messages)
            self.historyLoaded.emit(conversation)

    @defer.inlineCallbacks
    def _history(self, conversation, before, limit):
        fields = {"limit": limit}
        if before is not None:
            fields["before"] = before
        action = "get_channel" if conversation.is_channel else "get_private"
        reply = yield self._request(action, conversation.name, **fields)
        if reply is None:
            return None
        return [ChatMessage.from_line(m, self.user) for m in reply["messages"]], reply["has_more"]

    def _store(self, conversation, messages):
        stored = self._messages.setdefault(conversation, {})
        for message in messages:
            stored[message.id] = message
        settled = [message for message in messages if self._settle(message)]  # (all of them)
        if settled:
            self.outboxChanged.emit()

    def send_text(self, text):
        """Send what the user typed to the open conversation; ``/command`` runs a command.

        Returns an error message to show next to the composer, or None once sent.
        """
        text = text.strip()
        problem = text_problem(text, "Type a message first.")
        if problem:
            return problem
        if text.startswith("/"):
            name, _, argument = text[1:].partition(" ")
            if name.lower() in CLIENT_COMMANDS:
                return getattr(self, f"_command_{name.lower()}")(argument.strip())
            self.run_command(text[1:])
            return None
        return self._say(text)

    def _say(self, text):
        """Into the outbox first (shown as "sending…"), then to the server if connected."""
        if self.current is None:
            return "Open a channel or a conversation first."
        self.outbox.add(self.current, text)
        self.outboxChanged.emit()
        self._send_next()
        return None

    # --- the outbox: what was typed, until the server has stored it ----------

    def _send_outbox(self):
        """After each login: (re)send what waits, in the order typed."""
        self._cancel_resend()
        self._send_next()

    def _send_next(self):
        """Send the oldest unanswered outbox message with its nonce, one at a time, so the
        server stores them in the order typed. A resend of one already stored is answered
        with the original id, so sending again after a lost connection is safe."""
        if (self._protocol is None or self.state != State.ONLINE or self._in_flight is not None
                or self._resend_call is not None):
            return
        message = next(iter(self.outbox.to_send()), None)
        if message is None:
            return
        self._in_flight = message.nonce
        # Once it has gone out, the next send is a resend, which a server must not spool
        # blindly during a database outage.
        resend = {"resend": True} if message.sent else {}
        self.outbox.mark_sent(message.nonce)
        target = message.conversation
        if target.is_channel:
            sent = self._protocol.request("channel_message", message.text,
                                          channel=target.name, nonce=message.nonce, **resend)
        else:
            sent = self._protocol.request("private_message", message.text,
                                          other_user=target.name, nonce=message.nonce, **resend)

        def answered(result):
            if self._in_flight == message.nonce:
                self._in_flight = None
            return result

        def acknowledged(reply):
            self._acknowledged(message, reply)
            self._send_next()

        def refused(failure):
            if not failure.check(ServerError):
                return  # the connection was lost: sent again after the next login
            reason = failure.value.message
            if reason in TRANSIENT_REFUSALS:
                self._resend_call = self._clock.callLater(RESEND_DELAY, self._resend)
                return
            if message.nonce in self.outbox:
                self.outbox.replace(dataclasses.replace(message, error=reason))
                self.outboxChanged.emit()
            self._send_next()
        sent.addBoth(answered).addCallbacks(acknowledged, refused)

    def _resend(self):
        self._resend_call = None
        self._send_next()

    def _cancel_resend(self):
        if self._resend_call is not None and self._resend_call.active():
            self._resend_call.cancel()
        self._resend_call = None

    def _acknowledged(self, pending, reply):
        """The server has the message: show it as stored, unless its relay already did."""
        if pending.nonce not in self.outbox or self._session is None:
            return
        self._deliver(ChatMessage(reply["id"], parse_time(reply["time"]), self.user,
                                  pending.text, pending.conversation, pending.nonce))

    def _settle(self, message):
        """Take my pending copy of a stored ``message`` out of the outbox; whether there was one."""
        return (message.nonce is not None and message.sender == self.user
                and self.outbox.remove(message.nonce) is not None)

    def retry_message(self, nonce):
        """Send a refused message again (the user clicked Retry)."""
        message = self.outbox.get(nonce)
        if message is not None and message.error is not None:
            self.outbox.replace(dataclasses.replace(message, error=None))
            self.outboxChanged.emit()
            self._send_next()

    def delete_message(self, nonce):
        """Drop an unsent message (the user clicked Delete)."""
        if self.outbox.remove(nonce) is not None:
            self.outboxChanged.emit()

    def _command_me(self, action):
        if not action:
            return "Say what you do after /me, for example: /me waves"
        return self._say(ACTION_FORMAT.format(user=self.user, action=action))

    def _command_leave(self, channel):
        channel = channel.lstrip("#")
        if not channel:
            if self.current is None or not self.current.is_channel:
                return "Open the channel you want to leave, or name it: /leave general"
            channel = self.current.name
        self.leave(channel)
        return None

    def _command_help(self, _):
        self.show_help()
        return None

    @defer.inlineCallbacks
    def show_help(self):
        """What one can type, in words (``commandResult``); admins also get the server's commands."""
        lines = ["Commands:"] + [f"  {usage} — {what.format(user=self.user)}"
                                 for usage, what in CLIENT_COMMANDS.values()]
        if self.is_admin:
            reply = yield self._request("command", "help")
            if reply is not None:
                lines.append("Admin commands:")
                lines += [f"  /{line.replace(' - ', ' — ', 1)}"
                          for line in _result_text(reply.get("result", "")).splitlines()
                          if not line.startswith("help ")]
        lines.append(HELP_FOOTER)
        self.commandResult.emit("\n".join(lines))

    def run_command(self, command):
        """A command typed as text (``/create lobby``); answers with ``commandResult``."""
        return self._admin("command", command)

    @defer.inlineCallbacks
    def _admin(self, action, value="", **fields):
        """An admin action; its readable result is shown through ``commandResult``."""
        reply = yield self._request(action, value, **fields)
        if reply is not None:
            self.commandResult.emit(_result_text(reply.get("result", "")))
        return reply

    # --- administration (the structured forms: no text to mis-parse) --------

    @defer.inlineCallbacks
    def refresh_requests(self):
        """Pending join requests (admins): ``requests`` lists them."""
        reply = yield self._request("requests")
        if reply is None:
            return
        self.pending_requests = {
            r["id"]: JoinRequest(r["id"], r["channel"], r["user"])
            for r in reply.get("requests", []) if r.get("status", "pending") == "pending"}
        self.joinRequestsChanged.emit(list(self.pending_requests.values()))

    @defer.inlineCallbacks
    def decide_request(self, request, accept):
        reply = yield self._admin("accept" if accept else "reject", request.user,
                                  channel=request.channel)
        if reply is not None:
            self.pending_requests.pop(request.id, None)
            self.joinRequestsChanged.emit(list(self.pending_requests.values()))

    def kick(self, user, reason):
        return self._admin("kick", user, reason=reason)

    def ban(self, user, duration, reason):
        """Ban ``user`` for ``duration`` ("2h", "7d"; "" for ever), whatever the reason says."""
        return self._admin("ban", user, duration=duration or None, reason=reason)

    # --- what the server says on its own ------------------------------------

    def server_line(self, line):
        if "event" in line:
            handler = getattr(self, f"_on_{line['event']}", None)
            if handler is not None:
                handler(line)
        elif "channel_message" in line or "private_message" in line:
            self._on_message(line)
        elif "error" in line:
            self.errorOccurred.emit(line["error"])

    def _on_message(self, line):
        if self._session is None:
            return
        self._deliver(ChatMessage.from_line(line, self.user))

    def _deliver(self, message):
        """A stored message, live: relayed, or my own acknowledged one."""
        conversation = message.conversation
        settled = self._settle(message)
        stored = self._messages.get(conversation)
        if stored is not None and message.id in stored:
            if settled:
                self.outboxChanged.emit()
            return
        if stored is not None:
            stored[message.id] = message
        if message.sender in self._typers.get(conversation, {}):
            self._stop_typer(conversation, message.sender)  # the message they were typing
        self.messageReceived.emit(message)
        if conversation == self.current and stored is not None and message.sender != self.user:
            self._mark_read(conversation)
        if settled:
            self.outboxChanged.emit()
        if message.is_for(self.user):
            self.messageForMe.emit(message)
        if not conversation.is_channel and conversation != self.current and message.sender != self.user:
            count = self._private_unread.get(conversation, 0) + 1
            self._private_unread[conversation] = count
            self.unreadChanged.emit(conversation, count)

    def _on_members(self, line):
        self.members[line["channel"]] = {
            m["user"]: Member(m["user"], m["status"]) for m in line["members"]}
        self._emit_members(line["channel"])

    def _on_member(self, line):
        channel, user, status = line["channel"], line["user"], line["status"]
        members = self.members.setdefault(channel, {})
        if status in ("left", "offline"):
            members.pop(user, None)
        else:
            members[user] = Member(user, status)
        roster = self.rosters.get(channel)
        if roster is not None:
            if status != "left" and user in roster:
                roster[user] = Member(user, status, False)  # (looking or not: members_of says)
            elif self.current == Conversation.channel(channel):
                self._want_roster()  # a new member, or one who may have left the channel
        self._emit_members(channel)

    def _emit_members(self, channel):
        self.membersChanged.emit(channel, self.members_of(channel))

    def _on_peer(self, line):
        self.statuses[line["other_user"]] = line["status"]
        self.peerStatusChanged.emit(line["other_user"], line["status"])

    def _on_unread(self, line):
        self.unreadChanged.emit(Conversation.channel(line["channel"]), line["count"])

    def _on_join_request(self, line):
        request = JoinRequest(line["id"], line["channel"], line["user"])
        self.pending_requests[request.id] = request
        self.joinRequestsChanged.emit(list(self.pending_requests.values()))

    def _on_request_decided(self, line):
        self.requestDecided.emit(line["channel"], line["status"], line.get("decided_by") or "")
        self.refresh_channels()

    def _on_removed_from_channel(self, line):
        self.removedFromChannel.emit(line["channel"], line.get("by", ""), "removed")
        self.refresh_channels()

    def _on_channel_deleted(self, line):
        self.removedFromChannel.emit(line["channel"], line.get("by", ""), "deleted")
        self.refresh_channels()

    def _on_disconnect(self, line):
        kind, reason = line.get("kind", ""), line.get("reason", "")
        if kind == "shutdown":
            return  # The server is restarting: let the connection drop and reconnect.
        if self._session is None:
            # Refused before login (a banned address): the login form shows why.
            self._farewell = reason
            return
        self._end_session(kind, reason)


def _reason(error):
    return getattr(error, "message", None) or str(error) or type(error).__name__


def _ssl_reason(error):
    """OpenSSL's own words, e.g. 'certificate verify failed'."""
    reasons = [part[2] for part in error.args[0] if len(part) == 3] if error.args and isinstance(
        error.args[0], list) else []
    return ", ".join(r for r in reasons if r) or str(error)


def _result_text(result):
    return result if isinstance(result, str) else repr(result)
