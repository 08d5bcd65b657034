"""Private channels: join requests, and the channels admins create, delete and prune.

The latest join request of each (user, channel) lives in memory (loaded at
start, written through to SQL), so list_channels never waits for the database.
"""

from twisted.internet import defer

from chatd.auth import ChatError
from chatd.bus import ADMINS, STATE, user_topic
from chatd.moderation.common import human_time, outcome
from chatd.rules import fold
from chatd.store import db_time, parse_db_time, utcnow, wire_time


class JoinRequest:
    def __init__(self, id, channel, user, status, requested_at, decided_by=None, decided_at=None):
        self.id, self.channel, self.user, self.status = id, channel, user, status
        self.requested_at, self.decided_by, self.decided_at = requested_at, decided_by, decided_at

    @classmethod
    def from_row(cls, row):
        id, channel, user, status, requested_at, decided_by, decided_at = row
        return cls(id, channel, user, status, parse_db_time(requested_at), decided_by,
                   None if decided_at is None else parse_db_time(decided_at))

    def row(self):
        """As from_row reads it (the other nodes get a request or a decision this way)."""
        return [self.id, self.channel, self.user, self.status, db_time(self.requested_at),
                self.decided_by, None if self.decided_at is None else db_time(self.decided_at)]

    def to_wire(self):
        return {"id": self.id, "channel": self.channel, "user": self.user, "status": self.status,
                "requested_at": wire_time(self.requested_at), "decided_by": self.decided_by,
                "decided_at": None if self.decided_at is None else wire_time(self.decided_at)}


class JoinRequests:
    """Join requests and channel administration (create, delete, remove a member)."""

    def __init__(self, hub, store, audit):
        self.hub = hub
        self.store = store
        self.audit = audit
        self.latest = {}        # folded user name -> {channel name: latest JoinRequest}

    @defer.inlineCallbacks
    def load(self):
        for row in (yield self.store.latest_join_requests()):
            self.remember(JoinRequest.from_row(row))

    def remember(self, request):
        """The latest request of its user for its channel (at start, or from another node)."""
        self.latest.setdefault(fold(request.user), {})[request.channel] = request

    def states(self, name):
        return {channel: request.status
                for channel, request in self.latest.get(fold(name), {}).items()}

    @defer.inlineCallbacks
    def of(self, name):
        rows = yield self.store.join_requests_of(name)
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
        mine = self.latest.setdefault(fold(session.name), {})
        current = mine.get(channel.name)
        if current is not None and current.status == "pending":
            return {"channel": channel.name, "status": "pending"}
        now = utcnow()
        request_id = yield self.store.create_join_request(channel.id, session.name, now)
        mine[channel.name] = request = JoinRequest(request_id, channel.name, session.name,
                                                   "pending", now)
        self.hub.bus.control(STATE, "request", {"row": request.row()})
        self.hub.bus.publish(ADMINS, {"event": "join_request", "channel": channel.name,
                                      "user": session.name, "id": request_id})
        return {"channel": channel.name, "status": "pending"}

    @defer.inlineCallbacks
    def pending(self):
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
        request = self.latest.get(fold(name), {}).get(channel.name)
        if request is None or request.status != "pending":
            raise ChatError(f"{name} has no pending request for #{channel.name}; "
                            "'requests' lists the pending ones.")
        status = "accepted" if accept else "rejected"
        with self.hub.deciding(STATE, "request", {"row": request.row()}):
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
            self.hub.bus.control(STATE, "request", {"row": request.row()})
        if accept:
            self.hub.add_member(channel, name)
        self._tell(name, {"event": "request_decided", "channel": channel.name,
                          "status": status, "decided_by": actor.name})
        yield self.audit.record(actor, "accept" if accept else "reject", name,
                                detail=f"#{channel.name}")
        text = (f"{name} is now a member of #{channel.name}." if accept
                else f"Rejected {name}'s request to join #{channel.name}.")
        return outcome(text, request=request.to_wire())

    def _tell(self, name, event):
        """Send `event` to `name` if online; offline users see the change at next login."""
        self.hub.bus.publish(user_topic(name), event)

    # -- channels ------------------------------------------------------------------------

    @defer.inlineCallbacks
    def create_channel(self, actor, name, private=False):
        channel = yield self.hub.create_channel(name, private, actor.name)
        if actor.is_user:
            # The creator of a private channel must be able to read it.
            yield self.store.add_member(channel.id, actor.name)
            self.hub.add_member(channel, actor.name)
        kind = "private" if channel.private else "public"
        yield self.audit.record(actor, "create", channel.name, detail=kind)
        return outcome(f"Created the {kind} channel #{channel.name}.", channel=channel.name,
                       private=channel.private)

    @defer.inlineCallbacks
    def delete_channel(self, actor, name):
        channel = self.hub.channel(name)
        self.hub.accounts.check_change()
        deleted = {"name": channel.name}
        with self.hub.deciding(STATE, "channel_deleted", deleted):
            # Out of the directory at once, so a second delete meanwhile finds nothing to delete.
            del self.hub.channels[channel.name]
            try:
                yield self.store.delete_channel(channel.id)
            except Exception:
                self.hub.channels[channel.name] = channel
                raise
            self.hub.bus.control(STATE, "channel_deleted", deleted)
        for member in list(channel.members):
            yield self.hub.remove_member(channel, member, notice={"event": "channel_deleted",
                                                                  "by": actor.name})
        self.forget_channel(channel.name)
        yield self.audit.record(actor, "delete", channel.name)
        return outcome(f"Deleted #{channel.name}; its messages stay in the log.",
                       channel=channel.name)

    def forget_channel(self, name):
        for mine in self.latest.values():
            mine.pop(name, None)

    @defer.inlineCallbacks
    def remove_member(self, actor, user, channel_name):
        channel = self.hub.channel(channel_name)
        name = self.hub.account_name(user)
        if name not in channel.members:
            raise ChatError(f"{name} is not a member of #{channel.name}.")
        self.hub.accounts.check_change()
        yield self.store.remove_member(channel.id, name, removed_by=actor.name)
        yield self.hub.remove_member(channel, name, notice={"event": "removed_from_channel",
                                                            "by": actor.name})
        yield self.audit.record(actor, "remove", name, detail=f"#{channel.name}")
        return outcome(f"Removed {name} from #{channel.name}.", channel=channel.name, user=name)
