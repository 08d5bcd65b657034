"""What a group commit of the message log costs: `python -m bench.commit_cost`.

Saves batches of messages through the real Store (as one reactor turn of a busy
server would) and times each from the save to the last acknowledgement: the
floor under every `ok` reply, with no sockets and no fan-out. Also prints the
CPU time of the whole process per message, threads included.
"""

import argparse
import statistics
import time

from twisted.internet import defer, task

from chatd.engines import engine_from_url
from chatd.store import Message, Store, utcnow

from bench.scratch import scratch_database


@defer.inlineCallbacks
def run(reactor, url, commits, batch):
    store = Store(engine_from_url(url), clock=reactor, max_queued=100000)
    yield store.start()
    try:
        rows = yield store.query("SELECT id FROM channels WHERE name = 'general'")
        channel_id = rows[0][0]
        times = []
        cpu = time.process_time()
        for i in range(commits):
            start = time.perf_counter()
            yield defer.gatherResults([store.messages.save(Message(
                None, "alice", f"commit {i}, message {j}: some words to index", utcnow(),
                channel="general", channel_id=channel_id)) for j in range(batch)])
            times.append((time.perf_counter() - start) * 1000)
        cpu = time.process_time() - cpu
        times.sort()
        print(f"{store.engine.describe()}: {commits} commits of {batch}:"
              f" p50 {statistics.median(times):.2f} ms, p99 {times[int(len(times) * .99)]:.2f} ms,"
              f" max {times[-1]:.2f} ms; CPU {cpu / (commits * batch) * 1e6:.0f} us per message")
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
