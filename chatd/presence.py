"""Presence: what each session looks at, online/away/offline, live member lists.

Every change is published on the bus only to the people looking at the same
place, and a heartbeat that changes nothing only notes the time (no loop over
anyone). Sessions that fell silent go offline in a sweep every third of the
timeout (so after 1 to 1 1/3 timeouts): one timer for all, not a DelayedCall
per session (about 1 kB each, and heap work at every heartbeat). Who looks at which
channel is presence's own state (`looking`), kept from the same changes it
publishes (in a cluster, from every node's member events); nobody asks the bus
for its subscribers. Timers run on the hub's clock so tests drive them with
twisted.internet.task.Clock.
"""

from twisted.internet.task import LoopingCall

from chatd.auth import ChatError
from chatd.bus import channel_topic, peer_topic

ONLINE, AWAY, OFFLINE = "online", "away", "offline"
STATUSES = (ONLINE, AWAY)


class Presence:
    def __init__(self, hub, timeout):
        self.hub = hub
        self.timeout = timeout
        self._sweeping = None   # LoopingCall of _sweep, from the first session on
        self.looking = {}       # channel name -> {user name: status}, in order of arrival

    @property
    def bus(self):
        return self.hub.bus

    # -- session life ------------------------------------------------------

    def session_started(self, session):
        session.status = ONLINE
        session.viewing = None
        session.last_seen = self.hub.clock.seconds()
        if self._sweeping is None:
            self._sweeping = LoopingCall(self._sweep)
            self._sweeping.clock = self.hub.clock
            self._sweeping.start(self.timeout / 3, now=False)
        self._announce_status(session)

    def session_ended(self, session):
        self._go_offline(session)

    def _sweep(self):
        silent_since = self.hub.clock.seconds() - self.timeout
        for session in [s for s in self.hub.sessions.values()
                        if s.status != OFFLINE and s.last_seen <= silent_since]:
            self._go_offline(session)

    def stop(self):
        if self._sweeping is not None and self._sweeping.running:
            self._sweeping.stop()

    def _go_offline(self, session):
        if session.status == OFFLINE:
            return
        session.status = OFFLINE
        if session.replaced == "elsewhere":
            # Online on another node now: the other nodes dropped this session from their
            # member lists when that login crossed the bus (chatd/cluster.py), before the
            # new session's own events; an event from here would come after those.
            self._leave(session, "left", here_only=True)
            return
        self._leave(session, OFFLINE)
        if not session.replaced:
            self._announce_status(session)

    # -- heartbeats --------------------------------------------------------

    def heartbeat(self, session, status, channel=None, other_user=None):
        """Apply one `presence` line (or a history request, which counts as looking)."""
        if status not in STATUSES:
            raise ChatError("presence is 'online' or 'away'.")
        if channel is not None and other_user is not None:
            raise ChatError("Say either 'channel' or 'other_user', not both.")
        self._keep_alive(session)
        if channel is not None:
            place = channel_topic(self._readable_channel(session, channel))
        elif other_user is not None:
            place = peer_topic(self.hub.account_name(other_user))
        else:
            place = None
        self.look(session, status, place)

    def _readable_channel(self, session, channel):
        try:
            return self.hub.readable_channel(session, channel).name
        except ChatError:
            # Looking at a channel one may not read means looking at nothing.
            self.look(session, session.status if session.status != OFFLINE else ONLINE, None)
            raise

    def _keep_alive(self, session):
        session.last_seen = self.hub.clock.seconds()

    def look(self, session, status, place):
        """Move `session` to `place` with `status`, telling only those concerned."""
        old_status = session.status
        if place == session.viewing and status == old_status:
            return
        if place != session.viewing:
            self._leave(session, "left")
            session.status = status
            self._arrive(session, place)
        else:
            session.status = status
            if place is not None and place[0] == "channel":
                self.looking[place[1]][session.name] = status
                self._publish_member(place, session, status)
        if status != old_status:
            self._announce_status(session)

    def _arrive(self, session, place):
        session.viewing = place
        if place is None:
            return
        kind, name = place
        session.listen(place)
        if kind == "channel":
            session.unread.pop(name, None)
            looking = self.looking.setdefault(name, {})
            looking[session.name] = session.status
            members = [{"user": user, "status": status} for user, status in looking.items()]
            session.send({"event": "members", "channel": name, "members": members})
            self._publish_member(place, session, session.status)
        else:
            session.send({"event": "peer", "other_user": name,
                          "status": self.hub.status_of(name)})

    def _leave(self, session, how, here_only=False):
        place = session.viewing
        session.viewing = None
        if place is None:
            return
        session.stop_listening(place)
        if place[0] == "channel":
            looking = self.looking[place[1]]
            looking.pop(session.name, None)
            if not looking:
                del self.looking[place[1]]
            self._publish_member(place, session, how, here_only)

    def _publish_member(self, place, session, status, here_only=False):
        bus = self.bus.local if here_only else self.bus
        bus.publish(place, {"event": "member", "channel": place[1],
                            "user": session.name, "status": status}, exclude=session.id)

    def announce(self, session):
        """Say again this session's status and where it looks (for other nodes that
        lost track of it)."""
        self._announce_status(session)
        if session.viewing is not None and session.viewing[0] == "channel":
            self._publish_member(session.viewing, session, session.status)

    def _announce_status(self, session):
        """Tell whoever looks at a private conversation with this user."""
        self.bus.publish(peer_topic(session.name), {
            "event": "peer", "other_user": session.name, "status": session.status})

    # -- queries -----------------------------------------------------------

    def viewers(self, channel):
        """user name -> status of everyone looking at `channel`."""
        return self.looking.get(channel, {})
