"""What a message commit costs besides its SQL (bench.commit_cost measures it): no
reference cycles left for the collector, one COMMIT per transaction.
"""

import gc

from twisted.internet import defer

from chatd.engines import SqliteEngine
from chatd.store import Message, Store, _CommitTurn, utcnow


def message(body):
    return Message(None, "alice", body, utcnow(), channel="general", channel_id=1)


@defer.inlineCallbacks
def test_a_message_commit_is_freed_at_once_not_by_the_cyclic_collector(tmp_path):
    """Its Deferreds, turn and message are freed as soon as it is answered: a reference
    cycle (such as a closure that calls itself) would leave them, per message, to
    the collector, whose passes then ran every few commits."""
    store = Store(SqliteEngine(str(tmp_path / "chatd.sqlite")), max_queued=1000)
    yield store.start()
    gc.collect()
    gc.disable()
    try:
        for i in range(20):
            yield store.save_message(message(f"message {i}"))
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, (Message, _CommitTurn))]
        assert left == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        yield store.stop()
