"""Typed values the model hands to the widgets instead of raw server dictionaries."""

from dataclasses import dataclass
from datetime import datetime, timezone

from chatd.rules import fold


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

    @property
    def title(self):
        return f"# {self.name}" if self.is_channel else f"@ {self.name}"


@dataclass(frozen=True)
class ChatMessage:
    id: int
    time: datetime  # aware, UTC
    sender: str
    text: str
    conversation: Conversation

    @classmethod
    def from_line(cls, line, me):
        """Build from a relayed or history line; ``me`` decides whose side a private message is on."""
        if "channel_message" in line:
            text, conversation = line["channel_message"], Conversation.channel(line["channel"])
        else:
            other = line["other_user"] if fold(line["user"]) == fold(me) else line["user"]
            text, conversation = line["private_message"], Conversation.private(other)
        return cls(line["id"], parse_time(line["time"]), line["user"], text, conversation)


@dataclass(frozen=True)
class Member:
    user: str
    status: str  # "online" or "away"


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
