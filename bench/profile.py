"""Optional py-spy sampling of chatd during each scenario (`--profile`).

py-spy attaches to the running server from outside, so the server runs
unmodified; the raw (collapsed) stacks are kept and the functions that take
the most samples, on their own and with what they call, go into the results.
Only the reactor thread (MainThread) is summarized: it is the one that relays,
and the database threads' waiting would otherwise drown it.
"""

import asyncio
import collections
import shutil
import signal
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class PySpyProfiler:
    def __init__(self, output_dir, rate=250, top=12):
        self.binary = shutil.which("py-spy")
        self.output_dir = output_dir
        self.rate = rate
        self.top = top
        self.process = None
        self.path = None

    def attach(self, pid, label):
        self.path = self.output_dir / f"profile-{label}-{pid}.txt"
        self.process = subprocess.Popen(
            [self.binary, "record", "--pid", str(pid), "--rate", str(self.rate),
             "--format", "raw", "--threads", "--output", str(self.path), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def detach(self):
        """Stop sampling (py-spy writes its file on SIGINT); return the summary."""
        if self.process is None:
            return {}
        self.process.send_signal(signal.SIGINT)
        for _ in range(100):
            if self.process.poll() is not None:
                break
            await asyncio.sleep(0.1)
        else:
            self.process.kill()
        self.process = None
        if not self.path.exists():
            return {"profile": "py-spy wrote nothing"}
        return {"profile": str(self.path), **summarize(self.path, self.top)}


# Where the reactor thread's time goes, by what it is doing: a sample counts for
# the first of these found from the innermost frame outwards, so the parts add
# up to 100%. (function, file) pairs; the file is the path's tail, "*" any function.
PARTS = [
    ("epoll register (startWriting)", [("startWriting", "twisted/internet/abstract.py")]),
    ("epoll unregister (stopWriting)", [("stopWriting", "twisted/internet/abstract.py")]),
    ("send (writeSomeData)", [("writeSomeData", "twisted/internet/tcp.py")]),
    # chatd's own write path: a turn's lines, one socket.send per connection.
    ("send, straight on the socket (chatd/output.py)", [("flush", "chatd/output.py")]),
    ("rest of doWrite (its buffer)", [("doWrite", "twisted/internet/abstract.py")]),
    ("JSON encoding", [("encode", "chatd/bus.py"), ("dumps", "json/__init__.py")]),
    ("transport.write (queue, checks)", [("write", "twisted/internet/abstract.py")]),
    ("write_line (output limit check)", [("write_line", "chatd/protocol.py"),
                                         ("unsent_bytes", "chatd/limits.py")]),
    ("Session.deliver (message or unread)", [("deliver", "chatd/hub.py")]),
    ("fan-out loop (bus publish)", [("publish", "chatd/bus.py")]),
    ("channel_message (checks, store)", [("channel_message", "chatd/hub.py")]),
    ("presence (heartbeats)", [("heartbeat", "chatd/presence.py")]),
    ("message log (SQL batches)", [("flush", "chatd/store.py"), ("_write", "chatd/store.py"),
                                   ("_written", "chatd/store.py")]),
    ("reading requests (recv, parse, dispatch)", [("doRead", "twisted/internet/tcp.py")]),
    # Once per socket event, around each doRead and doWrite: the log context.
    ("reactor: epoll_wait, per-event dispatch", [
        ("doPoll", "twisted/internet/epollreactor.py"),
        ("_doReadOrWrite", "twisted/internet/posixbase.py"),
        ("callWithLogger", "twisted/python/log.py"),
        ("callWithContext", "twisted/python/log.py"),
        ("*", "twisted/python/context.py"),
        ("logPrefix", "twisted/internet/tcp.py"),
        ("mainLoop", "twisted/internet/base.py"),
        ("runUntilCurrent", "twisted/internet/base.py")]),
]


def summarize(path, top):
    """Top functions of the reactor thread by own and inclusive samples, in % of its
    samples, and its time split into PARTS."""
    own, inclusive, parts, total = (collections.Counter(), collections.Counter(),
                                    collections.Counter(), 0)
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        thread, *frames = stack.split(";")
        if not thread.endswith("MainThread") or not frames:
            continue
        count = int(count)
        total += count
        frames = [short_frame(frame) for frame in frames]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
        parts[part_of(frames)] += count
    if not total:
        return {}

    def percent(counter, limit=None):
        return {frame: round(100 * n / total, 1) for frame, n in counter.most_common(limit)}

    return {"profile_samples": total, "profile_own_pct": percent(own, top),
            "profile_inclusive_pct": percent(inclusive, top), "profile_parts_pct": percent(parts)}


def part_of(frames):
    """The PARTS name of a stack (outermost frame first), or 'other'."""
    for frame in reversed(frames):
        name, _, where = frame.partition(" (")
        name = name.rpartition(".")[2]      # py-spy names methods Class.method
        for part, functions in PARTS:
            if any(function in (name, "*") and where.rstrip(")").endswith(file)
                   for function, file in functions):
                return part
    return "other"


def short_frame(frame):
    """'write (/.../site-packages/twisted/internet/abstract.py:352)'
    -> 'write (twisted/internet/abstract.py)'."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    for marker in ("site-packages/", f"{REPO}/", "lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})"
