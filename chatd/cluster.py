"""One node of a cluster: joining the bus at start, and the state every node shares.

ChatServer makes a Cluster when --bus is given (docs/cluster.md). At start it
checks the setup, connects the NatsBus (chatd/natsbus.py) and notes the
stream's last sequence before the state is loaded from SQL; after the load it
replays the stream from the next sequence, so nothing committed meanwhile is
missed (applying an event twice changes nothing), and only then does the
server listen.
"""

from twisted.internet import defer

from chatd.natsbus import BusError, NatsBus


class Cluster:
    def __init__(self, server):
        self.server = server
        self.config = server.config
        self.bus = NatsBus(self.config.bus, self.config.node_name)
        self.node = self.config.node_name
        self._first = None

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
