"""One node of a cluster: joining the bus at start, and the state every node shares.

ChatServer makes a Cluster when --bus is given (docs/cluster.md). At start it
checks the setup, connects the NatsBus (chatd/natsbus.py) and notes the
stream's last sequence before the state is loaded from SQL; after the load it
replays the stream from the next sequence, so nothing committed meanwhile is
missed (applying an event twice changes nothing), and only then does the
server listen.

The state every node keeps in memory (accounts and roles, ...) is written to
SQL by the node where it changes, which then puts the change on the STATE
topic; every other node applies it (`apply_<action>`). A node's own state
events are not applied again: its memory changed before it sent them.
"""

from twisted.internet import defer

from chatd.natsbus import BusError, NatsBus

STATE = ("state",)


class Cluster:
    def __init__(self, server):
        self.server = server
        self.config = server.config
        self.bus = NatsBus(self.config.bus, self.config.node_name)
        self.node = self.config.node_name
        self._first = None
        self.bus.observers.append(self.observe)
        accounts = server.accounts
        accounts.registrations.append(lambda name, role: self.tell("account", name=name,
                                                                    role=role))
        accounts.role_changes.append(lambda name, role: self.tell("account", name=name,
                                                                   role=role))

    # -- the shared state ----------------------------------------------------------------

    def tell(self, action, **data):
        """Tell the other nodes about a change of the state made here."""
        self.bus.control(STATE, action, data)

    def observe(self, node, topic, kind, body):
        if node != self.node and topic == STATE:
            getattr(self, "apply_" + body["a"])(**body["d"])

    def apply_account(self, name, role):
        """An account created, or its role changed, on another node."""
        self.server.accounts.add(name, role)

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

    def catch_up(self):
        """After the load: apply what the stream got since, then follow it."""
        return self.bus.consume(self._first)

    def stop(self):
        return self.bus.stop()
