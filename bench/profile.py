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


def summarize(path, top):
    """Top functions of the reactor thread by own and inclusive samples, in % of its samples."""
    own, inclusive, total = collections.Counter(), collections.Counter(), 0
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
    if not total:
        return {}

    def percent(counter):
        return {frame: round(100 * n / total, 1) for frame, n in counter.most_common(top)}

    return {"profile_samples": total, "profile_own_pct": percent(own),
            "profile_inclusive_pct": percent(inclusive)}


def short_frame(frame):
    """'write (twisted/internet/abstract.py:352)' -> 'write (twisted/internet/abstract.py)'."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
    return f"{name} ({where})"
