"""Conversations and read markers: what each user takes part in and has read, from SQL.

A user's conversations are the channels they are a member of and every private
conversation with a message to or from them. Each user has one read marker per
conversation (the newest message id read; it only moves forward, see
Store.mark_read), so unread counts are right after a restart of the server or
of the client. A marked read reaches every session of the user as the bus
control ("user", name) "read": each keeps its channel unread counts, and the
other sessions are told with a `read` event.

Typing notices go only to those looking at the place: the channel's viewers
(("channel", c), and nothing at all when nobody else looks), or the other
user's sessions that look at the private conversation (a bus control, so each
session checks what it looks at).
"""

import bisect

from twisted.internet import defer

from chatd.auth import ChatError
from chatd.bus import channel_topic, user_topic
from chatd.rules import SEARCH_MIN_WORD, fold, search_words
from chatd.store import MESSAGE_ID_MAX, peer_key, wire_time

TYPING_INTERVAL = 3.0   # seconds: at most one typing notice per user and place
SEARCH_WORDS = 16       # words in one search at most
# A channel with at most this many members is sorted for each list_members page; a larger
# one is listed in the directory's order (already sorted), members picked out as it goes:
# sorting 100,000 names took 0.4 s of the reactor per page.
SORTED_MEMBERS = 2000


class Conversations:
    def __init__(self, hub, store):
        self.hub = hub
        self.store = store

    @defer.inlineCallbacks
    def summaries(self, session):
        """Every conversation of `session`'s user: the channels by name, then the
        private ones newest first, each with its last message and unread count."""
        channels = {}
        for name in self.hub.channels_of(session.name):
            channel = self.hub.channels[name]
            channels[channel.id] = channel
        rows = yield self.store.conversations(session.name, list(channels))
        listed, private = [], []
        for channel_id, key, last_id, last_time, marker, unread, mentioned in rows:
            if channel_id:
                channel = channels[channel_id]
                entry = {"channel": channel.name, "private": channel.private}
                listed.append(entry)
            else:
                entry = {"other_user": self._other_user(session.name, key)}
                private.append(entry)
            entry.update(last_id=last_id,
                         last_time=None if last_time is None else wire_time(last_time),
                         read=marker, unread=unread, mentions=mentioned)
        private.sort(key=lambda e: e["last_id"], reverse=True)
        return listed + private

    def _other_user(self, name, key):
        first, _, second = key.partition("|")
        other = second if first == fold(name) else first
        return self.hub.account_name(other, must_exist=False)

    def members(self, session, name, after):
        """(channel name, (cursor, entry) pairs) of every member of a channel in directory
        order, after the folded name `after`: its status and whether they look at it. A
        private channel's members are told only to its members and the admins."""
        channel = self.hub.channel(name)
        if channel.private and session.name not in channel.members and not session.is_admin:
            raise ChatError(f"#{channel.name} is private; only its members see who is in it.")
        viewers, members = self.hub.presence.viewers(channel.name), channel.members
        if len(members) <= SORTED_MEMBERS:
            keyed = sorted((fold(member), member) for member in members)
            start = 0 if after is None else bisect.bisect_right(keyed, (after, "\U0010ffff"))
            keyed = keyed[start:]
        else:
            keyed = ((key, name) for key, name in self.hub.accounts.names_after(after or "")
                     if name in members)
        return channel.name, (
            (key, {"user": member, "status": viewers.get(member) or self.hub.status_of(member),
                   "looking": member in viewers})
            for key, member in keyed)

    def place(self, session, channel, other_user):
        """(reply fields, channel id, peer key) of the conversation a request names."""
        if (channel is None) == (other_user is None):
            raise ChatError("Name one conversation: 'channel' or 'other_user'.")
        if channel is not None:
            found = self.hub.readable_channel(session, channel)
            return {"channel": found.name}, found.id, ""
        other = self.hub.account_name(other_user)
        return {"other_user": other}, 0, peer_key(session.name, other)

    @defer.inlineCallbacks
    def mark_read(self, session, upto, channel, other_user):
        """Move the user's marker forward to message `upto` (at most the newest there)."""
        if not 1 <= upto <= MESSAGE_ID_MAX:
            raise ChatError("'mark_read' is a message id: a whole number from 1 up.")
        fields, channel_id, key = self.place(session, channel, other_user)
        marker, unread, mentioned = yield self.store.mark_read(session.name, channel_id, key,
                                                               upto)
        result = dict(fields, read=marker, unread=unread, mentions=mentioned)
        self.hub.bus.control(user_topic(session.name), "read", dict(result, by=session.id))
        return result

    def typing(self, session, active, channel, other_user):
        """`session`'s user is typing (or, `active` false, stopped) in a place: at most one
        notice every TYPING_INTERVAL s per place; a stop only after a notice."""
        fields, _, _ = self.place(session, channel, other_user)
        place = next(iter(fields.items()))
        if active:
            now = self.hub.clock.seconds()
            last = session.typing.get(place)
            if last is not None and now - last < TYPING_INTERVAL:
                return
            session.typing[place] = now
        elif session.typing.pop(place, None) is None:
            return
        if "channel" in fields:
            name = fields["channel"]
            if any(user != session.name for user in self.hub.presence.looking.get(name, ())):
                self.hub.bus.publish(channel_topic(name), {
                    "event": "typing", "user": session.name, "channel": name, "typing": active},
                    exclude=session.id)
        elif fields["other_user"] != session.name:
            self.hub.bus.control(user_topic(fields["other_user"]), "typing",
                                 {"user": session.name, "typing": active})

    @defer.inlineCallbacks
    def search(self, session, text, channel, other_user, before, limit):
        """Messages with every word of `text`, newest first, only from conversations the
        user may read: their channels and private conversations, or the one named."""
        words = search_words(text)
        if not words:
            raise ChatError(f"Search for at least one word of {SEARCH_MIN_WORD} letters or more.")
        if len(words) > SEARCH_WORDS:
            raise ChatError(f"Search for at most {SEARCH_WORDS} words.")
        place = None
        if channel is not None or other_user is not None:
            _, channel_id, key = self.place(session, channel, other_user)
            place = (channel_id, key)
        names = {}
        for name in self.hub.channels_of(session.name):
            names[self.hub.channels[name].id] = name
        found, more_before = yield self.store.search(session.name, words, list(names), place,
                                                     before, limit)
        for message in found:
            if message.channel_id is not None:
                message.channel = names.get(message.channel_id)
        # A channel left meanwhile is not readable any more.
        reply = {"messages": [m.to_wire() for m in found
                              if m.channel_id is None or m.channel is not None]}
        if more_before is not None:
            reply["more_before"] = more_before
        return reply
