"""Typed values the model hands to the widgets instead of raw server dictionaries."""

from dataclasses import dataclass
from datetime import datetime, timezone

from chatd import rules
from chatd.rules import fold

# "/me waves" is sent as the plain text "* alice waves": every client shows that
# sensibly, and this one draws it as an action. Only a message whose sender is the
# name after "* " is an action, so nobody can write one in someone else's name.
ACTION_FORMAT = "* {user} {action}"


@dataclass(frozen=True)
class Conversation:
    """What the user can look at: a channel or a private conversation with someone."""

    kind: str  # "channel" or "private"
    name: str  # the channel's name, or the other user's name

    @classmethod
    def channel(cls, name):
        return cls("channel", name)

    @classmethod
    def private(cls, user):
        return cls("private", user)

    @property
    def is_channel(self):
        return self.kind == "channel"


@dataclass(frozen=True)
class ChatMessage:
    id: int
    time: datetime  # aware, UTC
    sender: str
    text: str
    conversation: Conversation
    nonce: str | None = None  # the sender's resend key, matching its pending copy
    edited: datetime | None = None  # the last edit's time
    deleted: bool = False  # a tombstone: the text is gone

    @classmethod
    def from_line(cls, line, me):
        """Build from a relayed or history line; ``me`` decides whose side a private message is on."""
        if "channel_message" in line:
            text, conversation = line["channel_message"], Conversation.channel(line["channel"])
        else:
            other = line["other_user"] if fold(line["user"]) == fold(me) else line["user"]
            text, conversation = line["private_message"], Conversation.private(other)
        edited = parse_time(line["edited"]) if "edited" in line else None
        return cls(line["id"], parse_time(line["time"]), line["user"], text, conversation,
                   line.get("nonce"), edited, "deleted" in line)

    @property
    def action(self):
        """What the sender did, for a ``/me`` message ("waves"); None for an ordinary one."""
        prefix = ACTION_FORMAT.format(user=self.sender, action="")
        return self.text[len(prefix):] if self.text.startswith(prefix) else None

    def mentions(self, user):
        """Whether the text names ``user`` as ``@user`` (any case, not inside a longer name)."""
        return rules.is_mentioned(self.text, user)

    def is_for(self, me):
        """A private message from someone else, or a channel message mentioning me: worth a notification."""
        if self.sender == me:
            return False
        return not self.conversation.is_channel or self.mentions(me)


@dataclass(frozen=True)
class PendingMessage:
    """A message typed but not acknowledged yet: shown as "sending…", or with the
    server's reason (``error``) once refused."""

    nonce: str
    conversation: Conversation
    text: str
    typed: datetime  # aware, UTC
    error: str | None = None  # the server's reason for refusing it
    sent: bool = False  # may have gone out already: sent again, it is marked as a resend


@dataclass(frozen=True)
class Member:
    user: str
    status: str  # "online", "away" or "offline"
    looking: bool = True  # looking at the channel now (else only a member of it)


@dataclass(frozen=True)
class ChannelInfo:
    name: str
    private: bool
    member: bool
    request: str | None  # state of my latest join request, if any


@dataclass(frozen=True)
class UserInfo:
    user: str
    status: str  # "online", "away" or "offline"


@dataclass(frozen=True)
class JoinRequest:
    id: int
    channel: str
    user: str


def parse_time(text):
    """Parse the server's ``2026-11-24T13:20:01.123Z`` into an aware UTC datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
