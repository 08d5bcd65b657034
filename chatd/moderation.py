"""Moderation: admin roles, private channels and join requests, kicks, bans, logs.

One code path for both front ends: the in-chat `command` action (parsed by
`run_command`) and the SSH manhole (chatd/manhole.py) call the same
`Moderation` methods, which check, act, write SQL and write the audit log.
Active bans and the latest join request of each (user, channel) live in
memory (loaded at start, written through to SQL), so the connection, login and
list_channels paths never wait for the database. A ban's expiry is a callLater
on the hub's clock.
"""

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from twisted.internet import defer
from twisted.logger import Logger

from chatd.auth import ChatError
from chatd.bus import ADMINS, CONNECTIONS, user_topic
from chatd.store import Message, db_time, parse_db_time, utcnow, wire_time

log = Logger()

DURATION_RULE = re.compile(r"(\d+)([smhdw])\Z")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
REASON_MAX = 300
LOG_LIMIT_DEFAULT, LOG_LIMIT_MAX = 50, 500
EARLIEST, LATEST = datetime(1970, 1, 1), datetime(9999, 12, 31)


@dataclass(frozen=True)
class Actor:
    """Who performs an admin action: a logged-in admin, or the manhole (no account, no IP)."""
    name: str
    ip: str | None = None
    is_user: bool = True

    def is_self(self, name):
        return self.is_user and name.casefold() == self.name.casefold()


MANHOLE = Actor("manhole", is_user=False)


def human_time(dt):
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC")


MAX_BAN_SECONDS = 100 * 365 * 86400      # longer overflows datetime; use a permanent ban


def parse_duration(value):
    """Seconds from '30m', '2h', '7d' (or a number of seconds); None means permanent."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and \
            0 < value <= MAX_BAN_SECONDS:
        return value
    match = DURATION_RULE.match(value) if isinstance(value, str) else None
    seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2)] if match else 0
    if not 0 < seconds <= MAX_BAN_SECONDS:
        raise ChatError(f"{value!r} is not a duration. Write a number and a unit, "
                        "like 30s, 30m, 2h, 7d or 2w (at most 100 years); "
                        "leave it out for a permanent ban.")
    return seconds


def parse_network(text):
    """An ip_network for an address or CIDR range (IPv4 or IPv6), or None for a user name."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


def parse_address(text):
    """The peer address as an ip_address (IPv4-mapped IPv6 seen as IPv4), or None."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def network_label(network):
    """'203.0.113.7' for a single address, '203.0.113.0/24' for a range."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def in_network(ip, network):
    address = parse_address(ip) if ip else None
    return address is not None and address.version == network.version and address in network


def parse_time(value, end_of_day=False):
    """A UTC datetime from '2026-11-24' or '2026-11-24T13:20[:05]'.

    A bare date used as an upper bound means the end of that day, so
    'until 2026-11-24' includes the 24th.
    """
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    try:
        parsed = datetime.fromisoformat(value.rstrip("Z"))
    except (ValueError, AttributeError):
        raise ChatError(f"{value!r} is not a date. Write 2026-11-24 or 2026-11-24T13:20 (UTC)."
                        ) from None
    if end_of_day and "T" not in value and " " not in value:
        parsed += timedelta(days=1)
    return parsed.replace(tzinfo=None)


def check_reason(reason):
    reason = (reason or "").strip()
    if len(reason) > REASON_MAX:
        raise ChatError(f"A reason is at most {REASON_MAX} characters; this one has {len(reason)}.")
    return reason


def outcome(text, **data):
    """A command's reply: readable text in `result`, plus structured data."""
    return dict(result=text, **data)


