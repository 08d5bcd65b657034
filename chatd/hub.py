"""The running server's shared state: sessions, the name -> IP dictionary,
channels and their members; every delivery goes through the bus (chatd/bus.py).

Protocol instances hold no shared state; they call the hub. The hub keeps the
account directory and channel membership in memory (loaded at start, written
through to SQL), so nothing on the message path waits for the database.
"""

import contextlib
import ipaddress
import itertools
import json
import uuid
from collections import defaultdict
from functools import lru_cache

from twisted.internet import defer
from twisted.logger import Logger

from chatd.addresses import in_network
from chatd.auth import ChatError, check_channel_name
from chatd.bus import (
    ADMINS, CONNECTIONS, STATE, LocalBus, channel_topic, encode, members_topic, peer_topic,
    user_topic,
)
from chatd.presence import OFFLINE, Presence
from chatd.rules import MAX_NONCE, channel_key, is_blank, is_mentioned, message_problem
from chatd.store import Message, utcnow

log = Logger()


_SESSION_NUMBERS = itertools.count(1)


@lru_cache(maxsize=4096)
def _unread_prefix(channel):
    """The `unread` event line for `channel` up to its count: encoded once per channel,
    not once per member looking elsewhere and message."""
    line = encode({"event": "unread", "channel": channel, "count": 0})
    return line[:-len(b"0}\n")]


@lru_cache(maxsize=64)
def _channel_text(line):
    """The text of a relayed channel message line, decoded once for all its receivers
    (they get the same bytes object, whose hash Python keeps)."""
    return json.loads(line)["channel_message"]


def _as_stored(stored):
    """A save's (message as stored, is_new): the message (a resend's is the original)."""
    return stored[0]


def unread_line(channel, count):
    """Same bytes as encode({"event": "unread", "channel": channel, "count": count})."""
    return b"%s%d}\n" % (_unread_prefix(channel), count)


class Session:
    """One logged-in user on one connection, and the bus subscriber for it.

    It listens to ("user", name), ("members", channel) for each of its
    channels, ("admins",) while an admin, and (through presence) the place it
    looks at. What arrives on a members topic is shown if the session looks at
    that channel, else counted as unread: the decision is made here, per
    session, so a message costs one visit per online member, not a scan of
    the channel's members.
    """

    def __init__(self, hub, name, ip, connection, accounts):
        # Unique across nodes, for the bus: this node's id and a count (a uuid4 per
        # login cost a getrandom call, which lets the pool threads take the GIL).
        self.id = f"{hub.id}.{next(_SESSION_NUMBERS)}"
        self.hub = hub
        self.name = name
        self.ip = ip
        self.connection = connection
        self.accounts = accounts
        self.status = OFFLINE
        self.viewing = None     # the place it looks at: ("channel", c), ("peer", n) or None
        self.last_seen = None   # when presence last heard from it
        self.unread = defaultdict(int)
        self.typing = {}        # ("channel", c) or ("other_user", n) -> when last announced
        self.topics = set()
        self.replaced = None    # closed by a newer login: "here", or "elsewhere" (another node)
        self.login_seq = None   # in a cluster: the stream sequence of its login event

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

    @property
    def viewing(self):
        return self._viewing

    @viewing.setter
    def viewing(self, place):
        self._viewing = place
        # The members topic whose messages this session shows (see deliver).
        self._showing = None if place is None or place[0] != "channel" else members_topic(place[1])

    # -- on the bus ----------------------------------------------------------

    def listen(self, topic):
        self.topics.add(topic)
        self.hub.bus.subscribe(topic, self)

    def stop_listening(self, topic):
        self.topics.discard(topic)
        self.hub.bus.unsubscribe(topic, self)

    def stop_listening_to_all(self):
        for topic in list(self.topics):
            self.stop_listening(topic)

    def deliver(self, topic, line):
        if topic == self._showing or topic[0] != "members":
            self.connection.write_line(line)
        else:
            channel = topic[1]
            count = self.unread[channel] = self.unread[channel] + 1
            if b"@" in line and is_mentioned(_channel_text(line), self.name):
                self.send({"event": "unread", "channel": channel, "count": count,
                           "mention": True})
            else:
                self.connection.write_line(unread_line(channel, count))

    def deliver_many(self, topic, lines, chunk):
        if topic == self._showing or topic[0] != "members":
            self.connection.write_lines(lines, chunk)
        else:
            for line in lines:
                self.deliver(topic, line)

    def control(self, topic, action, data):
        getattr(self, "control_" + action)(**data)

    def control_close(self, kind, reason, keep=None, here=False, ban=None):
        """Say why and close this session's connection; `keep` names a session spared
        (the newest login, which closes the older ones of the same user; `here` when it
        is on this node); `ban` is the id of the ban it enforces (a late close of a ban
        lifted since does not act: chatd/cluster.py)."""
        if self.id != keep:
            # The newer session announces the status: this one goes without "offline".
            self.replaced = None if keep is None else "here" if here else "elsewhere"
            if self.connection.login_pending:   # its login reply goes out first
                self.connection.close_after_login = (kind, reason)
            else:
                self.connection.disconnect(kind, reason)
            self.hub.end_session(self)

    def control_role(self, role):
        """The role changed (`role` reads it from the accounts): admins hear admin notices."""
        if role == "admin":
            self.listen(ADMINS)
        else:
            self.stop_listening(ADMINS)

    def control_joined(self, channel):
        self.listen(members_topic(channel))

    def control_read(self, by, read, unread, mentions, channel=None, other_user=None):
        """A session of this user marked a conversation read (chatd/conversations.py):
        the channel's count follows, and the other sessions are told."""
        if channel is not None:
            self.unread[channel] = unread
        if self.id != by:
            place = {"channel": channel} if channel is not None else {"other_user": other_user}
            self.send(dict({"event": "read"}, **place, read=read, unread=unread,
                           mentions=mentions))

    def control_typing(self, user, typing):
        """`user` is typing to this session's user: shown only while looking at them."""
        if self.viewing == peer_topic(user):
            self.send({"event": "typing", "user": user, "typing": typing})

    def control_left(self, channel):
        """No longer a member: no more messages or unread counts, and not looking there."""
        self.stop_listening(members_topic(channel))
        self.unread.pop(channel, None)
        if self.viewing == channel_topic(channel):
            self.hub.presence.look(self, self.status, None)


