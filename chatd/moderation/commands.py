"""Running the admin commands declared in chatd/registry.py, in their three forms.

The text form (`{"command": "ban Jules 1h spamming"}`) is parsed by the
command's declaration; the structured form (`{"ban": "Jules", "duration":
"1h"}`) arrives already checked by the protocol; the manhole binds its
function's arguments. All end in `execute`, which checks who may, and calls
`Moderation.<key>(actor, **arguments)`.
"""

from twisted.internet import defer

from chatd.auth import ChatError
from chatd.moderation.common import Actor
from chatd.registry import ADMIN, COMMANDS


def actor_of(session):
    return Actor(session.name, session.ip, is_admin=session.is_admin)


def check_access(command, actor, name=None):
    if command.access == ADMIN and not actor.is_admin:
        raise ChatError(f"Only admins may use {name or command.text!r}.")


def run_text(moderation, session, line):
    """Parse one chat command ('ban Jules 1h spamming', with or without '/') and run it."""
    words = line.strip().removeprefix("/").split(None, 1)
    if not words:
        raise ChatError("Type a command after the slash; 'help' lists them.")
    name = words[0].lower()
    command = COMMANDS.get(name)
    if command is None:
        raise ChatError(f"There is no command {name!r}; 'help' lists the commands you can use.")
    actor = actor_of(session)
    check_access(command, actor)
    return execute(moderation, actor, command, command.parse(words[1] if len(words) > 1 else ""))


def execute(moderation, actor, command, arguments):
    """Deferred firing with the command's reply: its name, `result` text and data."""
    check_access(command, actor, command.key)
    d = defer.maybeDeferred(getattr(moderation, command.key or command.text), actor, **arguments)
    return d.addCallback(lambda result: dict(command=command.text, **result))


def help_text(actor):
    usable = [c for c in COMMANDS.values() if c.access != ADMIN or actor.is_admin]
    lines = [f"{c.usage()} - {c.help}" for c in usable]
    if not actor.is_admin:
        lines.append("(Other commands are for admins. To join a private channel, "
                     "send join; my_requests shows your requests.)")
    return "\n".join(lines), [c.text for c in usable]
