"""What every part of moderation shares: who acts, durations, dates, reasons, replies."""

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from chatd.auth import ChatError
from chatd.registry import DURATION_RULE
from chatd.rules import fold

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
REASON_MAX = 300
MAX_BAN_SECONDS = 100 * 365 * 86400      # longer overflows datetime; use a permanent ban
LOG_LIMIT_MAX = 500


@dataclass(frozen=True)
class Actor:
    """Who performs an admin action: a logged-in user, or the manhole (no account, no IP)."""
    name: str
    ip: str | None = None
    is_user: bool = True
    is_admin: bool = True

    def is_self(self, name):
        return self.is_user and fold(name) == fold(self.name)


MANHOLE = Actor("manhole", is_user=False)


def human_time(dt):
    return dt.strftime("%Y-%m-%d %H:%M:%S UTC")


def outcome(text, **data):
    """A command's reply: readable text in `result`, plus structured data."""
    return dict(result=text, **data)


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


def parse_time(value, end_of_day=False):
    """A naive UTC datetime from '2026-11-24', '2026-11-24T13:20[:05]', with 'Z' or '+02:00'.

    A time with an offset is converted to UTC. A bare date used as an upper
    bound means the end of that day, so 'until 2026-11-24' includes the 24th;
    bounds past the calendar's ends are clamped to them.
    """
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(value)
        except (ValueError, TypeError):
            raise ChatError(f"{value!r} is not a date. Write 2026-11-24 or 2026-11-24T13:20 "
                            "(UTC, or with an offset like +02:00).") from None
    try:
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(timezone.utc)
        if end_of_day and isinstance(value, str) and "T" not in value and " " not in value:
            parsed += timedelta(days=1)
    except OverflowError:
        parsed = datetime.max if parsed.year == datetime.max.year else datetime.min
    return parsed.replace(tzinfo=None)


def check_reason(reason):
    reason = (reason or "").strip()
    if len(reason) > REASON_MAX:
        raise ChatError(f"A reason is at most {REASON_MAX} characters; this one has {len(reason)}.")
    return reason


def check_limit(limit):
    if not 1 <= limit <= LOG_LIMIT_MAX:
        raise ChatError(f"The limit is between 1 and {LOG_LIMIT_MAX}.")
    return limit
