"""What a group commit of the message log costs: `python -m bench.commit_cost`.

Saves batches of messages through the real Store (as one reactor turn of a busy
server would) and times each from the save to the last acknowledgement: the
floor under every `ok` reply, with no sockets and no fan-out. Also prints the
CPU time per message, split between the reactor thread and the others (the
message log's, above all), and what a bare hand-off to the message log's pool and
back costs (a run that does nothing): the part of a commit that is not SQL.
"""

import argparse
import statistics
import time

from twisted.internet import defer, task

from chatd.engines import engine_from_url
from chatd.store import Message, Store, utcnow

from bench.scratch import scratch_database


class ThreadClocks:
    """CPU seconds of the calling (reactor) thread and of all the others, from now
    (SQLite's message log is one thread, MariaDB's a pool of several)."""

    def __init__(self):
        self._start = self._read()

    @staticmethod
    def _read():
        reactor = time.thread_time()
        return reactor, time.process_time() - reactor

    def per(self, count):
        """(reactor, others) microseconds per one of `count` since the start."""
        return tuple((end - start) / count * 1e6
                     for end, start in zip(self._read(), self._start))


def _nothing(connection):
    return None


@defer.inlineCallbacks
def run(reactor, url, commits, batch):
    store = Store(engine_from_url(url), clock=reactor, max_queued=100000)
    yield store.start()
    try:
        rows = yield store.query("SELECT id FROM channels WHERE name = 'general'")
        channel_id = rows[0][0]
        times = []
        clocks = ThreadClocks()
        for i in range(commits):
            start = time.perf_counter()
            yield defer.gatherResults([store.messages.save(Message(
                None, "alice", f"commit {i}, message {j}: some words to index", utcnow(),
                channel="general", channel_id=channel_id)) for j in range(batch)])
            times.append((time.perf_counter() - start) * 1000)
        on_reactor, in_others = clocks.per(commits * batch)
        times.sort()
        print(f"{store.engine.describe()}: {commits} commits of {batch}:"
              f" p50 {statistics.median(times):.2f} ms, p99 {times[int(len(times) * .99)]:.2f} ms,"
              f" max {times[-1]:.2f} ms; CPU per message {on_reactor + in_others:.0f} us"
              f" (reactor {on_reactor:.0f}, other threads {in_others:.0f})")
        clocks = ThreadClocks()
        for _ in range(commits):
            yield store.message_pool.runWithConnection(_nothing)
        on_reactor, in_others = clocks.per(commits)
        print(f"a bare hand-off to the message log's pool and back: CPU"
              f" {on_reactor + in_others:.0f} us (reactor {on_reactor:.0f},"
              f" other threads {in_others:.0f})")
    finally:
        yield store.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", help="mysql://USER@HOST:PORT (a fresh database is made;"
                                           " default: a fresh SQLite file)")
    parser.add_argument("--commits", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=10, help="messages per commit")
    args = parser.parse_args()
    with scratch_database(args.database, "commit-cost") as url:
        task.react(run, (url, args.commits, args.batch))


if __name__ == "__main__":
    main()
