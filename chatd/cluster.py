"""One node of a cluster: joining the bus at start, and the state every node shares.

ChatServer makes a Cluster when --bus is given (docs/cluster.md). At start it
checks the setup, connects the NatsBus (chatd/natsbus.py) and notes the
stream's last sequence before the state is loaded from SQL; after the load it
replays the stream from the next sequence, so nothing committed meanwhile is
missed (applying an event twice changes nothing), and only then does the
server listen.

The state every node keeps in memory (accounts and roles, logins and IPs,
bans, channels, memberships, join requests) is written to SQL by the node
where it changes, which then puts the change on the bus; every other node
applies it: STATE controls (`apply_<action>`), and the joined/left controls
that already go to the user's sessions. A node's own events are not applied
again: its memory changed before it sent them.

Presence across nodes: who is online elsewhere (Hub.elsewhere) and who looks
at a channel from another node (Presence.looking) come from the other nodes'
status and member events. Each node sends a heartbeat; a node silent for the
presence timeout is taken as dead (or sooner, when one of its users logs in on
another node and NATS says nobody is connected under its name any more:
Cluster.moved, NatsBus.probe), and every other node takes its users
offline (telling its own clients, as the dead node cannot), applies the state
the dead node committed but never told (reload_state), and relays to its
clients, from SQL, the messages the dead node stored but never put on the
stream (each message row names its node; ids increase in store order).
"""

import ipaddress

from twisted.internet import defer, task
from twisted.logger import Logger

from chatd.auth import ChatError
from chatd.bus import STATE, channel_topic, members_topic, peer_topic, user_topic
from chatd.moderation.requests import JoinRequest
from chatd.natsbus import BusError, NatsBus
from chatd.presence import OFFLINE, STATUSES
from chatd.rules import fold
from chatd.store import MAX_BATCH as MESSAGE_PAGE, utcnow

log = Logger()
HEARTBEATS_PER_TIMEOUT = 3      # heartbeats a node sends within one presence timeout
# A login refused while cut off from the bus (the desktop client tries another node).
CATCHING_UP = ("This server is catching up with the others after a network cut;"
               " try again in a moment, or connect to another server.")
CUT_OFF = ("This server is cut off from the others (a network cut): a removal or a change"
           " made here now could not reach them; try again in a moment, or on another"
           " server.")


def state_key(topic, action, data):
    """The piece of shared state a control event sets (a reload leaves it alone), else None."""
    if topic == STATE:
        if action == "account":
            return ("account", data["name"])
        if action in ("ban", "unban"):
            return ("ban", data["row"][0] if action == "ban" else data["id"])
        if action in ("channel", "channel_deleted"):
            return ("channel", data["name"])
        if action == "request":
            _, channel, user = data["row"][:3]
            return ("request", fold(user), channel)
    elif topic[0] == "user" and action in ("joined", "left"):
        return ("member", data["channel"], topic[1])
    elif topic[0] == "user" and action == "role":    # to the sessions, with "account"
        return ("account", topic[1])
    return None


def _message_id(envelope):
    """The id of the channel or private message a publish carries, else None."""
    payload = envelope["p"]
    if "channel_message" in payload or "private_message" in payload:
        return payload.get("id")
    return None


