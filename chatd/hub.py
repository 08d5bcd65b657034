"""The running server's shared state: sessions, the name -> IP dictionary,
channels and their members, and message delivery.

Protocol instances hold no shared state; they call the hub. The hub keeps the
account directory and channel membership in memory (loaded at start, written
through to SQL), so nothing on the message path waits for the database.
"""

from collections import Counter, defaultdict

from twisted.internet import defer
from twisted.logger import Logger

from chatd.auth import ChatError, check_channel_name
from chatd.fanout import LocalFanout, encode
from chatd.presence import OFFLINE, Presence, channel_topic
from chatd.rules import channel_key, message_problem

log = Logger()


class Session:
    """One logged-in user on one connection."""

    def __init__(self, name, ip, connection, accounts):
        self.name = name
        self.ip = ip
        self.connection = connection
        self.accounts = accounts
        self.status = OFFLINE
        self.viewing = None
        self.last_seen = None
        self.timeout_call = None
        self.unread = defaultdict(int)

    def write(self, line):
        self.connection.write_line(line)

    def send(self, payload):
        self.write(encode(payload))

    @property
    def role(self):
        return self.accounts.role_of(self.name)

    @property
    def is_admin(self):
        return self.accounts.is_admin(self.name)


class Channel:
    __slots__ = ("id", "name", "private", "members")

    def __init__(self, id, name, private, members=()):
        self.id, self.name, self.private = id, name, bool(private)
        self.members = set(members)