class Ban:
    def __init__(self, id, kind, target, ip, reason, banned_by, banned_at, expires_at):
        self.id, self.kind, self.target, self.ip = id, kind, target, ip
        self.reason, self.banned_by = reason, banned_by
        self.banned_at, self.expires_at = banned_at, expires_at
        self.network = ipaddress.ip_network(target) if kind == "ip" else None
        self.expiry_call = None

    @classmethod
    def from_row(cls, row):
        id, kind, target, ip, reason, banned_by, banned_at, expires_at = row
        return cls(id, kind, target, ip, reason, banned_by, parse_db_time(banned_at),
                   None if expires_at is None else parse_db_time(expires_at))

    def matches_name(self, name):
        return self.kind == "name" and self.target.casefold() == name.casefold()

    def matches_ip(self, ip):
        return self.kind == "ip" and in_network(ip, self.network)

    @property
    def until(self):
        return "permanently" if self.expires_at is None else f"until {human_time(self.expires_at)}"

    def notice(self):
        """What the banned person reads, on disconnect and at each refused login or connection."""
        who = "You are" if self.kind == "name" else f"Connections from {self.target} are"
        why = f" Reason: {self.reason}." if self.reason else ""
        return f"{who} banned {self.until}.{why}"

    def describe(self):
        where = f" (last from {self.ip})" if self.ip else ""
        why = f": {self.reason}" if self.reason else ""
        return f"{self.target}{where} banned {self.until} by {self.banned_by}{why}"

    def to_wire(self):
        return {"id": self.id, "kind": self.kind, "target": self.target, "ip": self.ip,
                "reason": self.reason, "banned_by": self.banned_by,
                "banned_at": wire_time(self.banned_at),
                "expires_at": None if self.expires_at is None else wire_time(self.expires_at)}


class JoinRequest:
    def __init__(self, id, channel, user, status, requested_at, decided_by=None, decided_at=None):
        self.id, self.channel, self.user, self.status = id, channel, user, status
        self.requested_at, self.decided_by, self.decided_at = requested_at, decided_by, decided_at

    @classmethod
    def from_row(cls, row):
        id, channel, user, status, requested_at, decided_by, decided_at = row
        return cls(id, channel, user, status, parse_db_time(requested_at), decided_by,
                   None if decided_at is None else parse_db_time(decided_at))

    def to_wire(self):
        return {"id": self.id, "channel": self.channel, "user": self.user, "status": self.status,
                "requested_at": wire_time(self.requested_at), "decided_by": self.decided_by,
                "decided_at": None if self.decided_at is None else wire_time(self.decided_at)}


@dataclass(frozen=True)
class Command:
    usage: str
    summary: str
    admin_only: bool
    parse: str      # name of the Moderation method that parses the arguments and acts


COMMANDS = {
    "help": Command("help", "list the commands you may use", False, "_cmd_help"),
    "admin": Command("admin NAME", "make NAME an admin", True, "_cmd_admin"),
    "unadmin": Command("unadmin NAME", "take the admin role from NAME", True, "_cmd_unadmin"),
    "create": Command("create CHANNEL [private]", "create a channel (public unless 'private')",
                      True, "_cmd_create"),
    "delete": Command("delete CHANNEL", "delete a channel and its memberships", True,
                      "_cmd_delete"),
    "requests": Command("requests", "list pending join requests", True, "_cmd_requests"),
    "accept": Command("accept USER CHANNEL", "accept USER's request to join CHANNEL", True,
                      "_cmd_accept"),
    "reject": Command("reject USER CHANNEL", "reject USER's request to join CHANNEL", True,
                      "_cmd_reject"),
    "remove": Command("remove USER CHANNEL", "remove USER from CHANNEL", True, "_cmd_remove"),
    "kick": Command("kick NAME|IP|CIDR [reason]", "disconnect now (they may come back)", True,
                    "_cmd_kick"),
    "ban": Command("ban NAME|IP|CIDR [duration] [reason]",
                   "disconnect and keep out; duration like 30m, 2h, 7d (none: permanent)",
                   True, "_cmd_ban"),
    "unban": Command("unban NAME|IP|CIDR", "lift a ban", True, "_cmd_unban"),
    "bans": Command("bans", "list active bans", True, "_cmd_bans"),
    "users": Command("users", "who is online, from which IP, looking at what", True,
                     "_cmd_users"),
    "log": Command("log user NAME|channel CHANNEL [since DATE] [until DATE] [limit N]",
                   "who sent what, when and where (dates in UTC: 2026-11-24 or "
                   "2026-11-24T13:20)", True, "_cmd_log"),
    "audit": Command("audit [limit N]", "the latest admin actions", True, "_cmd_audit"),
}