class Channel:
    __slots__ = ("id", "name", "private", "members")

    def __init__(self, id, name, private, members=()):
        self.id, self.name, self.private = id, name, bool(private)
        self.members = set(members)


class Hub:
    def __init__(self, store, accounts, *, max_message, presence_timeout, clock=None,
                 bus=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.store = store
        if store is not None:
            store.messages.on_stored = self.relay
        self.accounts = accounts    # chatd.accounts.Accounts: names and roles
        accounts.role_changes.append(self.role_changed)
        self.clock = clock
        self.max_message = max_message
        self.id = uuid.uuid4().hex      # this node, as the subscriber to ("connections",)
        self.bus = LocalBus() if bus is None else bus
        self.bus.subscribe(CONNECTIONS, self)
        self.presence = Presence(self, timeout=presence_timeout)
        self.sessions = {}      # user name -> Session
        self.ips = {}           # user name -> current (latest) IP, as the notes ask
        self.elsewhere = {}     # user name -> (node, status) if online on another node
        # Callables (name, node) told when a user online on another node logs in here.
        self.moved_here = []
        self.channels = {}      # channel name -> Channel
        # (topic, action, data) of the control of each change made here in memory and
        # being written to SQL (see deciding).
        self.writing = []
        self.connections = set()
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

    @contextlib.contextmanager
    def deciding(self, topic, action, data):
        """Around a change made in memory before its SQL write (so that a second admin
        meanwhile is refused), up to its control (`topic`, `action`, `data`) once written:
        a reload from SQL meanwhile (chatd/cluster.py) reads it as it was before, so it
        leaves alone what this node decided."""
        change = (topic, action, data)
        self.writing.append(change)
        try:
            yield
        finally:
            self.writing.remove(change)

    # -- accounts ----------------------------------------------------------

    def role_changed(self, name, role, bus=None):
        """Tell `name`'s sessions their new role. `bus` is the hub's unless given
        (chatd/cluster.py gives its own subscribers' only, for a change read from SQL)."""
        (self.bus if bus is None else bus).control(user_topic(name), "role", {"role": role})

    def account_name(self, name, must_exist=True):
        """The name as registered, whatever case `name` is given in."""
        return self.accounts.name_of(name, must_exist)

    def status_of(self, name):
        session = self.sessions.get(name)
        if session is None:
            return self.elsewhere.get(name, (None, OFFLINE))[1]
        return session.status

    def is_online(self, name):
        """Logged in here or on another node."""
        return name in self.sessions or name in self.elsewhere

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

    def remove_connection(self, connection):
        if connection in self.connections:
            self.connections.remove(connection)

    def control(self, topic, action, data):
        getattr(self, "control_" + action)(**data)

    def connections_in(self, network):
        return [c for c in list(self.connections) if in_network(c.ip, network)]

    def control_close(self, network, kind, reason, ban=None):
        """("connections",): say why and close this node's connections from `network`
        (`ban` as in Session.control_close)."""
        for connection in self.connections_in(ipaddress.ip_network(network)):
            connection.disconnect(kind, reason)

    def start_session(self, connection, name, ip):
        """Log `name` in on `connection`; the newest login wins over older ones."""
        session = Session(self, name, ip, connection, self.accounts)
        replaced = {"kind": "replaced", "keep": session.id,
                    "reason": f"You logged in again from {ip}; this connection is closed."}
        older = self.sessions.get(name)
        if older is not None:   # at once here; the bus tells the sessions on other nodes
            older.control_close(**replaced, here=True)
        self.bus.control(user_topic(name), "close", replaced)
        self.sessions[name] = session
        where = self.elsewhere.pop(name, None)  # its session there closes (or its node is dead)
        if where is not None:
            for told in self.moved_here:
                told(name, where[0])
        self.ips[name] = ip
        self.bus.control(STATE, "login", {"user": name, "ip": ip, "session": session.id})
        session.listen(user_topic(name))
        if session.is_admin:
            session.listen(ADMINS)
        for channel in self.channels_of(name):
            session.listen(members_topic(channel))
        self.presence.session_started(session)
        return session

    def end_session(self, session):
        if self.sessions.get(session.name) is session:
            del self.sessions[session.name]
            self.presence.session_ended(session)
        session.stop_listening_to_all()

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
        self.add_member(channel, session.name)
        return {"channel": channel.name, "status": "joined"}

    def request_to_join(self, session, channel):
        """A private channel: store a pending request and tell the admins."""
        return self.moderation.request_to_join(session, channel)

    @defer.inlineCallbacks
    def leave(self, session, name):
        channel = self.readable_channel(session, name)
        self.accounts.check_change()
        yield self.store.remove_member(channel.id, session.name)
        yield self.remove_member(channel, session.name)
        return {"channel": channel.name}

    def add_member(self, channel, name, bus=None):
        """Add `name` to the in-memory channel; their sessions start receiving it. `bus`
        as in role_changed."""
        channel.members.add(name)
        (self.bus if bus is None else bus).control(user_topic(name), "joined",
                                                   {"channel": channel.name})

    def remove_member(self, channel, name, notice=None, bus=None):
        """Drop `name` from the in-memory channel and stop showing it there; `notice` (an
        event, without its channel) tells their client why. `bus` as in role_changed."""
        bus = self.bus if bus is None else bus
        channel.members.discard(name)
        bus.control(user_topic(name), "left", {"channel": channel.name})
        if notice is not None:
            bus.publish(user_topic(name), dict(notice, channel=channel.name))
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
        self.bus.control(STATE, "channel", {"id": channel_id, "name": name,
                                            "private": channel.private})
        return channel

    # -- messages ----------------------------------------------------------

    def check_text(self, text):
        """A message's text (new or edited): not blank, not too long."""
        if is_blank(text):
            raise ChatError("The message is empty.")
        too_long = message_problem(text, self.max_message)
        if too_long:
            raise ChatError(too_long)

    def _check_nonce(self, nonce):
        if nonce is not None and not 1 <= len(nonce) <= MAX_NONCE:
            raise ChatError(f"A nonce is 1 to {MAX_NONCE} characters; this one has {len(nonce)}.")

    def channel_message(self, session, channel_name, text, nonce=None, resend=False):
        """Store, then deliver: fires with the message as stored once it is durable."""
        self.check_text(text)
        self._check_nonce(nonce)
        channel = self.readable_channel(session, channel_name)
        message = Message(None, session.name, text, utcnow(), channel=channel.name,
                          channel_id=channel.id, nonce=nonce, resend=resend)
        return self.store.save_message(message).addCallback(_as_stored)

    def private_message(self, session, other_user, text, nonce=None, resend=False):
        """Store, then deliver to the recipient (and echo to the sender)."""
        self.check_text(text)
        self._check_nonce(nonce)
        recipient = self.account_name(other_user)
        if not self.can_receive_private(recipient):
            raise ChatError(f"{recipient} is banned and cannot receive messages.")
        message = Message(None, session.name, text, utcnow(), recipient=recipient, nonce=nonce,
                          resend=resend)
        return self.store.save_message(message).addCallback(_as_stored)

    def relay(self, messages):
        """Messages just made durable (the message log calls this before it answers their
        senders; a resend of a stored nonce is not among them), in id order. A channel
        message goes to the channel's online members: those looking at it get it, the
        others an `unread` event (each session decides, see Session). A private message
        goes to the recipient's sessions and the sender's (every client renders from
        relays). One topic's messages are published together, so a viewer of a busy
        channel gets a commit's messages in one write."""
        topics = {}
        for message in messages:
            payload = message.to_wire()
            if message.channel is not None:
                topics.setdefault(members_topic(message.channel), []).append(payload)
            else:
                topics.setdefault(user_topic(message.recipient), []).append(payload)
                if message.sender != message.recipient:
                    topics.setdefault(user_topic(message.sender), []).append(payload)
        for topic, payloads in topics.items():
            self.bus.publish_many(topic, payloads)
