"""Connection deadlines (login, idle) on one timer for all connections.

A DelayedCall per connection puts one entry per connection on the reactor's
heap, and every `callLater(0)` of the message path (the log's flush, the
output's) is pushed onto and popped off that heap, comparing DelayedCalls in
Python (`DelayedCall.__lt__`): with 1,000 connections that was about 7% of
the reactor's Python in the rooms scenario. Here the deadlines wait in buckets
of RESOLUTION seconds, and only the earliest bucket has a DelayedCall.
A deadline fires at its time or up to RESOLUTION later, never earlier.
"""

import math

RESOLUTION = 0.25   # seconds


class Deadlines:
    def __init__(self, clock):
        self.clock = clock
        self._buckets = {}      # bucket number -> {owner: callback}, in the order set
        self._bucket_of = {}    # owner -> its bucket number
        self._call = None       # the DelayedCall of the earliest bucket
        self._call_bucket = None

    def __len__(self):
        return len(self._bucket_of)

    def set(self, owner, delay, callback):
        """Call callback() once, `delay` seconds from now (replacing owner's deadline)."""
        self.cancel(owner)
        bucket = math.ceil((self.clock.seconds() + delay) / RESOLUTION)
        self._buckets.setdefault(bucket, {})[owner] = callback
        self._bucket_of[owner] = bucket
        if self._call_bucket is None or bucket < self._call_bucket:
            self._arm(bucket)

    def cancel(self, owner):
        bucket = self._bucket_of.pop(owner, None)
        if bucket is not None:
            owners = self._buckets[bucket]
            del owners[owner]
            if not owners:
                del self._buckets[bucket]
                if not self._buckets:
                    self.stop()     # nothing left to wait for: off the reactor's heap too

    def stop(self):
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = self._call_bucket = None

    def _arm(self, bucket):
        delay = max(0.0, bucket * RESOLUTION - self.clock.seconds())
        if self._call is not None and self._call.active():
            self._call.reset(delay)
        else:
            self._call = self.clock.callLater(delay, self._fire)
        self._call_bucket = bucket

    def _fire(self):
        self._call = self._call_bucket = None
        now = self.clock.seconds()
        for bucket in sorted(b for b in self._buckets if b * RESOLUTION <= now):
            owners = self._buckets.get(bucket, {})
            while owners:   # one at a time: a callback may cancel or set others
                owner, callback = next(iter(owners.items()))
                self.cancel(owner)
                callback()
        if self._buckets:
            earliest = min(self._buckets)
            if self._call_bucket is None or earliest < self._call_bucket:
                self._arm(earliest)
