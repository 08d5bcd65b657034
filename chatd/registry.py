"""The registry: every protocol action and every admin command, declared once.

Everything else is derived from these declarations: the protocol's dispatch
and field checks (chatd/protocol.py), the text form of the commands and the
chat `help` (chatd/moderation/commands.py), the structured JSON form of the
admin commands (`{"ban": "bob", "duration": "3d", "reason": "spam"}`), the SSH
manhole's functions and their help (chatd/manhole.py), and the lists in
docs/protocol.md and docs/admin.md (`python -m chatd.registry` rewrites them;
a test fails when they are out of date).

An `Action` names its handler by convention: `ChatProtocol.do_<handler>`
receives the action's value and every field (defaults filled in) as keyword
arguments. A `Command` runs `Moderation.<key>(actor, **arguments)`.

To add a field to an action, add a `Field` to its `fields` and a parameter of
the same name to its handler; to add a command, add a `Command` and its
`Moderation` method.
"""

import json
import re
from dataclasses import dataclass
from functools import cached_property

from chatd.auth import ChatError
from chatd.limits import HEARTBEAT_COST

# Who may use an action or a command.
ANYONE = "anyone"           # also before login
LOGGED_IN = "logged-in"
ADMIN = "admin"

REQUIRED = object()         # a Field's default when the request must give it
TEXT, INT = (str,), (int,)  # a Field's accepted JSON types

# How a Field is written in a command's text form ('ban bob 2h spamming').
WORD = "word"               # the next word (optional if the field has a default)
FLAG = "flag"               # the literal word (the field's text name): True when present
REST = "rest"               # everything left, spaces included
PAIR = "pair"               # 'NAME VALUE' pairs in any order, e.g. 'since 2026-11-24'

DURATION_RULE = re.compile(r"(\d+)([smhdw])\Z")
TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false"}


@dataclass(frozen=True)
class Field:
    """One parameter: its name, accepted JSON types, default and one-line help.

    A default of None also admits an explicit null. `channel` fields accept a
    leading '#'. `text`, `word`, `match` and `metavar` say how the field is
    written in a command's text form.
    """
    name: str
    types: tuple
    default: object = REQUIRED
    help: str = ""
    channel: bool = False
    text: str = WORD
    word: str | None = None         # FLAG and PAIR: the word on the command line
    match: re.Pattern | None = None   # WORD: only a word matching this fills the field
    metavar: str | None = None

    @property
    def required(self):
        return self.default is REQUIRED

    @property
    def accepted(self):
        return self.types + ((type(None),) if self.default is None else ())

    def check(self, value, label=None):
        """The value if its type is accepted (a channel without its '#'), else ChatError."""
        if isinstance(value, bool) and bool not in self.types or \
                not isinstance(value, self.accepted):
            names = " or ".join(TYPE_NAMES.get(t, t.__name__) for t in self.types)
            raise ChatError(f"{label or self.name!r} must be {names}.")
        if self.channel and isinstance(value, str):
            return value.removeprefix("#")
        return value

    def usage(self):
        """How the field is written in a command's usage line."""
        metavar = self.metavar or self.name.upper()
        shown = {WORD: metavar, FLAG: self.word, REST: metavar.lower(),
                 PAIR: f"{self.word} {metavar}"}[self.text]
        return shown if self.required else f"[{shown}]"

    def signature(self):
        return self.name if self.required else f"{self.name}={self.default!r}"


@dataclass(frozen=True)
class Action:
    """One wire action: `{key: value, field: ..., "user": claim, "ref": ...}`.

    `value` is the action's main argument (the value of its key); `silent`
    actions are answered only when refused (the presence heartbeat).
    """
    key: str
    value: Field
    fields: tuple = ()
    access: str = LOGGED_IN
    cost: float = 1.0
    help: str = ""
    handler: str | None = None          # ChatProtocol.do_<handler>; default: the key
    silent: bool = False
    command: "Command | None" = None    # set on the structured form of an admin command

    # Worked out once, not per request (cached_property writes past the frozen dataclass).
    @cached_property
    def _fields_by_name(self):
        return {f.name: f for f in self.fields}

    @cached_property
    def _required(self):
        return [f.name for f in self.fields if f.required]

    @cached_property
    def handler_name(self):
        return "do_" + (self.handler or self.key)

    def bind(self, value, given):
        """The handler's keyword arguments from a request, or ChatError naming the field.

        The unexpected fields are reported first, then the missing ones, then
        the mistyped ones (the main value first).
        """
        named = self._fields_by_name
        if not given.keys() <= named.keys():
            unexpected = sorted(given.keys() - named.keys())
            raise ChatError(f"Unexpected field {unexpected[0]!r} for {self.key!r}.")
        missing = [name for name in self._required if name not in given]
        if missing:
            raise ChatError(f"Missing field {missing[0]!r}.")
        arguments = {self.value.name: self.value.check(value, label=self.key)}
        for name, given_value in given.items():
            arguments[name] = named[name].check(given_value)
        for f in self.fields:
            arguments.setdefault(f.name, f.default)
        return arguments