class Moderation:
    def __init__(self, server):
        self.server = server
        self.hub = server.hub
        self.store = server.store
        self.bans = {}          # ban id -> Ban, active ones only
        self.requests = {}      # casefolded user name -> {channel name: latest JoinRequest}

    @defer.inlineCallbacks
    def load(self):
        """Read the active bans and the latest join requests (once, at start)."""
        now = utcnow()
        for row in (yield self.store.active_bans(now)):
            ban = Ban.from_row(row)
            remaining = None if ban.expires_at is None else (ban.expires_at - now).total_seconds()
            self._activate(ban, remaining)
        for row in (yield self.store.latest_join_requests()):
            request = JoinRequest.from_row(row)
            self.requests.setdefault(request.user.casefold(), {})[request.channel] = request

    # -- hooks called by the server, the protocol and the hub ----------------

    def refuse_connection(self, connection):
        ban = self._ip_ban(connection.ip)
        return None if ban is None else ("banned", ban.notice())

    def check_login_allowed(self, connection, name):
        ban = self._name_ban(name) or self._ip_ban(connection.ip)
        if ban is not None:
            raise ChatError(ban.notice())

    def can_receive_private(self, name):
        return self._name_ban(name) is None

    def join_request_states(self, name):
        return {channel: request.status
                for channel, request in self.requests.get(name.casefold(), {}).items()}

    @defer.inlineCallbacks
    def my_requests(self, session):
        rows = yield self.store.join_requests_of(session.name)
        return {"requests": [JoinRequest.from_row(row).to_wire() for row in rows]}

    @defer.inlineCallbacks
    def request_to_join(self, session, channel):
        """Store a pending request (once) and tell the online admins at once.

        An admin's own request is granted at once: they could accept it anyway.
        """
        if session.is_admin:
            yield self.store.add_member(channel.id, session.name)
            self.hub.add_member(channel, session.name)
            return {"channel": channel.name, "status": "joined"}
        mine = self.requests.setdefault(session.name.casefold(), {})
        current = mine.get(channel.name)
        if current is not None and current.status == "pending":
            return {"channel": channel.name, "status": "pending"}
        now = utcnow()
        request_id = yield self.store.create_join_request(channel.id, session.name, now)
        mine[channel.name] = JoinRequest(request_id, channel.name, session.name, "pending", now)
        self.hub.bus.publish(ADMINS, {"event": "join_request", "channel": channel.name,
                                      "user": session.name, "id": request_id})
        return {"channel": channel.name, "status": "pending"}

    def run_command(self, session, line):
        """Parse one chat command ('ban Jules 1h spamming', with or without '/') and run it."""
        words = line.strip().removeprefix("/").split(None, 1)
        if not words:
            raise ChatError("Type a command after the slash; 'help' lists them.")
        name = words[0].lower()
        command = COMMANDS.get(name)
        if command is None:
            raise ChatError(f"There is no command {name!r}; 'help' lists the commands you can use.")
        if command.admin_only and not session.is_admin:
            raise ChatError(f"Only admins may use {name!r}.")
        actor = Actor(session.name, session.ip)
        d = defer.maybeDeferred(getattr(self, command.parse), actor,
                                words[1] if len(words) > 1 else "", session)
        return d.addCallback(lambda result: dict(command=name, **result))

    # -- admin roles -----------------------------------------------------------

    @defer.inlineCallbacks
    def set_admin(self, actor, name, admin=True):
        registered = self.hub.account_name(name)
        if actor.is_self(registered) and not admin:
            raise ChatError("You cannot take away your own admin role; ask another admin.")
        if (self.hub.roles.get(registered) == "admin") == admin:
            raise ChatError(f"{registered} is already {'an admin' if admin else 'not an admin'}.")
        yield self.server.make_admin(registered, by=actor.name, admin=admin)
        yield self._audit(actor, "admin" if admin else "unadmin", registered)
        return outcome(f"{registered} is now an admin." if admin
                       else f"{registered} is no longer an admin.", user=registered,
                       role="admin" if admin else "user")

    # -- channels and join requests --------------------------------------------

    @defer.inlineCallbacks
    def create_channel(self, actor, name, private=False):
        channel = yield self.hub.create_channel(name, private, actor.name)
        if actor.is_user:
            # The creator of a private channel must be able to read it.
            yield self.store.add_member(channel.id, actor.name)
            self.hub.add_member(channel, actor.name)
        yield self._audit(actor, "create", channel.name,
                          detail="private" if channel.private else "public")
        kind = "private" if channel.private else "public"
        return outcome(f"Created the {kind} channel #{channel.name}.", channel=channel.name,
                       private=channel.private)

    @defer.inlineCallbacks
    def delete_channel(self, actor, name):
        channel = self.hub.channel(name)
        yield self.store.delete_channel(channel.id)
        del self.hub.channels[channel.name]
        for member in list(channel.members):
            yield self.hub.remove_member(channel, member)
            self._tell(member, {"event": "channel_deleted", "channel": channel.name,
                                "by": actor.name})
        for mine in self.requests.values():
            mine.pop(channel.name, None)
        yield self._audit(actor, "delete", channel.name)
        return outcome(f"Deleted #{channel.name}; its messages stay in the log.",
                       channel=channel.name)

    @defer.inlineCallbacks
    def pending_requests(self):
        rows = yield self.store.pending_join_requests()
        requests = [JoinRequest.from_row(row) for row in rows]
        if not requests:
            return outcome("No pending join requests.", requests=[])
        lines = [f"{r.user} asks to join #{r.channel} (since {human_time(r.requested_at)}); "
                 f"accept {r.user} {r.channel} / reject {r.user} {r.channel}" for r in requests]
        return outcome("\n".join(lines), requests=[r.to_wire() for r in requests])

    @defer.inlineCallbacks
    def decide(self, actor, user, channel_name, accept):
        """Accept or reject a pending request; the requester is told live if online."""
        channel = self.hub.channel(channel_name)
        name = self.hub.account_name(user)
        request = self.requests.get(name.casefold(), {}).get(channel.name)
        if request is None or request.status != "pending":
            raise ChatError(f"{name} has no pending request for #{channel.name}; "
                            "'requests' lists the pending ones.")
        status = "accepted" if accept else "rejected"
        request.status = status     # at once, so a second admin deciding meanwhile is refused
        try:
            now = utcnow()
            yield self.store.decide_join_request(request.id, status, actor.name, now)
            if accept:
                yield self.store.add_member(channel.id, name)
        except Exception:
            request.status = "pending"
            raise
        request.decided_by, request.decided_at = actor.name, now
        if accept:
            self.hub.add_member(channel, name)
        self._tell(name, {"event": "request_decided", "channel": channel.name,
                          "status": status, "decided_by": actor.name})
        yield self._audit(actor, "accept" if accept else "reject", name,
                          detail=f"#{channel.name}")
        text = (f"{name} is now a member of #{channel.name}." if accept
                else f"Rejected {name}'s request to join #{channel.name}.")
        return outcome(text, request=request.to_wire())

    def _tell(self, name, event):
        """Send `event` to `name` if online; offline users see the change at next login."""
        self.hub.bus.publish(user_topic(name), event)

    @defer.inlineCallbacks
    def remove_member(self, actor, user, channel_name):
        channel = self.hub.channel(channel_name)
        name = self.hub.account_name(user)
        if name not in channel.members:
            raise ChatError(f"{name} is not a member of #{channel.name}.")
        yield self.store.remove_member(channel.id, name)
        yield self.hub.remove_member(channel, name)
        self._tell(name, {"event": "removed_from_channel", "channel": channel.name,
                          "by": actor.name})
        yield self._audit(actor, "remove", name, detail=f"#{channel.name}")
        return outcome(f"Removed {name} from #{channel.name}.", channel=channel.name, user=name)

    # -- kicks and bans -----------------------------------------------------------

    def _name_ban(self, name):
        return next((b for b in self.bans.values() if b.matches_name(name)), None)

    def _ip_ban(self, ip):
        return next((b for b in self.bans.values() if b.matches_ip(ip)), None)

    def _connections_in(self, network):
        return [c for c in list(self.hub.connections) if in_network(c.ip, network)]

    def _close(self, name, network, kind, reason):
        """Close a user's sessions, or the connections from `network`, on every node."""
        if name is not None:
            self.hub.bus.control(user_topic(name), "close", {"kind": kind, "reason": reason})
        else:
            self.hub.bus.control(CONNECTIONS, "close", {"network": str(network), "kind": kind,
                                                        "reason": reason})

    @staticmethod
    def _refuse_own_address(actor, network, verb):
        if in_network(actor.ip, network):
            raise ChatError(f"You are connected from {actor.ip}, inside {network_label(network)}; "
                            f"you cannot {verb} yourself. Narrow the range, or use the manhole.")

    def _target(self, actor, target, verb):
        """(name, None) for a user name, (None, network) for an address or range."""
        network = parse_network(target)
        if network is not None:
            self._refuse_own_address(actor, network, verb)
            return None, network
        name = self.hub.account_name(target)
        if actor.is_self(name):
            raise ChatError(f"You cannot {verb} yourself.")
        return name, None

    @defer.inlineCallbacks
    def kick(self, actor, target, reason=""):
        """Disconnect now: a user's session, or every connection from an address or range."""
        reason = check_reason(reason)
        name, network = self._target(actor, target, "kick")
        if name is not None:
            session = self.hub.sessions.get(name)
            if session is None:
                raise ChatError(f"{name} is not online, so there is nothing to kick; "
                                f"'ban {name}' keeps them out.")
            victims, label, ip = [session.connection], name, session.ip
        else:
            victims, label, ip = self._connections_in(network), network_label(network), None
            if not victims:
                raise ChatError(f"Nobody is connected from {label}.")
        kicked = sorted(c.session.name for c in victims if c.session is not None)
        why = f": {reason}" if reason else "."
        self._close(name, network, "kicked",
                    f"You were kicked by {actor.name}{why} You may log in again.")
        yield self.store.add_kick(label, ip, reason, actor.name, utcnow())
        yield self._audit(actor, "kick", label, reason, f"{len(victims)} connection(s) closed")
        return outcome(f"Kicked {label} ({len(victims)} connection(s) closed).", kicked=kicked)

    @defer.inlineCallbacks
    def ban(self, actor, target, duration=None, reason=""):
        """Disconnect every matching session and refuse them until lifted or expired."""
        reason = check_reason(reason)
        seconds = parse_duration(duration)
        name, network = self._target(actor, target, "ban")
        if name is not None:
            existing, kind, label, ip = self._name_ban(name), "name", name, self.hub.ips.get(name)
        else:
            label, kind, ip = network_label(network), "ip", None
            existing = next((b for b in self.bans.values() if b.network == network), None)
        if existing is not None:
            raise ChatError(f"{label} is already banned {existing.until}; "
                            f"'unban {label}' first to change the ban.")
        now = utcnow()
        expires_at = None if seconds is None else now + timedelta(seconds=seconds)
        ban_id = yield self.store.add_ban(kind, label, ip, reason, actor.name, now, expires_at)
        ban = Ban(ban_id, kind, label, ip, reason, actor.name, now, expires_at)
        self._activate(ban, seconds)
        if name is not None:
            victims = [] if self.hub.sessions.get(name) is None else [name]
        else:
            victims = self._connections_in(network)
        self._close(name, network, "banned", ban.notice())
        yield self._audit(actor, "ban", label, reason, ban.until)
        return outcome(f"Banned {label} {ban.until} ({len(victims)} connection(s) closed).",
                       ban=ban.to_wire())

    def _activate(self, ban, seconds):
        self.bans[ban.id] = ban
        if seconds is not None:
            ban.expiry_call = self.hub.clock.callLater(max(seconds, 0), self._expire, ban)

    def _expire(self, ban):
        ban.expiry_call = None
        self.bans.pop(ban.id, None)
        log.info("ban on {target} expired", target=ban.target)

    @defer.inlineCallbacks
    def unban(self, actor, target):
        network = parse_network(target)
        if network is None:
            ban = self._name_ban(target)
        else:
            ban = next((b for b in self.bans.values() if b.network == network), None)
        if ban is None:
            raise ChatError(f"There is no active ban on {target}; 'bans' lists the active bans.")
        yield self.store.lift_ban(ban.id, actor.name, utcnow())
        self.bans.pop(ban.id, None)
        if ban.expiry_call is not None and ban.expiry_call.active():
            ban.expiry_call.cancel()
        yield self._audit(actor, "unban", ban.target)
        return outcome(f"Lifted the ban on {ban.target}.", ban=ban.to_wire())

    def list_bans(self):
        bans = sorted(self.bans.values(), key=lambda b: b.id)
        text = "\n".join(b.describe() for b in bans) or "Nobody is banned."
        return outcome(text, bans=[b.to_wire() for b in bans])

    # -- looking around --------------------------------------------------------------

    def users(self):
        """Everyone online: name, IP, role, status and what they are looking at."""
        users = []
        for session in sorted(self.hub.sessions.values(), key=lambda s: s.name.casefold()):
            viewing = None
            if session.viewing is not None:
                kind, place = session.viewing
                viewing = f"#{place}" if kind == "channel" else f"@{place}"
            users.append({"user": session.name, "ip": session.ip, "role": session.role,
                          "status": session.status, "viewing": viewing})
        lines = [f"{u['user']} ({u['role']}) from {u['ip']}: {u['status']}, "
                 f"looking at {u['viewing'] or 'nothing'}" for u in users]
        return outcome("\n".join(lines) or "Nobody is online.", users=users)

    @defer.inlineCallbacks
    def message_log(self, actor, user=None, channel=None, since=None, until=None,
                    limit=LOG_LIMIT_DEFAULT):
        """Messages sent by `user` or in `channel`, in [since, until], the latest `limit`.

        Reading people's messages is itself audited.
        """
        if (user is None) == (channel is None):
            raise ChatError("Ask for the log of one user or one channel: "
                            "'log user NAME' or 'log channel CHANNEL'.")
        if not 1 <= limit <= LOG_LIMIT_MAX:
            raise ChatError(f"The limit is between 1 and {LOG_LIMIT_MAX}.")
        start = EARLIEST if since is None else parse_time(since)
        end = LATEST if until is None else parse_time(until, end_of_day=True)
        sender = None if user is None else self.hub.account_name(user)
        found = None if channel is None else self.hub.channel(channel)
        rows = yield self.store.message_log(start, end, limit, sender=sender,
                                            channel_id=None if found is None else found.id)
        names = {c.id: c.name for c in self.hub.channels.values()}
        messages, lines = [], []
        for id, sent_by, channel_id, recipient, body, sent_at in rows:
            where = None if channel_id is None else names.get(channel_id, f"deleted-{channel_id}")
            message = Message(id, sent_by, body, parse_db_time(sent_at), channel=where,
                              channel_id=channel_id, recipient=recipient)
            messages.append(message.to_wire())
            place = f"#{where}" if where is not None else f"to {recipient}"
            lines.append(f"{human_time(message.time)} {place} {sent_by}: {body}")
        subject = f"user {sender}" if sender is not None else f"#{found.name}"
        yield self._audit(actor, "log", sender if found is None else f"#{found.name}",
                          detail=f"{db_time(start)} to {db_time(end)}, limit {limit}")
        header = f"{len(messages)} message(s) from the log of {subject}."
        return outcome("\n".join([header] + lines), messages=messages)

    @defer.inlineCallbacks
    def audit_entries(self, limit=20):
        if not 1 <= limit <= LOG_LIMIT_MAX:
            raise ChatError(f"The limit is between 1 and {LOG_LIMIT_MAX}.")
        rows = yield self.store.audit_entries(limit)
        entries = [{"id": r[0], "actor": r[1], "action": r[2], "target": r[3], "reason": r[4],
                    "detail": r[5], "at": wire_time(parse_db_time(r[6]))} for r in rows]
        lines = [f"{e['at']} {e['actor']}: {e['action']} {e['target'] or ''}"
                 + (f" ({e['detail']})" if e["detail"] else "")
                 + (f" - {e['reason']}" if e["reason"] else "") for e in entries]
        return outcome("\n".join(lines) or "No admin actions yet.", entries=entries)

    def _audit(self, actor, action, target, reason=None, detail=None):
        return self.store.audit(actor.name, action, target, reason or None, detail, utcnow())

    # -- chat command parsers: words -> the methods above ---------------------------

    @staticmethod
    def _words(args, name, count):
        words = args.split()
        if len(words) != count:
            raise ChatError(f"Usage: {COMMANDS[name].usage}")
        return words

    def _cmd_help(self, actor, args, session):
        usable = [(name, c) for name, c in COMMANDS.items()
                  if session.is_admin or not c.admin_only]
        lines = [f"{c.usage} - {c.summary}" for _, c in usable]
        if not session.is_admin:
            lines.append("(Other commands are for admins. To join a private channel, "
                         "send join; my_requests shows your requests.)")
        return outcome("\n".join(lines), commands=[name for name, _ in usable])

    def _cmd_admin(self, actor, args, session):
        return self.set_admin(actor, self._words(args, "admin", 1)[0], admin=True)

    def _cmd_unadmin(self, actor, args, session):
        return self.set_admin(actor, self._words(args, "unadmin", 1)[0], admin=False)

    def _cmd_create(self, actor, args, session):
        words = args.split()
        if len(words) not in (1, 2) or (len(words) == 2 and words[1].lower() != "private"):
            raise ChatError(f"Usage: {COMMANDS['create'].usage}")
        return self.create_channel(actor, words[0].lstrip("#"), private=len(words) == 2)

    def _cmd_delete(self, actor, args, session):
        return self.delete_channel(actor, self._words(args, "delete", 1)[0].lstrip("#"))

    def _cmd_requests(self, actor, args, session):
        self._words(args, "requests", 0)
        return self.pending_requests()

    def _cmd_accept(self, actor, args, session):
        user, channel = self._words(args, "accept", 2)
        return self.decide(actor, user, channel.lstrip("#"), accept=True)

    def _cmd_reject(self, actor, args, session):
        user, channel = self._words(args, "reject", 2)
        return self.decide(actor, user, channel.lstrip("#"), accept=False)

    def _cmd_remove(self, actor, args, session):
        user, channel = self._words(args, "remove", 2)
        return self.remove_member(actor, user, channel.lstrip("#"))

    def _cmd_kick(self, actor, args, session):
        words = args.split(None, 1)
        if not words:
            raise ChatError(f"Usage: {COMMANDS['kick'].usage}")
        return self.kick(actor, words[0], words[1] if len(words) > 1 else "")

    def _cmd_ban(self, actor, args, session):
        words = args.split(None, 2)
        if not words:
            raise ChatError(f"Usage: {COMMANDS['ban'].usage}")
        duration = None
        rest = words[1:]
        if rest and DURATION_RULE.match(rest[0]):
            duration = rest.pop(0)
        return self.ban(actor, words[0], duration, " ".join(rest))

    def _cmd_unban(self, actor, args, session):
        return self.unban(actor, self._words(args, "unban", 1)[0])

    def _cmd_bans(self, actor, args, session):
        self._words(args, "bans", 0)
        return self.list_bans()

    def _cmd_users(self, actor, args, session):
        self._words(args, "users", 0)
        return self.users()

    def _cmd_log(self, actor, args, session):
        words = args.split()
        if len(words) < 2 or len(words) % 2 or words[0] not in ("user", "channel"):
            raise ChatError(f"Usage: {COMMANDS['log'].usage}")
        options = dict(zip(words[2::2], words[3::2]))
        unknown = set(options) - {"since", "until", "limit"}
        if unknown or len(options) != len(words[2:]) // 2:
            raise ChatError(f"Usage: {COMMANDS['log'].usage}")
        subject = {words[0]: words[1].lstrip("#")}
        return self.message_log(actor, since=options.get("since"), until=options.get("until"),
                                limit=self._limit(options.get("limit"), LOG_LIMIT_DEFAULT),
                                **subject)

    def _cmd_audit(self, actor, args, session):
        words = args.split()
        if words and (len(words) != 2 or words[0] != "limit"):
            raise ChatError(f"Usage: {COMMANDS['audit'].usage}")
        return self.audit_entries(self._limit(words[1] if words else None, 20))

    @staticmethod
    def _limit(text, default):
        if text is None:
            return default
        if not text.isdigit():
            raise ChatError(f"The limit is a whole number, not {text!r}.")
        return int(text)
