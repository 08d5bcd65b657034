"""Moderation: private channels and join requests, kicks, bans, the audit and message logs.

One code path for every front end: the chat's text commands, their structured
JSON form and the SSH manhole all reach the methods below named after the
command keys in chatd/registry.py (`Moderation.ban`, `Moderation.accept`, ...),
which check, act, write SQL and write the audit log.

    bans.py       kicks, bans and the active-ban list
    requests.py   join requests; creating, deleting and pruning channels
    audit.py      the audit log and the message log admins read
    commands.py   running a command: text parsing, who may, help
    common.py     the actor, durations, dates, reasons

IP addresses and ranges are in chatd/addresses.py, shared with the connection limits.
"""

from twisted.internet import defer

from chatd.auth import ChatError
from chatd.moderation.audit import AuditLog
from chatd.moderation.bans import BanList
from chatd.moderation.commands import execute, help_text, run_text
from chatd.moderation.common import MANHOLE, Actor, outcome
from chatd.moderation.requests import JoinRequests

__all__ = ["MANHOLE", "Actor", "Moderation"]


class Moderation:
    def __init__(self, server):
        self.server = server
        self.hub = server.hub
        self.accounts = server.accounts
        self.audit_log = AuditLog(self.hub, server.store)
        self.ban_list = BanList(self.hub, server.store, self.audit_log)
        self.join_requests = JoinRequests(self.hub, server.store, self.audit_log)

    @defer.inlineCallbacks
    def load(self):
        """Read the active bans and the latest join requests (once, at start)."""
        yield self.ban_list.load()
        yield self.join_requests.load()

    # -- hooks called by the server, the protocol, the accounts and the hub ----------

    def refuse_connection(self, connection):
        ban = self.ban_list.ip_ban(connection.ip)
        return None if ban is None else ("banned", ban.notice())

    def check_login_allowed(self, name, ip):
        ban = self.ban_list.name_ban(name) or self.ban_list.ip_ban(ip)
        if ban is not None:
            raise ChatError(ban.notice())

    def can_receive_private(self, name):
        return self.ban_list.name_ban(name) is None

    def join_request_states(self, name):
        return self.join_requests.states(name)

    def my_requests(self, session):
        return self.join_requests.of(session.name)

    def request_to_join(self, session, channel):
        return self.join_requests.request_to_join(session, channel)

    def run_command(self, session, line):
        """The text form: {"command": "ban Jules 1h spamming"}."""
        return run_text(self, session, line)

    def run(self, actor, command, arguments):
        """The structured and manhole forms: arguments already bound to the declaration."""
        return execute(self, actor, command, arguments)

    # -- the commands, one method per chatd.registry.COMMANDS key -----------------------

    def help(self, actor):
        text, usable = help_text(actor)
        return outcome(text, commands=usable)

    def admin(self, actor, name):
        return self._set_admin(actor, name, True)

    def unadmin(self, actor, name):
        return self._set_admin(actor, name, False)

    @defer.inlineCallbacks
    def _set_admin(self, actor, name, admin):
        registered = self.accounts.name_of(name)
        if actor.is_self(registered) and not admin:
            raise ChatError("You cannot take away your own admin role; ask another admin.")
        if self.accounts.is_admin(registered) == admin:
            raise ChatError(f"{registered} is already {'an admin' if admin else 'not an admin'}.")
        role = yield self.accounts.set_role(registered, "admin" if admin else "user")
        yield self.audit_log.record(actor, "admin" if admin else "unadmin", registered)
        return outcome(f"{registered} is now an admin." if admin
                       else f"{registered} is no longer an admin.", user=registered, role=role)

    def create_channel(self, actor, name, private):
        return self.join_requests.create_channel(actor, name, private)

    def delete_channel(self, actor, name):
        return self.join_requests.delete_channel(actor, name)

    def requests(self, actor):
        return self.join_requests.pending()

    def accept(self, actor, user, channel):
        return self.join_requests.decide(actor, user, channel, accept=True)

    def reject(self, actor, user, channel):
        return self.join_requests.decide(actor, user, channel, accept=False)

    def remove(self, actor, user, channel):
        return self.join_requests.remove_member(actor, user, channel)

    def kick(self, actor, target, reason):
        return self.ban_list.kick(actor, target, reason)

    def ban(self, actor, target, duration, reason):
        return self.ban_list.ban(actor, target, duration, reason)

    def unban(self, actor, target):
        return self.ban_list.unban(actor, target)

    def bans(self, actor):
        return self.ban_list.listing()

    def users(self, actor):
        """Everyone online: name, IP, role, status and what they are looking at."""
        users = []
        for session in self.hub.sessions.values():
            viewing = None
            if session.viewing is not None:
                kind, place = session.viewing
                viewing = f"#{place}" if kind == "channel" else f"@{place}"
            users.append({"user": session.name, "ip": session.ip, "role": session.role,
                          "status": session.status, "viewing": viewing})
        # Logged in on another node of a cluster: the channel they look at is known from
        # that node's member events (a private conversation is not).
        looking = self.hub.presence.looking
        for name, (node, status) in self.hub.elsewhere.items():
            viewing = next((f"#{channel}" for channel, viewers in looking.items()
                            if name in viewers), None)
            users.append({"user": name, "ip": self.hub.ips.get(name), "node": node,
                          "role": self.accounts.role_of(name), "status": status,
                          "viewing": viewing})
        users.sort(key=lambda u: u["user"].casefold())
        lines = [f"{u['user']} ({u['role']}) from {u['ip']}: {u['status']}, "
                 + (f"looking at {u['viewing'] or 'nothing'}" if "node" not in u
                    else f"on node {u['node']}"
                    + (f", looking at {u['viewing']}" if u["viewing"] else ""))
                 for u in users]
        return outcome("\n".join(lines) or "Nobody is online.", users=users)

    def log(self, actor, sender, channel, since, until, limit):
        return self.audit_log.message_log(actor, sender, channel, since, until, limit)

    def audit(self, actor, limit):
        return self.audit_log.entries(limit)