NO_VALUE = Field(None, TEXT)       # a command without a main argument
IGNORED = Field("_", TEXT)         # an action whose value means nothing (send "")


@dataclass(frozen=True)
class Command:
    """One admin command, in three forms: chat text, structured JSON, manhole function.

    Text: `/ban bob 2h spamming` (the `text` name, then `value` and `fields`
    as their Field.text says). Structured: `{"ban": "bob", "duration": "2h",
    "reason": "spamming"}` (the `key`, with the fields by name). Manhole:
    `ban("bob", "2h", "spamming")`. All three run `Moderation.<key>`.
    Without a main argument (NO_VALUE), the structured form's value is ignored.
    """
    text: str
    key: str | None                 # structured action key and manhole name; None: text only
    value: Field = NO_VALUE
    fields: tuple = ()
    access: str = ADMIN
    help: str = ""

    @property
    def parameters(self):
        """Every argument, in order: the main value (if it has one), then the fields."""
        return ((self.value,) if self.value.name else ()) + self.fields

    def own(self, arguments):
        """The command's arguments out of its structured action's (no placeholder value)."""
        return {f.name: arguments[f.name] for f in self.parameters}

    def usage(self):
        return " ".join([self.text] + [f.usage() for f in self.parameters])

    def signature(self):
        return f"{self.key}({', '.join(f.signature() for f in self.parameters)})"

    def action(self):
        """The structured form as a wire action."""
        value = self.value if self.value.name else IGNORED
        return Action(self.key, value, self.fields, access=self.access,
                      help=self.help, command=self)

    def parse(self, args):
        """The keyword arguments of a text command line (after the command's name)."""
        usage = ChatError(f"Usage: {self.usage()}")
        rest, arguments = args.strip(), {}
        pairs = {f.word: f for f in self.parameters if f.text == PAIR}
        flags = {f.word: f for f in self.parameters if f.text == FLAG}
        for f in self.parameters:
            if f.text == REST:
                if rest:
                    arguments[f.name] = rest
                rest = ""
            elif f.text == WORD:
                word, _, after = rest.partition(" ")
                if word and (f.match is None or f.match.match(word)):
                    arguments[f.name], rest = _from_text(f, word), after.strip()
                elif f.required:
                    raise usage
        words = rest.split()
        while words:
            word = words.pop(0)
            if word.lower() in flags and flags[word.lower()].name not in arguments:
                arguments[flags[word.lower()].name] = True
            elif word in pairs and words and pairs[word].name not in arguments:
                arguments[pairs[word].name] = _from_text(pairs[word], words.pop(0))
            else:
                raise usage
        for f in self.parameters:
            if f.required and f.name not in arguments:
                raise usage
            arguments.setdefault(f.name, f.default)
        return arguments


def _from_text(field, word):
    if int in field.types and str not in field.types:
        if not word.isdigit():
            raise ChatError(f"The {field.name} is a whole number, not {word!r}.")
        return int(word)
    return field.check(word)


USER = Field("user", TEXT, metavar="USER")
CHANNEL = Field("channel", TEXT, channel=True, metavar="CHANNEL")
TARGET = Field("target", TEXT, metavar="NAME|IP|CIDR")
LIMIT_HELP = "how many, at most 500"
LIST_MAX = 1000
DIRECTORY_PAGE = (Field("after", TEXT, None, "a cursor: the `next` of the previous page"),
                  Field("limit", INT, None, f"how many at most, 1 to {LIST_MAX} (default: "
                                            "as many as fit in one reply)"))
# A directory page may be as large as --max-reply (a message is at most a few kB),
# so it costs several requests of the flood budget.
DIRECTORY_COST = 4.0
NONCE = Field("nonce", TEXT, None, "1 to 64 characters of your choice: a resend with the"
              " same nonce is answered with the original id, not stored twice")
RESEND = Field("resend", (bool,), False, "true if this nonce may have been sent before"
               " (after a lost connection or a timeout); a first send leaves it out")
HISTORY_PAGE = (Field("before", INT, None, "a message id: only older messages"),
                Field("limit", INT, None, "how many, 1 to 200 (default 50)"))