class Hub:
    def __init__(self, store, accounts, *, max_message, presence_timeout, clock=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.store = store
        self.accounts = accounts    # chatd.accounts.Accounts: names and roles
        self.clock = clock
        self.max_message = max_message
        self.fanout = LocalFanout()
        self.presence = Presence(self, timeout=presence_timeout)
        self.sessions = {}      # user name -> Session
        self.ips = {}           # user name -> current (latest) IP, as the notes ask
        self.channels = {}      # channel name -> Channel
        self.connections = set()
        self.connections_per_ip = Counter()     # IP -> open connections (for the per-IP limit)
        self.moderation = None  # chatd.moderation.Moderation, set by ChatServer

    @defer.inlineCallbacks
    def load(self):
        """Read the channels and their members into memory (once, at start)."""
        by_id = {}
        for channel_id, name, private in (yield self.store.all_channels()):
            by_id[channel_id] = self.channels[name] = Channel(channel_id, name, private)
        for channel_id, user_name in (yield self.store.all_memberships()):
            if channel_id in by_id:
                by_id[channel_id].members.add(self.account_name(user_name, must_exist=False))

    # -- accounts ----------------------------------------------------------

    def account_name(self, name, must_exist=True):
        """The name as registered, whatever case `name` is given in."""
        return self.accounts.name_of(name, must_exist)

    def status_of(self, name):
        session = self.sessions.get(name)
        return OFFLINE if session is None else session.status

    def directory(self, after=""):
        """Everyone one can write to privately (bans filtered by moderation), in order, from
        the first name whose folded form sorts after `after`: (cursor, entry) pairs."""
        return ((key, {"user": name, "status": self.status_of(name)})
                for key, name in self.accounts.names_after(after)
                if self.can_receive_private(name))

    def can_receive_private(self, name):
        """Banned users are out of the directory and get no private messages."""
        return self.moderation.can_receive_private(name)

    # -- connections and sessions ------------------------------------------

    def add_connection(self, connection):
        self.connections.add(connection)
        self.connections_per_ip[connection.ip] += 1

    def remove_connection(self, connection):
        if connection in self.connections:
            self.connections.remove(connection)
            self.connections_per_ip[connection.ip] -= 1
            if not self.connections_per_ip[connection.ip]:
                del self.connections_per_ip[connection.ip]

    def start_session(self, connection, name, ip):
        """Log `name` in on `connection`; the newest login wins over an older one."""
        previous = self.sessions.get(name)
        if previous is not None:
            previous.connection.disconnect(
                "replaced", f"You logged in again from {ip}; this connection is closed.")
            self.end_session(previous)
        session = Session(name, ip, connection, self.accounts)
        self.sessions[name] = session
        self.ips[name] = ip
        self.presence.session_started(session)
        return session

    def end_session(self, session):
        if self.sessions.get(session.name) is session:
            del self.sessions[session.name]
            self.presence.session_ended(session)

    # -- channels ----------------------------------------------------------

    def channel(self, name):
        channel = self.channels.get(channel_key(name))
        if channel is None:
            raise ChatError(f"There is no channel named {name!r}. "
                            "Use list_channels to see the channels.")
        return channel

    def readable_channel(self, session, name):
        channel = self.channel(name)
        if session.name not in channel.members:
            if channel.private:
                raise ChatError(f"#{channel.name} is private; ask to join it first.")
            raise ChatError(f"You are not a member of #{channel.name}; join it first.")
        return channel

    def channels_of(self, name):
        return sorted(c.name for c in self.channels.values() if name in c.members)

    @defer.inlineCallbacks
    def join(self, session, name):
        channel = self.channel(name)
        if session.name in channel.members:
            return {"channel": channel.name, "status": "member"}
        if channel.private:
            result = yield self.request_to_join(session, channel)
            return result
        yield self.store.add_member(channel.id, session.name)
        channel.members.add(session.name)
        return {"channel": channel.name, "status": "joined"}

    def request_to_join(self, session, channel):
        """A private channel: store a pending request and tell the admins."""
        return self.moderation.request_to_join(session, channel)

    @defer.inlineCallbacks
    def leave(self, session, name):
        channel = self.readable_channel(session, name)
        yield self.store.remove_member(channel.id, session.name)
        yield self.remove_member(channel, session.name)
        return {"channel": channel.name}

    def remove_member(self, channel, name):
        """Drop `name` from the in-memory channel and stop showing it there."""
        channel.members.discard(name)
        session = self.sessions.get(name)
        if session is not None:
            session.unread.pop(channel.name, None)
            if session.viewing == channel_topic(channel.name):
                self.presence.look(session, session.status, None)
        return defer.succeed(None)

    @defer.inlineCallbacks
    def create_channel(self, name, private, created_by):
        check_channel_name(name)
        if name in self.channels:
            raise ChatError(f"#{name} already exists.")
        try:
            channel_id = yield self.store.create_channel(name, private, created_by)
        except Exception as e:
            if self.store.engine.is_integrity_error(e):    # created meanwhile
                raise ChatError(f"#{name} already exists.")
            raise
        self.channels[name] = channel = Channel(channel_id, name, private)
        return channel

    # -- messages ----------------------------------------------------------

    def _check_text(self, text):
        if not text.strip():
            raise ChatError("The message is empty.")
        too_long = message_problem(text, self.max_message)
        if too_long:
            raise ChatError(too_long)

    def channel_message(self, session, channel_name, text):
        """Relay to the channel's viewers, notify its other online members, log it."""
        self._check_text(text)
        channel = self.readable_channel(session, channel_name)
        message = self.store.new_message(session.name, text, channel=channel.name,
                                         channel_id=channel.id)
        topic = channel_topic(channel.name)
        self.fanout.publish(topic, message.to_wire())
        viewers = self.fanout.subscribers(topic)
        for member in channel.members:
            other = self.sessions.get(member)
            if other is None or other.viewing is None or member in viewers:
                continue
            other.unread[channel.name] += 1
            other.send({"event": "unread", "channel": channel.name,
                        "count": other.unread[channel.name]})
        return message

    def private_message(self, session, other_user, text):
        """Deliver live to the recipient (and echo to the sender), log it."""
        self._check_text(text)
        recipient = self.account_name(other_user)
        if not self.can_receive_private(recipient):
            raise ChatError(f"{recipient} is banned and cannot receive messages.")
        message = self.store.new_message(session.name, text, recipient=recipient)
        line = encode(message.to_wire())
        target = self.sessions.get(recipient)
        if target is not None:
            target.write(line)
        if target is not session:
            session.write(line)
        return message
