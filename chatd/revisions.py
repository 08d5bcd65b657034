"""Edits and deletions of stored messages: who may make them, and who is told.

The author may edit a message; the author or an admin may delete one. The text
is replaced in SQL and the earlier ones kept (message_versions); a deleted
message keeps its text for the admins' message log, while history shows a
tombstone (chatd.store.Message.to_wire). The sessions that show the
conversation are told: those looking at the channel (("channel", c)), or both
users of a private conversation (("user", n)); any other client sees the change
in the history it fetches when it opens the conversation.
"""

from twisted.internet import defer

from chatd.auth import ChatError
from chatd.bus import channel_topic, user_topic
from chatd.store import MESSAGE_ID_MAX, utcnow, wire_time


class Revisions:
    def __init__(self, hub, store):
        self.hub = hub
        self.store = store

    @defer.inlineCallbacks
    def edit(self, session, message_id, text):
        self.hub.check_text(text)
        message = yield self._find(session, message_id)
        if message.sender != session.name:
            raise ChatError("You can only edit your own messages.")
        at = utcnow()
        if message.deleted is not None or not (
                yield self.store.edit_message(message.id, session.name, text, at)):
            raise ChatError(f"Message {message.id} was deleted.")
        self._tell_viewers(message, "message_edited", text=text, edited=wire_time(at))
        return {"id": message.id, "edited": wire_time(at)}

    @defer.inlineCallbacks
    def delete(self, session, message_id):
        message = yield self._find(session, message_id)
        if message.sender != session.name and not session.is_admin:
            raise ChatError("You can only delete your own messages.")
        at = utcnow()
        if message.deleted is not None or not (
                yield self.store.delete_message(message.id, session.name, at)):
            raise ChatError(f"Message {message.id} was deleted already.")
        self._tell_viewers(message, "message_deleted", deleted=wire_time(at), by=session.name)
        return {"id": message.id, "deleted": wire_time(at)}

    @defer.inlineCallbacks
    def _find(self, session, message_id):
        """The stored message, if `session` may read it (admins: any); the same refusal
        whether it does not exist or is not theirs to see."""
        if not 1 <= message_id <= MESSAGE_ID_MAX:
            raise ChatError("A message id is a whole number from 1 up.")
        missing = ChatError(f"There is no message {message_id} that you can see.")
        message = yield self.store.stored_message(message_id)
        if message is None:
            raise missing
        if message.channel_id is not None:
            channel = next((c for c in self.hub.channels.values()
                            if c.id == message.channel_id), None)
            if channel is None or not (session.is_admin or session.name in channel.members):
                raise missing
            message.channel = channel.name
        elif not session.is_admin and session.name not in (message.sender, message.recipient):
            raise missing
        return message

    def _tell_viewers(self, message, event, **fields):
        place = ({"channel": message.channel} if message.channel is not None
                 else {"other_user": message.recipient})
        payload = dict({"event": event, "id": message.id, "user": message.sender}, **place,
                       **fields)
        if message.channel is not None:
            self.hub.bus.publish(channel_topic(message.channel), payload)
        else:
            for name in {message.sender, message.recipient}:
                self.hub.bus.publish(user_topic(name), payload)
