"""What a login's conversation list costs: `python -m bench.conversations [--database URL]`.

Fills a fresh database (SQLite by default, or the MariaDB URL given) with
--conversations private conversations of one user, 20 messages each, then times
Store.conversations (the query behind `list_conversations` and the login reply)
through the pool: once with every conversation unread, once with all of them
read (the usual case).
"""

import argparse
import statistics
import time

from twisted.internet import defer, task

from chatd.engines import engine_from_url
from chatd.store import Store, db_time, peer_key, utcnow

from bench.scratch import scratch_database

MESSAGES_EACH = 20


@defer.inlineCallbacks
def timed(store, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        found = yield store.conversations("alice", [1])
        times.append((time.perf_counter() - start) * 1000)
    return found, statistics.median(times)


@defer.inlineCallbacks
def run(reactor, url, conversations, repeats):
    store = Store(engine_from_url(url), clock=reactor, max_queued=1000)
    yield store.start()
    try:
        now, rows = db_time(utcnow()), []
        for n in range(conversations):
            other = f"user{n}"
            for k in range(MESSAGES_EACH):
                sender, recipient = (other, "alice") if k % 2 else ("alice", other)
                rows.append((len(rows) + 1, sender, recipient, peer_key(sender, recipient),
                             f"hello {k}", now))
        yield store.run("fill", lambda cursor: cursor.executemany(
            "INSERT INTO messages (id, sender, recipient, peer_key, body, sent_at)"
            " VALUES (?, ?, ?, ?, ?, ?)", rows))
        yield store.execute("UPDATE message_ids SET next_id = ?", (len(rows) + 1,))
        found, unread = yield timed(store, repeats)
        for channel_id, key, last_id, *_ in found:
            if last_id is not None:
                yield store.mark_read("alice", channel_id, key, last_id)
        _, read = yield timed(store, repeats)
        print(f"{store.engine.describe()}: {conversations} private conversations:"
              f" median {unread:.1f} ms all unread, {read:.1f} ms all read")
    finally:
        yield store.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", help="mysql://USER@HOST:PORT (a fresh database is made)")
    parser.add_argument("--conversations", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    with scratch_database(args.database, "conversations") as url:
        task.react(run, [url, args.conversations, args.repeats])


if __name__ == "__main__":
    main()
