"""Search latency on a large message log: `python -m bench.search [--database URL]`.

Fills a fresh database (SQLite by default, or the MariaDB URL given) with
--messages messages in 20 channels and 200 private conversations, texts of
8 to 20 words drawn from a 5,000-word vocabulary (a few words much more
common than the rest, as in chat), then times Store.search — the query the
`search` action runs, through the connection pool — for a user in 10 of the
channels, with one and two words of each frequency, newest 50 first, and
(the worst case) a common word for a user in no channel, who may read only
their private conversations.
"""

import argparse
import random
import statistics
import time

from twisted.internet import defer, task

from chatd.engines import engine_from_url
from chatd.searchindex import search_index_for
from chatd.store import Store, db_time, peer_key, utcnow

from bench.scratch import scratch_database

VOCABULARY = [f"word{n}" for n in range(5000)]
WEIGHTS = [1.0 / (rank + 1) for rank in range(len(VOCABULARY))]    # Zipf-like


def texts(count, rng):
    for _ in range(count):
        yield " ".join(rng.choices(VOCABULARY, WEIGHTS, k=rng.randint(8, 20)))


def rows(count, rng):
    now = db_time(utcnow())
    users = [f"user{n}" for n in range(400)]
    for id, body in enumerate(texts(count, rng), start=1):
        sender = rng.choice(users)
        if rng.random() < 0.8:
            yield (id, sender, rng.randint(1, 20), None, None, body, now)
        else:
            recipient = rng.choice(users)
            yield (id, sender, None, recipient, peer_key(sender, recipient), body, now)


@defer.inlineCallbacks
def run(reactor, url, messages, repeats):
    store = Store(engine_from_url(url), clock=reactor, max_queued=1000)
    store.pool = store.engine.make_pool()
    try:
        yield store.upgrade_schema()
        rng = random.Random(7)
        started = time.monotonic()
        batch = []
        for row in rows(messages, rng):
            batch.append(row)
            if len(batch) == 5000:
                yield store.run("fill", lambda c, b: c.executemany(
                    "INSERT INTO messages (id, sender, channel_id, recipient, peer_key, body,"
                    " sent_at) VALUES (?, ?, ?, ?, ?, ?, ?)", b), batch)
                batch = []
        print(f"{messages} messages written in {time.monotonic() - started:.0f} s")
        yield index_all(store, reactor)
        channels = list(range(1, 11))
        queries = {"common word": ["word1"], "two common words": ["word1", "word2"],
                   "mid word": ["word300"], "two mid words": ["word300", "word301"],
                   "rare word": ["word4900"], "no match": ["nothing"]}
        cases = [(label, words, channels) for label, words in queries.items()]
        # The worst case: matches everywhere, but this user reads few of them.
        cases.append(("common, no channel", ["word1"], []))
        for label, words, readable in cases:
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                found, _ = yield store.search("user1", words, readable, limit=50)
                times.append((time.perf_counter() - start) * 1000)
            times.sort()
            print(f"{label:18} {len(found):3} found  median {statistics.median(times):6.1f} ms"
                  f"  p95 {times[int(len(times) * 0.95) - 1]:6.1f} ms")
    finally:
        if store.search_index is not None:
            yield store.search_index.stop()
        store.pool.close()


@defer.inlineCallbacks
def index_all(store, reactor):
    """Build the search index as the first start after an upgrade does, and time it."""
    store.search_index = search_index_for(store.engine, reactor, store.pool)
    started = time.monotonic()
    yield store.search_index.start()
    top = (yield store.query("SELECT MAX(id) FROM messages"))[0][0]
    while (yield store.search_index.pool.runQuery("SELECT indexed_id FROM search_marks"))[0][0] < top:
        yield store.search_index.index()
    print(f"indexed for search in {time.monotonic() - started:.1f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", help="mysql://USER@HOST:PORT (a fresh database is made)")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    with scratch_database(args.database, "search") as url:
        task.react(run, [url, args.messages, args.repeats])

if __name__ == "__main__":
    main()
