"""CPU per channel message inside the hub, without sockets: `python -m bench.delivery_cost`.

1,000 online members of a channel, some looking at it (they get the message),
the others at another channel (they get an `unread` event). Measures the bus
and the sessions' decisions alone: the same path the socket benches take,
minus Twisted's transports.
"""

import argparse
import time
from datetime import datetime

from twisted.internet.task import Clock

from chatd.accounts import Accounts
from chatd.hub import Channel, Hub
from chatd.store import Message


class NullConnection:
    def write_line(self, line):
        pass


def microseconds_per_message(members, viewers, messages):
    hub = Hub(store=None, accounts=Accounts(None, None, None), clock=Clock(),
              max_message=4000, presence_timeout=15.0)
    general, other = Channel(1, "general", False), Channel(2, "other", False)
    hub.channels.update(general=general, other=other)
    for n in range(members):
        name = f"u{n}"
        hub.accounts.add(name)
        general.members.add(name)
        other.members.add(name)
        session = hub.start_session(NullConnection(), name, "127.0.0.1")
        hub.presence.heartbeat(session, "online", channel="general" if n < viewers else "other")
    message = Message(1, "u0", "hello there", datetime(2026, 12, 1), channel="general",
                      channel_id=1)
    start = time.process_time()
    for _ in range(messages):
        hub.relay([message])
    return (time.process_time() - start) / messages * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7, help="best of this many runs")
    args = parser.parse_args()
    for viewers in (args.members, args.members // 10, 0):
        best = min(microseconds_per_message(args.members, viewers, args.messages)
                   for _ in range(args.repeat))
        print(f"{args.members} members, {viewers} looking: {best:.0f} µs CPU per message")


if __name__ == "__main__":
    main()
