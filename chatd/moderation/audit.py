"""The audit log (every admin action), and the message log admins read (itself audited)."""

from datetime import datetime

from twisted.internet import defer

from chatd.auth import ChatError
from chatd.moderation.common import check_limit, human_time, outcome, parse_time
from chatd.store import Message, db_time, parse_db_time, utcnow, wire_time

EARLIEST, LATEST = datetime(1970, 1, 1), datetime(9999, 12, 31)


class AuditLog:
    def __init__(self, hub, store):
        self.hub = hub
        self.store = store

    def record(self, actor, action, target, reason=None, detail=None):
        return self.store.audit(actor.name, action, target, reason or None, detail, utcnow())

    @defer.inlineCallbacks
    def entries(self, limit):
        rows = yield self.store.audit_entries(check_limit(limit))
        entries = [{"id": r[0], "actor": r[1], "action": r[2], "target": r[3], "reason": r[4],
                    "detail": r[5], "at": wire_time(parse_db_time(r[6]))} for r in rows]
        lines = [f"{e['at']} {e['actor']}: {e['action']} {e['target'] or ''}"
                 + (f" ({e['detail']})" if e["detail"] else "")
                 + (f" - {e['reason']}" if e["reason"] else "") for e in entries]
        return outcome("\n".join(lines) or "No admin actions yet.", entries=entries)

    @defer.inlineCallbacks
    def message_log(self, actor, sender=None, channel=None, since=None, until=None, limit=50):
        """Messages sent by `sender` or in `channel`, in [since, until], the latest `limit`."""
        if (sender is None) == (channel is None):
            raise ChatError("Ask for the log of one user or one channel: "
                            "'log user NAME' or 'log channel CHANNEL'.")
        check_limit(limit)
        start = EARLIEST if since is None else parse_time(since)
        end = LATEST if until is None else parse_time(until, end_of_day=True)
        sender = None if sender is None else self.hub.account_name(sender)
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
        yield self.record(actor, "log", sender if found is None else f"#{found.name}",
                          detail=f"{db_time(start)} to {db_time(end)}, limit {limit}")
        header = f"{len(messages)} message(s) from the log of {subject}."
        return outcome("\n".join([header] + lines), messages=messages)
