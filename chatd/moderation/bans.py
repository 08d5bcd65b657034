"""Kicks and bans, by name, address or range.

Active bans live in memory (loaded at start, written through to SQL), so the
connection and login paths never wait for the database. A ban's expiry is a
callLater on the hub's clock.
"""

import ipaddress
from datetime import timedelta

from twisted.internet import defer
from twisted.logger import Logger

from chatd.addresses import in_network, network_label, parse_network
from chatd.auth import ChatError
from chatd.bus import CONNECTIONS, STATE, user_topic
from chatd.moderation.common import check_reason, human_time, outcome, parse_duration
from chatd.rules import fold
from chatd.store import db_time, parse_db_time, utcnow, wire_time

log = Logger()


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

    def row(self):
        """As from_row reads it (the other nodes get a new ban this way)."""
        return [self.id, self.kind, self.target, self.ip, self.reason, self.banned_by,
                db_time(self.banned_at),
                None if self.expires_at is None else db_time(self.expires_at)]

    def matches_name(self, name):
        return self.kind == "name" and fold(self.target) == fold(name)

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


class BanList:
    """The active bans, and the kick and ban actions."""

    def __init__(self, hub, store, audit):
        self.hub = hub
        self.store = store
        self.audit = audit
        self.active = {}        # ban id -> Ban, active ones only

    @defer.inlineCallbacks
    def load(self):
        now = utcnow()
        for row in (yield self.store.active_bans(now)):
            self.restore(row, now)

    def restore(self, row, now):
        """Activate a ban stored earlier (at start, or by another node)."""
        ban = Ban.from_row(row)
        remaining = None if ban.expires_at is None else (ban.expires_at - now).total_seconds()
        self._activate(ban, remaining)

    # -- what the connection and login paths ask -----------------------------------

    def name_ban(self, name):
        return next((b for b in self.active.values() if b.matches_name(name)), None)

    def ip_ban(self, ip):
        return next((b for b in self.active.values() if b.matches_ip(ip)), None)

    def _elsewhere_in(self, network):
        """Users logged in on other nodes of a cluster from `network` (their newest address;
        the close reaches every node's connections)."""
        return sorted(name for name in self.hub.elsewhere
                      if in_network(self.hub.ips.get(name), network))

    def close(self, name, network, kind, reason, bus=None, ban=None):
        """Close a user's sessions, or the connections from `network`, on every node (`bus`
        as in Hub.role_changed); `ban` is the id of the ban that closes them, if one does."""
        bus = self.hub.bus if bus is None else bus
        data = {"kind": kind, "reason": reason}
        if ban is not None:
            data["ban"] = ban
        if name is not None:
            bus.control(user_topic(name), "close", data)
        else:
            bus.control(CONNECTIONS, "close", dict(data, network=str(network)))

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

    # -- actions ------------------------------------------------------------------------

    @defer.inlineCallbacks
    def kick(self, actor, target, reason=""):
        """Disconnect now: a user's session, or every connection from an address or range."""
        reason = check_reason(reason)
        name, network = self._target(actor, target, "kick")
        if name is not None:
            if not self.hub.is_online(name):
                raise ChatError(f"{name} is not online, so there is nothing to kick; "
                                f"'ban {name}' keeps them out.")
            victims, label, ip, kicked = [name], name, self.hub.ips.get(name), [name]
        else:
            elsewhere = self._elsewhere_in(network)
            victims = self.hub.connections_in(network) + elsewhere
            label, ip = network_label(network), None
            if not victims:
                raise ChatError(f"Nobody is connected from {label}.")
            kicked = sorted([c.session.name for c in victims[:len(victims) - len(elsewhere)]
                             if c.session is not None] + elsewhere)
        why = f": {reason}" if reason else "."
        self.close(name, network, "kicked",
                   f"You were kicked by {actor.name}{why} You may log in again.")
        yield self.store.add_kick(label, ip, reason, actor.name, utcnow())
        yield self.audit.record(actor, "kick", label, reason,
                                f"{len(victims)} connection(s) closed")
        return outcome(f"Kicked {label} ({len(victims)} connection(s) closed).", kicked=kicked)

    @defer.inlineCallbacks
    def ban(self, actor, target, duration=None, reason=""):
        """Disconnect every matching session and refuse them until lifted or expired."""
        reason = check_reason(reason)
        seconds = parse_duration(duration)
        name, network = self._target(actor, target, "ban")
        if name is not None:
            existing, kind, label, ip = self.name_ban(name), "name", name, self.hub.ips.get(name)
        else:
            label, kind, ip = network_label(network), "ip", None
            existing = next((b for b in self.active.values() if b.network == network), None)
        if existing is not None:
            raise ChatError(f"{label} is already banned {existing.until}; "
                            f"'unban {label}' first to change the ban.")
        now = utcnow()
        expires_at = None if seconds is None else now + timedelta(seconds=seconds)
        ban_id = yield self.store.add_ban(kind, label, ip, reason, actor.name, now, expires_at)
        ban = Ban(ban_id, kind, label, ip, reason, actor.name, now, expires_at)
        self._activate(ban, seconds)
        self.hub.bus.control(STATE, "ban", {"row": ban.row()})
        if name is not None:
            victims = [name] if self.hub.is_online(name) else []
        else:
            victims = self.hub.connections_in(network) + self._elsewhere_in(network)
        self.close(name, network, "banned", ban.notice(), ban=ban.id)
        yield self.audit.record(actor, "ban", label, reason, ban.until)
        return outcome(f"Banned {label} {ban.until} ({len(victims)} connection(s) closed).",
                       ban=ban.to_wire())

    def _activate(self, ban, seconds):
        self.active[ban.id] = ban
        if seconds is not None:
            ban.expiry_call = self.hub.clock.callLater(max(seconds, 0), self._expire, ban)

    def _expire(self, ban):
        ban.expiry_call = None
        self.active.pop(ban.id, None)
        log.info("ban on {target} expired", target=ban.target)

    @defer.inlineCallbacks
    def unban(self, actor, target):
        network = parse_network(target)
        if network is None:
            ban = self.name_ban(target)
        else:
            ban = next((b for b in self.active.values() if b.network == network), None)
        if ban is None:
            raise ChatError(f"There is no active ban on {target}; 'bans' lists the active bans.")
        self.hub.accounts.check_change()
        yield self.store.lift_ban(ban.id, actor.name, utcnow())
        self.lift(ban.id)
        self.hub.bus.control(STATE, "unban", {"id": ban.id})
        yield self.audit.record(actor, "unban", ban.target)
        return outcome(f"Lifted the ban on {ban.target}.", ban=ban.to_wire())

    def lift(self, ban_id):
        """Forget an active ban (lifted here, or by another node)."""
        ban = self.active.pop(ban_id, None)
        if ban is not None and ban.expiry_call is not None and ban.expiry_call.active():
            ban.expiry_call.cancel()

    def listing(self):
        bans = sorted(self.active.values(), key=lambda b: b.id)
        text = "\n".join(b.describe() for b in bans) or "Nobody is banned."
        return outcome(text, bans=[b.to_wire() for b in bans])