# -- the protocol's actions -----------------------------------------------------------

PROTOCOL_ACTIONS = (
    Action("register", Field("name", TEXT), (Field("password", TEXT), Field("email", TEXT)),
           access=ANYONE, help="create an account (does not log in)"),
    Action("user:pwd", Field("credentials", TEXT), access=ANYONE, handler="login",
           help="log in: the value is \"name:password\""),
    Action("logout", Field("name", TEXT), help="log out; the connection stays open"),
    Action("list_channels", IGNORED, DIRECTORY_PAGE, cost=DIRECTORY_COST,
           help="the channels, and your membership, a page at a time"),
    Action("list_users", IGNORED, DIRECTORY_PAGE, cost=DIRECTORY_COST,
           help="everyone you can write to privately, a page at a time"),
    Action("list_members", Field("channel", TEXT, channel=True), DIRECTORY_PAGE,
           cost=DIRECTORY_COST,
           help="every member of a channel, with status and whether they look at it, a page at"
                " a time (a private channel: for its members and the admins)"),
    Action("join", Field("channel", TEXT), help="join a channel, or ask to join a private one"),
    Action("leave", Field("channel", TEXT), help="leave a channel"),
    Action("channel_message", Field("text", TEXT), (Field("channel", TEXT), NONCE, RESEND),
           help="send a message to a channel"),
    Action("private_message", Field("text", TEXT), (Field("other_user", TEXT), NONCE, RESEND),
           help="send a private message"),
    Action("edit_message", Field("text", TEXT), (Field("id", INT, help="the message's id"),),
           help="change the text of a message of yours"),
    Action("delete_message", Field("id", INT),
           help="delete a message of yours (admins: anyone's)"),
    Action("get_channel", Field("channel", TEXT), HISTORY_PAGE,
           help="a channel's history (counts as looking at it)"),
    Action("get_private", Field("other_user", TEXT), HISTORY_PAGE,
           help="a private conversation's history"),
    Action("list_conversations", IGNORED,
           help="your channels and private conversations, with last message and unread counts"),
    Action("mark_read", Field("id", INT),
           (Field("channel", TEXT, None, "the channel", channel=True),
            Field("other_user", TEXT, None, "or the private conversation")),
           help="you have read up to message `id` there (the marker only moves forward)"),
    Action("search", Field("text", TEXT),
           (Field("channel", TEXT, None, "only this channel", channel=True),
            Field("other_user", TEXT, None, "only this private conversation")) + HISTORY_PAGE,
           help="messages with every word, newest first, from conversations you may read;"
                " `more_before` while more may remain"),
    Action("typing", Field("active", (bool,)),
           (Field("channel", TEXT, None, "the channel", channel=True),
            Field("other_user", TEXT, None, "or the private conversation")),
           cost=HEARTBEAT_COST, silent=True,
           help="you are typing there (true) or stopped (false); told to those looking"),
    Action("presence", Field("status", TEXT, help="online or away"),
           (Field("channel", TEXT, None, "the channel you look at"),
            Field("other_user", TEXT, None, "the private conversation you look at")),
           cost=HEARTBEAT_COST, silent=True,
           help="the heartbeat: online/away and what you look at"),
    Action("command", Field("line", TEXT), help="a chat command as text, e.g. \"ban Jules 1h\""),
    Action("my_requests", IGNORED, help="your join requests and their states"),
)


# -- the admin commands ----------------------------------------------------------------