class Cluster:
    def __init__(self, server):
        self.server = server
        self.config = server.config
        self.node = self.config.node_name
        self.bus = NatsBus(self.config.bus, self.node)
        self.bus.observers.append(self.observe)
        self.bus.sent.append(self._sent)
        self.bus.node_lost = self.node_lost
        self.bus.admit = self._admit
        self.bus.disconnected.append(self._cut_off)
        self.bus.reconnected.append(self._rejoined)
        self.serving = True     # False from a cut until this node has caught up again
        self.remote_looking = {}    # (channel, user) -> node, for users looking from elsewhere
        self._first = None
        self.last_message = {}  # other node -> highest id of its messages seen on the stream
        self.recovered = set()  # (topic, id) relayed from SQL after their node was lost
        self._arriving = {}     # lost node -> ids of its messages seen while relaying its others
        self._start_id = 0      # the highest message id when this node loaded its state
        self._reloads = []      # per reload_state reading SQL: the state_keys set meanwhile
        # Nodes taken as lost whose state events are read from SQL until they say "back".
        self.late = set()
        self._rereading = self._read_more = False   # _read_again running, asked again
        self._heartbeat = None
        accounts = server.accounts
        accounts.account_created.append(self._tell_account)
        accounts.role_changes.append(self._tell_account)
        accounts.login_checks.append(self._check_serving)
        accounts.change_checks.append(self._check_connected)

    @property
    def hub(self):
        return self.server.hub

    # -- start and stop --------------------------------------------------------------

    def check_setup(self):
        """BusError (one sentence) if this process cannot be a node."""
        if self.server.store.engine.name != "mysql":
            raise BusError("--bus needs a mysql:// database that every node shares;"
                           " SQLite is for a single node.")
        from twisted.internet import asyncioreactor
        if not isinstance(self.server.reactor, asyncioreactor.AsyncioSelectorReactor):
            raise BusError("--bus needs Twisted's asyncio reactor:"
                           " run twistd --reactor=asyncio chatd ...")
        try:
            import nats  # noqa: F401
        except ImportError:
            raise BusError("--bus needs nats-py, which is not installed:"
                           " pip install 'chatd[cluster]'.") from None

    @defer.inlineCallbacks
    def connect(self):
        """Before the state is loaded from SQL: join the bus, note where the stream is."""
        last = yield self.bus.start()
        self._first = last + 1
        # Older messages are in the history this node's clients load when they log in.
        self._start_id = yield self.server.store.last_message_id()

    @defer.inlineCallbacks
    def catch_up(self):
        """After the load: apply what the stream got since, then follow it (and say so to
        nodes that took an earlier process of this name as lost: apply_lost)."""
        yield self.bus.consume(self._first)
        self.bus.control(STATE, "back", {})
        timeout = self.config.presence_timeout
        self.bus.watch_nodes(timeout)
        self._heartbeat = task.LoopingCall(self.bus.heartbeat)
        self._heartbeat.clock = self.server.reactor
        self._heartbeat.start(timeout / HEARTBEATS_PER_TIMEOUT)

    def stop(self):
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        return self.bus.stop()

    # -- cut off from the bus, and back ---------------------------------------------------

    def _cut_off(self):
        self.serving = False

    def _rejoined(self):
        """Catch up with what the stream got meanwhile, then serve logins again."""
        self.announce_sessions()
        d = self.bus.catch_up()
        d.addCallback(lambda _: setattr(self, "serving", True))
        d.addErrback(lambda f: log.failure("bus: catching up after a reconnection", f))

    def _check_serving(self, name, ip):
        if not self.serving:
            raise ChatError(CATCHING_UP)

    def _check_connected(self):
        """A removal or change made while this node knows it is cut off would reach the
        others late: when it is back, after the changes they made meanwhile (undoing a
        fresher one), or from SQL only once they take it as lost (reload_state). So it
        is refused, and the admin can make it on another node. Additions are taken: no
        other node can change what it has not learnt yet."""
        if not self.serving:
            raise ChatError(CUT_OFF)

    # -- telling the other nodes ---------------------------------------------------------

    def _tell_account(self, name, role):
        self.bus.control(STATE, "account", {"name": name, "role": role})

    def announce_sessions(self):
        """After a cut from the bus: the other nodes may have taken this node's users
        offline, so say again who is online here and what they look at."""
        presence = self.hub.presence
        for session in list(self.hub.sessions.values()):
            self.bus.control(STATE, "login", {"user": session.name, "ip": session.ip,
                                              "session": session.id})
            presence.announce(session)

    # -- what the other nodes did -------------------------------------------------------

    def observe(self, node, topic, kind, body):
        if kind == "control" and topic == STATE and body["a"] == "login":
            self._logged_in(node, **body["d"])          # this node's own logins too
        if kind == "control" and topic == STATE and body["a"] == "lost":
            self.apply_lost(node, **body["d"])          # this node's own too
            return
        if node == self.node:
            return
        if self._is_late(node, topic, body):
            self._read_again()
            return
        message_id = _message_id(body) if kind == "publish" else None
        if message_id is not None:
            if message_id > self.last_message.get(node, 0):
                self.last_message[node] = message_id
            if node in self._arriving:
                self._arriving[node].add(message_id)
        if kind == "control":
            self._touch(topic, body["a"], body["d"])
            if topic == STATE:
                getattr(self, "apply_" + body["a"])(node, **body["d"])
            elif topic[0] == "user" and body["a"] in ("joined", "left"):
                self._membership(topic[1], body["a"], **body["d"])
        elif topic[0] == "peer":
            self._status(node, topic[1], body["p"].get("status"))
        elif topic[0] == "channel" and body["p"].get("event") == "member":
            self._looking(node, topic[1], body["p"]["user"], body["p"]["status"])

    def _sent(self, topic, envelope):
        if "a" in envelope:     # this node's own changes, as it makes them
            self._touch(topic, envelope["a"], envelope["d"])

    def _touch(self, topic, action, data):
        if self._reloads:
            key = state_key(topic, action, data)
            if key is not None:
                for touched in self._reloads:
                    touched.add(key)

    def apply_lost(self, node, name):
        """`node` took `name` as lost (node_lost) and read its state from SQL. Events that
        `name` sent earlier and that reach the stream only now (queued during a cut it did
        not notice: it took changes meanwhile) come after what the others changed since;
        applied, they would undo it. So every node reads SQL for them instead (_read_again),
        until `name` says "back": once the stream has acknowledged all it sent before it
        heard of this, what it sends comes in time again."""
        if name != self.node:
            self.late.add(name)
            return
        self.announce_sessions()    # the others took this node's users offline
        self.bus.sent_all().addCallback(lambda _: self.bus.control(STATE, "back", {}))

    def apply_back(self, node):
        self.late.discard(node)

    def late_close(self, topic, seen, kind, reason, keep=None, network=None, ban=None):
        """A `close` control of a node taken as lost, sent when it had applied the stream
        up to `seen`: it may come long after it was made. A kick or a newer login there
        closes only the sessions here whose login was on the stream by then (it knew of
        them; a session that logged in since is newer than the kick, or than the login
        it is about); a ban's close acts only while that ban is still active here (lifted
        meanwhile, it covers nobody; not known here yet, the reading of SQL for its late
        state event closes what it covers)."""
        if ban is not None and ban not in self.server.moderation.ban_list.active:
            return

        def covered(session):
            return ban is not None or (session is not None and session.login_seq is not None
                                       and session.login_seq <= seen)
        data = {"kind": kind, "reason": reason}
        if topic[0] == "user":
            session = self.hub.sessions.get(topic[1])
            if covered(session):
                session.control_close(**data, keep=keep)
        else:   # CONNECTIONS
            for connection in self.hub.connections_in(ipaddress.ip_network(network)):
                if covered(connection.session):
                    connection.disconnect(kind, reason)

    def _is_late(self, node, topic, envelope):
        """A state event of a node taken as lost and not back yet (apply_lost)."""
        return node in self.late and "a" in envelope and \
            state_key(topic, envelope["a"], envelope["d"]) is not None

    @defer.inlineCallbacks
    def _read_again(self):
        """A late state event: what its node changed is in SQL (it commits, then tells),
        with what the others changed after, so the state is read again from SQL rather
        than the event applied; late events arriving meanwhile make one more reading."""
        self._read_more = True
        if self._rereading:
            return
        self._rereading = True
        try:
            while self._read_more:
                self._read_more = False
                yield self.reload_state()
        except Exception:
            log.failure("reading the state again from SQL for a late event")
        finally:
            self._rereading = False

    def apply_account(self, node, name, role):
        """An account created, or its role changed."""
        self.server.accounts.add(name, role)

    def apply_login(self, node, user, ip, session):
        """The newest login of `user` is on `node` (its older sessions close by the bus;
        `session` is its id, for that node: _logged_in)."""
        self.hub.ips[user] = ip
        if user not in self.hub.sessions:
            before = self.hub.elsewhere.get(user, (node,))[0]
            self.hub.elsewhere[user] = (node, "online")
            if before != node:
                self.moved(user, before)

    def apply_ban(self, node, row):
        self.server.moderation.ban_list.restore(row, utcnow())

    def apply_unban(self, node, id):
        self.server.moderation.ban_list.lift(id)

    def apply_channel(self, node, id, name, private):
        from chatd.hub import Channel
        self.hub.channels.setdefault(name, Channel(id, name, private))

    def apply_channel_deleted(self, node, name):
        self.hub.channels.pop(name, None)
        self.server.moderation.join_requests.forget_channel(name)

    def apply_request(self, node, row):
        self.server.moderation.join_requests.remember(JoinRequest.from_row(row))

    def _membership(self, user, action, channel):
        found = self.hub.channels.get(channel)
        if found is not None:
            (found.members.add if action == "joined" else found.members.discard)(user)

    def _status(self, node, user, status):
        """A status event of a user on another node (their sessions here are closed)."""
        if user in self.hub.sessions:
            return
        if status in STATUSES:
            self.hub.elsewhere[user] = (node, status)
        elif self.hub.elsewhere.get(user, (None,))[0] == node:
            del self.hub.elsewhere[user]

    def _looking(self, node, channel, user, status):
        """A member event from another node: keep who looks at `channel` from there."""
        if user in self.hub.sessions:
            return
        looking = self.hub.presence.looking
        if status in STATUSES:
            looking.setdefault(channel, {})[user] = status
            self.remote_looking[channel, user] = node
        elif self.remote_looking.get((channel, user)) == node:
            del self.remote_looking[channel, user]
            self._forget_looking(channel, user)

    def _logged_in(self, node, user, ip, session):
        """The newest login of `user` is on `node`: where their sessions on other nodes
        looked, they look no more (those nodes publish nothing for a replaced session,
        as it would come after the new session's events). A session of this node notes
        where its login is on the stream (late_close)."""
        local = self.hub.sessions.get(user)
        if node == self.node and local is not None and local.id == session \
                and local.login_seq is None:
            local.login_seq = self.bus.applied
        for (channel, name), where in list(self.remote_looking.items()):
            if name == user and where != node:
                del self.remote_looking[channel, name]
                if local is not None and local.viewing == channel_topic(channel):
                    continue    # the entry is this node's new session's now
                self._forget_looking(channel, user)
                self.bus.local.publish(channel_topic(channel), {
                    "event": "member", "channel": channel, "user": user, "status": "left"})

    def _forget_looking(self, channel, user):
        looking = self.hub.presence.looking
        viewers = looking.get(channel, {})
        viewers.pop(user, None)
        if not viewers:
            looking.pop(channel, None)

    def _admit(self, node, topic, envelope):
        """A message relayed here from SQL (its node was taken as lost) is not shown again
        when its own copy reaches the stream after all, and a late state event
        (apply_lost) does not reach the sessions: the reading of SQL tells them."""
        if self._is_late(node, topic, envelope):
            return False
        if node in self.late and envelope.get("a") == "close":
            self.late_close(topic, envelope["s"], **envelope["d"])
            return False
        if not self.recovered or "p" not in envelope:
            return True
        key = (topic, _message_id(envelope))
        if key in self.recovered:
            self.recovered.discard(key)
            return False
        return True

    @defer.inlineCallbacks
    def relay_lost_messages(self, node):
        """`node` is gone, perhaps with messages it committed and acknowledged but had not
        put on the stream yet (queued in its memory during a NATS cut, or in flight):
        relay, to this node's clients, every message it stored above the last one of
        its that came through the stream, in id order (its order on the stream)."""
        if node in self._arriving:
            return      # a relay of its messages is running; it reads to the end
        after = max(self.last_message.get(node, 0), self._start_id)
        arrived = self._arriving[node] = set()  # its ids that come through the stream now
        store, local = self.server.store, self.bus.local
        count = 0
        try:
            yield self.bus.catch_up()   # what it did put on the stream comes first
            yield self.reload_state()
            while True:
                found = yield store.messages_of_node(node, after)
                names = {c.id: c.name for c in self.hub.channels.values()}
                for message in found:
                    after = message.id
                    if message.id in arrived:
                        continue    # its stream copy came after all
                    if message.channel_id is not None:
                        message.channel = names.get(message.channel_id)
                        if message.channel is None:
                            continue    # the channel was deleted since
                        topics = [members_topic(message.channel)]
                    else:
                        topics = [user_topic(name) for name in
                                  dict.fromkeys((message.recipient, message.sender))]
                    payload = message.to_wire()
                    for topic in topics:
                        self.recovered.add((topic, message.id))
                        local.publish(topic, payload)
                    count += 1
                if len(found) < MESSAGE_PAGE:
                    break
        finally:
            del self._arriving[node]
        if count:
            log.warn("relayed {count} messages that node {node} stored but had not put on"
                     " the bus", count=count, node=node)

    @defer.inlineCallbacks
    def reload_state(self):
        """After a node was lost: what it wrote to SQL but never told the others (its events
        queued in its memory during a NATS cut, or in flight when it died) is read again
        and applied here, additions, removals and changes alike: accounts and roles, bans
        (closing the sessions a new one covers), channels, memberships, join requests;
        this node's clients are told as by the bus.

        A row read here may be older than an event that arrives while the reads run (the
        other nodes commit, then tell): the state_keys of every event applied or sent
        here from the first read to the last are left as they are, and so is what this
        node changed in memory and is still writing (Hub.deciding). An event that came
        before the first read was committed before it, so SQL has it."""
        store = self.server.store
        touched = set()
        self._reloads.append(touched)
        try:
            now = utcnow()
            users = yield store.all_users()
            bans = yield store.active_bans(now)
            channels = yield store.all_channels()
            memberships = yield store.all_memberships()
            ends = yield store.membership_ends()    # after: a membership gone is in it
            requests = yield store.latest_join_requests()
        finally:
            self._reloads.remove(touched)
        # What this node changed in memory and is still writing: the reads may predate it.
        touched.update(state_key(*change) for change in self.hub.writing)
        self._reload_roles(users, touched)
        self._reload_bans(bans, now, touched)
        by_id = self._reload_channels(channels, touched)
        self._reload_memberships(memberships, ends, by_id, touched)
        for row in requests:
            request = JoinRequest.from_row(row)
            if not touched & {("request", fold(request.user), request.channel),
                              ("channel", request.channel)}:
                self.server.moderation.join_requests.remember(request)

    def _reload_roles(self, users, touched):
        accounts = self.server.accounts
        for name, role, _ in users:
            if accounts.roles.get(name) != role and ("account", name) not in touched:
                known = name in accounts.roles
                self.apply_account(self.node, name, role)
                if known:
                    self.hub.role_changed(name, role, bus=self.bus.local)

    def _reload_bans(self, rows, now, touched):
        accounts, bans = self.server.accounts, self.server.moderation.ban_list
        active = {row[0] for row in rows}
        for ban_id in [i for i in bans.active if i not in active and ("ban", i) not in touched]:
            bans.lift(ban_id)
        for row in rows:
            if row[0] in bans.active or ("ban", row[0]) in touched:
                continue
            bans.restore(row, now)
            ban = bans.active[row[0]]
            name = accounts.name_of(ban.target, must_exist=False) if ban.kind == "name" else None
            bans.close(name, ban.network, "banned", ban.notice(), bus=self.bus.local)

    def _reload_channels(self, rows, touched):
        """The channels SQL has, by id (a name deleted and made again has a new id)."""
        from chatd.hub import Channel
        hub, local = self.hub, self.bus.local
        stored = {name: channel_id for channel_id, name, _ in rows}
        for channel in list(hub.channels.values()):
            if stored.get(channel.name) != channel.id and ("channel", channel.name) not in touched:
                self.apply_channel_deleted(self.node, channel.name)
                for member in list(channel.members):
                    hub.remove_member(channel, member, bus=local,
                                      notice={"event": "channel_deleted", "by": None})
        by_id = {}
        for channel_id, name, private in rows:
            if ("channel", name) not in touched:
                by_id[channel_id] = hub.channels.setdefault(name,
                                                            Channel(channel_id, name, private))
        return by_id

    def _reload_memberships(self, rows, ends, by_id, touched):
        hub, local, accounts = self.hub, self.bus.local, self.server.accounts
        stored = set()
        for channel_id, user in rows:
            if channel_id in by_id:
                stored.add((by_id[channel_id].name, accounts.name_of(user, must_exist=False)))
        removed_by = {(channel_id, accounts.name_of(user, must_exist=False)): by
                      for (channel_id, user), by in ends.items()}

        def settled(channel, user):
            return ("member", channel, user) in touched or ("channel", channel) in touched

        def notice(channel, user):
            """As the live path tells it: a removal with its admin, a user's own leave with
            nothing more than the "left" control."""
            key = (channel.id, user)
            if key in removed_by and removed_by[key] is None:
                return None
            return {"event": "removed_from_channel", "by": removed_by.get(key)}
        for channel in by_id.values():
            for user in list(channel.members):
                if (channel.name, user) not in stored and not settled(channel.name, user):
                    hub.remove_member(channel, user, bus=local, notice=notice(channel, user))
        for name, user in stored:
            channel = hub.channels[name]
            if user not in channel.members and not settled(name, user):
                hub.add_member(channel, user, bus=local)

    def moved(self, user, node):
        """`user`, online on `node`, logged in again on another node (this one, or one
        whose login event this is): the clients of a node that died reconnect to the
        others at once, so ask whether it is still there now. If it is not, it is
        lost (its users offline, its messages relayed from SQL) within a second or
        two, on every node, not after the presence timeout."""
        self.bus.probe(node)

    def node_lost(self, node):
        """`node` sent no heartbeat for the presence timeout: its users are offline. Its
        own events cannot say so, so this node tells its clients itself, and relays the
        messages it may not have put on the stream; and it tells every node (apply_lost)."""
        self.bus.control(STATE, "lost", {"name": node})
        self.relay_lost_messages(node).addErrback(
            lambda f: log.failure("relaying the messages of lost node {node}", f, node=node))
        gone = [user for user, (where, _) in self.hub.elsewhere.items() if where == node]
        log.warn("node {node} is silent: taking its {count} users offline", node=node,
                 count=len(gone))
        local = self.bus.local
        for (channel, user), where in list(self.remote_looking.items()):
            if where == node:
                del self.remote_looking[channel, user]
                session = self.hub.sessions.get(user)
                if session is not None and session.viewing == channel_topic(channel):
                    continue    # logged in here since, and looks at it from here
                self._forget_looking(channel, user)
                local.publish(channel_topic(channel), {"event": "member", "channel": channel,
                                                       "user": user, "status": OFFLINE})
        for user in gone:
            del self.hub.elsewhere[user]
            local.publish(peer_topic(user), {"event": "peer", "other_user": user,
                                             "status": OFFLINE})