COMMAND_LIST = (
    Command("help", None, access=LOGGED_IN, help="list the commands you may use"),
    Command("admin", "admin", Field("name", TEXT), help="make NAME an admin"),
    Command("unadmin", "unadmin", Field("name", TEXT),
            help="take the admin role from NAME (not from yourself)"),
    Command("create", "create_channel", Field("name", TEXT, channel=True, metavar="CHANNEL"),
            (Field("private", (bool,), False, text=FLAG, word="private"),),
            help="create a channel (public unless private); you become a member"),
    Command("delete", "delete_channel", Field("name", TEXT, channel=True, metavar="CHANNEL"),
            help="delete a channel, its memberships and join requests "
                 "(its messages stay in the log)"),
    Command("requests", "requests", help="list pending join requests"),
    Command("accept", "accept", USER, (CHANNEL,), help="accept USER's request to join CHANNEL"),
    Command("reject", "reject", USER, (CHANNEL,), help="reject USER's request to join CHANNEL"),
    Command("remove", "remove", USER, (CHANNEL,), help="remove USER from CHANNEL"),
    Command("kick", "kick", TARGET, (Field("reason", TEXT, "", text=REST),),
            help="disconnect now (they may come back)"),
    Command("ban", "ban", TARGET,
            (Field("duration", (str, int), None, "30s, 30m, 2h, 7d, 2w or seconds; "
                   "none: permanent", match=DURATION_RULE, metavar="duration"),
             Field("reason", TEXT, "", text=REST)),
            help="disconnect and keep out; duration like 30m, 2h, 7d (none: permanent)"),
    Command("unban", "unban", TARGET, help="lift a ban"),
    Command("bans", "bans", help="list active bans"),
    Command("users", "users", help="who is online, from which IP, looking at what"),
    Command("log", "log", fields=(
             Field("sender", TEXT, None, text=PAIR, word="user", metavar="NAME"),
             Field("channel", TEXT, None, channel=True, text=PAIR, word="channel",
                   metavar="CHANNEL"),
             Field("since", TEXT, None, text=PAIR, word="since", metavar="DATE"),
             Field("until", TEXT, None, text=PAIR, word="until", metavar="DATE"),
             Field("limit", INT, 50, LIMIT_HELP, text=PAIR, word="limit", metavar="N")),
            help="who sent what, when and where: one user or one channel (dates in UTC, "
                 "2026-11-24 or 2026-11-24T13:20, or with an offset like +02:00)"),
    Command("audit", "audit", fields=(
             Field("limit", INT, 20, LIMIT_HELP, text=PAIR, word="limit", metavar="N"),),
            help="the latest admin actions"),
)

COMMANDS = {c.text: c for c in COMMAND_LIST}               # by text name
ACTIONS = {a.key: a for a in PROTOCOL_ACTIONS}              # by wire key, both kinds
ACTIONS.update((c.key, c.action()) for c in COMMAND_LIST if c.key is not None)


# -- the lists in the docs ------------------------------------------------------------------

def _escape(text):
    return text.replace("|", "\\|")


def actions_table():
    """docs/protocol.md's table of actions."""
    rows = ["| action | value | fields | who | what |", "| --- | --- | --- | --- | --- |"]
    for a in PROTOCOL_ACTIONS:
        fields = "; ".join(f"`{f.name}`" + ("" if f.required else " (optional)")
                           + (f": {f.help}" if f.help else "") for f in a.fields) or "–"
        value = '`""`' if a.value is IGNORED else f"`{a.value.name}`"
        rows.append(f"| [`{a.key}`](#{a.key.replace(':', '')}) | {value} | {fields} "
                    f"| {a.access} "
                    f"| {a.help} |")
    return "\n".join(rows)


def commands_table():
    """docs/admin.md's table of commands in both forms."""
    rows = ["| Command (text) | Structured form (with the defaults) | Who | What it does |",
            "| --- | --- | --- | --- |"]
    for c in COMMAND_LIST:
        structured = "–"
        if c.key is not None:
            value = f'"{c.value.metavar or c.value.name.upper()}"' if c.value.name else '""'
            fields = "".join(f', "{f.name}": ' + ("…" if f.required else json.dumps(f.default))
                             for f in c.fields)
            structured = f'`{{"{c.key}": {value}{fields}}}`'
        rows.append(f"| `{_escape(c.usage())}` | {_escape(structured)} | {c.access} "
                    f"| {_escape(c.help)} |")
    return "\n".join(rows)


def manhole_help():
    """The manhole's help(): one line per function."""
    lines = []
    for c in COMMAND_LIST:
        if c.key is not None:
            signature = c.signature()
            lines.append(f"{signature:<48}{c.help}" if len(signature) < 48
                         else f"{signature}\n{'':<48}{c.help}")
    return "\n".join(lines)


GENERATED = {
    "docs/protocol.md": {"actions": actions_table},
    "docs/admin.md": {"commands": commands_table, "manhole": lambda: (
        "    " + manhole_help().replace("\n", "\n    "))},
}


def render(text, blocks):
    """`text` with each <!-- registry:NAME --> ... <!-- /registry:NAME --> block regenerated."""
    for name, make in blocks.items():
        start, end = f"<!-- registry:{name} -->", f"<!-- /registry:{name} -->"
        before, found, rest = text.partition(start)
        if not found or end not in rest:
            raise ValueError(f"no {start} ... {end} block")
        text = f"{before}{start}\n{make()}\n{end}{rest.partition(end)[2]}"
    return text


def main(root="."):
    """Rewrite the generated lists in the docs (run from the repository's root)."""
    from pathlib import Path
    for path, blocks in GENERATED.items():
        file = Path(root) / path
        file.write_text(render(file.read_text(), blocks))


if __name__ == "__main__":
    main()
