"""Run the chatd benchmarks: `python -m bench [--quick | --smoke]`.

Starts every server itself (chatd on SQLite and MariaDB, chatd as 1 and 2
cluster nodes with a NATS server of its own, the reference IRC server),
alternates them scenario by scenario so a noisy machine affects both alike,
prints a table per scenario and writes the figures as JSON under
bench/results/.
"""

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import scenarios  # noqa: E402
from bench.profile import PySpyProfiler  # noqa: E402
from bench.report import print_table, ratios  # noqa: E402
from bench.servers import (ChatdClusterTarget, ChatdTarget, ErgoTarget,  # noqa: E402
                           NatsServer, NgircdTarget, NotErgo, cluster_unavailable,
                           ensure_ngircd, find_ergo, mariadb_available, raise_file_limit,
                           require_ergo)

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Sizes:
    """Every number a scenario takes; one instance per mode."""

    fanout_viewers: int
    fanout_senders: int
    fanout_rate: float          # messages/s, offered (open loop)
    fanout_seconds: float
    fanout_max_seconds: float   # closed loop, as fast as the server relays
    fanout_window: int          # messages in flight in the closed loop
    rooms_clients: int
    rooms_count: int
    rooms_rate: float
    rooms_seconds: float
    private_clients: int
    private_rate: float
    private_seconds: float
    storm_viewers: int
    storm_senders: int
    storm_rate: float
    storm_logins: int
    storm_before_seconds: float
    storm_after_seconds: float
    idle_connections: int
    idle_hold_seconds: float
    idle_concurrency: int
    history_messages: int
    history_clients: int
    history_page: int
    history_seconds: float
    log_senders: int
    log_viewers: int
    log_seconds: float
    log_window: int
    cross_viewers: int          # the cross-node latency: viewers, over the nodes
    cross_rate: float           # messages/s from the one sender
    cross_seconds: float


MODES = {
    "smoke": Sizes(
        fanout_viewers=20, fanout_senders=2, fanout_rate=50, fanout_seconds=1,
        fanout_max_seconds=1, fanout_window=10,
        rooms_clients=20, rooms_count=4, rooms_rate=50, rooms_seconds=1,
        private_clients=10, private_rate=50, private_seconds=1,
        storm_viewers=10, storm_senders=2, storm_rate=20, storm_logins=10,
        storm_before_seconds=0.5, storm_after_seconds=0.5,
        idle_connections=50, idle_hold_seconds=0.5, idle_concurrency=50,
        history_messages=2_000, history_clients=2, history_page=50, history_seconds=1,
        log_senders=2, log_viewers=4, log_seconds=1, log_window=20,
        cross_viewers=4, cross_rate=20, cross_seconds=1),
    "quick": Sizes(
        fanout_viewers=200, fanout_senders=5, fanout_rate=50, fanout_seconds=2,
        fanout_max_seconds=2, fanout_window=50,
        rooms_clients=200, rooms_count=20, rooms_rate=200, rooms_seconds=1.5,
        private_clients=100, private_rate=200, private_seconds=1.5,
        storm_viewers=100, storm_senders=5, storm_rate=20, storm_logins=50,
        storm_before_seconds=1.5, storm_after_seconds=1.5,
        idle_connections=1_000, idle_hold_seconds=2, idle_concurrency=100,
        history_messages=20_000, history_clients=10, history_page=50, history_seconds=2,
        log_senders=5, log_viewers=10, log_seconds=2, log_window=50,
        cross_viewers=10, cross_rate=50, cross_seconds=3),
    "full": Sizes(
        fanout_viewers=1_000, fanout_senders=10, fanout_rate=50, fanout_seconds=15,
        fanout_max_seconds=10, fanout_window=200,
        rooms_clients=1_000, rooms_count=50, rooms_rate=500, rooms_seconds=15,
        private_clients=500, private_rate=500, private_seconds=15,
        storm_viewers=200, storm_senders=5, storm_rate=20, storm_logins=100,
        storm_before_seconds=5, storm_after_seconds=5,
        idle_connections=10_000, idle_hold_seconds=20, idle_concurrency=200,
        history_messages=100_000, history_clients=20, history_page=50, history_seconds=10,
        log_senders=10, log_viewers=10, log_seconds=15, log_window=100,
        cross_viewers=20, cross_rate=50, cross_seconds=10),
}


def seed_plan(sizes):
    """Users, channels and memberships every scenario of a mode needs, seeded once."""
    fanout_users = max(sizes.fanout_viewers, sizes.storm_viewers + sizes.storm_logins,
                       sizes.log_viewers, 1 + sizes.cross_viewers)
    user_count = max(fanout_users, sizes.rooms_clients, sizes.private_clients,
                     sizes.idle_connections, sizes.history_clients)
    users = [scenarios.user_name(i) for i in range(user_count)]
    rooms = [scenarios.room_name(i) for i in range(sizes.rooms_count)]
    memberships = [(scenarios.FANOUT_CHANNEL, users[i]) for i in range(fanout_users)]
    memberships += [(scenarios.room_name(i % sizes.rooms_count), users[i])
                    for i in range(sizes.rooms_clients)]
    memberships += [(scenarios.HISTORY_CHANNEL, users[i]) for i in range(sizes.history_clients)]
    channels = [scenarios.FANOUT_CHANNEL, scenarios.HISTORY_CHANNEL, *rooms]
    return users, channels, memberships, (scenarios.HISTORY_CHANNEL, sizes.history_messages)


# A name --only takes for several scenarios.
GROUPS = {"cluster": ("cluster_fanout", "cluster_rooms", "cross_node")}


def scenario_plan(sizes, sqlite, mariadb, irc, cluster=()):
    """(name, description, parameters, [(target, coroutine factory)]) in running order.

    The order of the targets alternates from one scenario to the next.
    `cluster` holds the cluster targets (1 node, 2 nodes), if they can run here.
    """
    s = sizes
    chatd = [t for t in (sqlite, mariadb) if t is not None]

    def fanout(target):
        return lambda: scenarios.fanout(
            target, s.fanout_viewers, s.fanout_senders, s.fanout_rate, s.fanout_seconds,
            s.fanout_max_seconds, s.fanout_window, check_log=target is not irc)

    def rooms(target):
        return lambda: scenarios.many_rooms(
            target, s.rooms_clients, s.rooms_count, s.rooms_rate, s.rooms_seconds)

    def private(target):
        return lambda: scenarios.private_messages(
            target, s.private_clients, s.private_rate, s.private_seconds)

    def idle(target):
        return lambda: scenarios.idle_connections(
            target, s.idle_connections, s.idle_hold_seconds, s.idle_concurrency)

    def with_irc(targets, factory):
        return [(t, factory(t)) for t in targets] + ([(irc, factory(irc))] if irc else [])

    plan = [
        ("fanout", "1. fan-out: N viewers of one channel, S of them sending",
         {"N": s.fanout_viewers, "S": s.fanout_senders, "rate_msg_s": s.fanout_rate,
          "steady_s": s.fanout_seconds, "max_s": s.fanout_max_seconds,
          "max_window": s.fanout_window},
         with_irc(chatd, fanout)),
        ("rooms", "2. many rooms: N clients over K channels, all sending and looking",
         {"N": s.rooms_clients, "K": s.rooms_count, "rate_msg_s": s.rooms_rate,
          "seconds": s.rooms_seconds},
         with_irc(chatd[:1], rooms)),
        ("private", "3. private messages between random pairs",
         {"N": s.private_clients, "rate_msg_s": s.private_rate, "seconds": s.private_seconds},
         with_irc(chatd[:1], private)),
        ("storm", "4. login storm during a steady fan-out",
         {"N": s.storm_viewers, "S": s.storm_senders, "rate_msg_s": s.storm_rate,
          "L": s.storm_logins},
         [(t, (lambda t=t: scenarios.login_storm(
             t, s.storm_viewers, s.storm_senders, s.storm_rate, s.storm_logins,
             s.storm_before_seconds, s.storm_after_seconds))) for t in chatd]),
        ("idle", "5. idle connections: logged in, heartbeating every 5 s",
         {"connections": s.idle_connections, "hold_s": s.idle_hold_seconds},
         with_irc(chatd[:1], idle)),
        ("history", "6. history: get_channel on a channel of logged messages",
         {"messages": s.history_messages, "clients": s.history_clients,
          "page": s.history_page, "seconds": s.history_seconds},
         [(t, (lambda t=t: scenarios.history(
             t, s.history_clients, s.history_seconds, s.history_page, s.history_messages)))
          for t in chatd]),
        ("log", "7. log throughput: sending as fast as relayed, every message checked in SQL",
         {"senders": s.log_senders, "viewers": s.log_viewers, "seconds": s.log_seconds,
          "window": s.log_window},
         [(t, (lambda t=t: scenarios.log_throughput(
             t, s.log_senders, s.log_viewers, s.log_seconds, s.log_window)))
          for t in chatd]),
    ]
    if cluster:
        on_cluster = [mariadb, *cluster]
        plan += [
            ("cluster_fanout", "8. fan-out, chatd on MariaDB alone and as 1 and 2 cluster "
                               "nodes (clients spread over the nodes)",
             {"N": s.fanout_viewers, "S": s.fanout_senders, "rate_msg_s": s.fanout_rate,
              "steady_s": s.fanout_seconds, "max_s": s.fanout_max_seconds,
              "max_window": s.fanout_window},
             [(t, fanout(t)) for t in on_cluster]),
            ("cluster_rooms", "9. many rooms, chatd on MariaDB alone and as 1 and 2 cluster "
                              "nodes (clients spread over the nodes)",
             {"N": s.rooms_clients, "K": s.rooms_count, "rate_msg_s": s.rooms_rate,
              "seconds": s.rooms_seconds},
             [(t, rooms(t)) for t in on_cluster]),
            ("cross_node", "10. cross-node latency: one sender on the first node, viewers "
                           "round-robin over the nodes",
             {"viewers": s.cross_viewers, "rate_msg_s": s.cross_rate,
              "seconds": s.cross_seconds},
             [(t, (lambda t=t: scenarios.cross_node(
                 t, s.cross_viewers, s.cross_rate, s.cross_seconds))) for t in on_cluster]),
        ]
    for index, (_, _, _, runs) in enumerate(plan):
        if index % 2:
            runs.reverse()
    return plan


async def run_all(args):
    sizes = MODES[args.mode]
    if args.size:
        sizes = dataclasses.replace(sizes, **dict(args.size))
    workdir = Path(tempfile.mkdtemp(prefix="chatd-bench-"))
    # Clients and server are separate processes: each needs one descriptor per connection.
    wanted_files = sizes.idle_connections + 1_000
    file_limit = raise_file_limit(wanted_files)
    if file_limit < wanted_files:
        print(f"ulimit -n is {file_limit} (hard limit), below the {wanted_files} the idle "
              f"scenario needs: raise it (`ulimit -Hn {wanted_files}` as root) or expect "
              f"refused connections.")
    sqlite = ChatdTarget("sqlite", workdir, args.chatd_option)
    mariadb = (ChatdTarget("mariadb", workdir, args.chatd_option)
               if mariadb_available() else None)
    irc = None if args.no_irc else irc_target(args, workdir)
    nats, cluster = None, []
    if mariadb is not None and wants_cluster(args.only):
        why_not = cluster_unavailable()
        if why_not:
            print(f"The cluster scenarios are skipped: {why_not}.")
        else:
            nats = await NatsServer(workdir).start()
            cluster = [ChatdClusterTarget(nodes, mariadb, nats) for nodes in (1, 2)]
    if args.profile:
        for target in (sqlite, mariadb):
            if target is not None:
                target.profiler = PySpyProfiler(workdir)
        args.keep_logs = True
    if mariadb is None:
        print("MariaDB is not reachable at 127.0.0.1:3306 as root: the MariaDB runs are skipped.")

    try:
        return await measure(args, sizes, sqlite, mariadb, irc, cluster)
    finally:
        if nats is not None:
            await nats.stop()
        for target in (sqlite, mariadb):
            if target is not None:
                await asyncio.to_thread(target.db.drop)
        if args.keep_logs:
            print(f"server logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def wanted(only):
    """The scenario names --only asks for (a group's name stands for its scenarios),
    or None for all."""
    if not only:
        return None
    names = set()
    for name in only.split(","):
        names.update(GROUPS.get(name, (name,)))
    return names


def wants_cluster(only):
    names = wanted(only)
    return names is None or bool(names & set(GROUPS["cluster"]))


async def measure(args, sizes, sqlite, mariadb, irc, cluster):
    users, channels, memberships, history = seed_plan(sizes)
    for target in (sqlite, mariadb):
        if target is not None:
            started = time.monotonic()
            await target.prepare(users, channels, memberships, history)
            print(f"{target.name}: seeded {len(users)} users and {history[1]} history messages "
                  f"in {time.monotonic() - started:.1f}s")

    results = {
        "mode": args.mode,
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "kernel": platform.release(),
                    # The machines are shared: what else ran shows here (1, 5, 15 min).
                    "load_average_at_start": os.getloadavg()},
        "sizes": asdict(sizes),
        "servers": {t.name: {"command": t.describe(), "limits_lifted": t.limits_lifted}
                    for t in (sqlite, mariadb, *cluster, irc) if t is not None},
        "scenarios": {},
    }
    print_limits(results["servers"])
    if args.mode == "full":
        # The first run in a process measured the bench itself ~1.5x busier
        # (steady fan-out: bench CPU 90% instead of 55-60%, whichever server
        # came first), so a short fan-out on chatd is run first and discarded.
        started = time.monotonic()
        await scenarios.fanout(sqlite, sizes.fanout_viewers, sizes.fanout_senders,
                               sizes.fanout_rate, 3, 2, sizes.fanout_window, check_log=False)
        print(f"warm-up fan-out (discarded): {time.monotonic() - started:.0f}s")
    if cluster:
        results["nats"] = cluster[0].nats.describe()
    only = wanted(args.only)
    for name, description, parameters, runs in scenario_plan(sizes, sqlite, mariadb, irc,
                                                             cluster):
        if only and name not in only:
            continue
        figures = {}
        for target, scenario in runs:
            started = time.monotonic()
            try:
                figures[target.name] = await asyncio.wait_for(scenario(), args.scenario_timeout)
            except Exception as error:  # one failed run must not lose the others' figures
                figures[target.name] = {"failed": f"{type(error).__name__}: {error}"}
            figures[target.name]["wall_s"] = round(time.monotonic() - started, 1)
        results["scenarios"][name] = {"description": description, "parameters": parameters,
                                      "results": figures, "ratios": ratios(figures)}
        print_table(description, parameters, figures)
    results["finished_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    results["machine"]["load_average_at_end"] = os.getloadavg()
    return results


def irc_target(args, workdir):
    """Ergo when given with --ergo or installed (--irc auto), else Debian's ngircd."""
    ergo = args.ergo or (find_ergo() if args.irc == "auto" else None)
    if ergo:
        return ErgoTarget(ergo, workdir)
    if args.irc == "auto":
        print("The IRC reference server is ngircd instead.")
    return NgircdTarget(workdir) if ensure_ngircd() else None


def print_limits(servers):
    print("\nLimits lifted for the benchmark:")
    for name, server in servers.items():
        print(f"  {name} ({server['command']}):")
        for limit in server["limits_lifted"]:
            print(f"    - {limit}")


def size_override(text):
    name, _, value = text.partition("=")
    fields = {f.name: f.type for f in dataclasses.fields(Sizes)}
    if name not in fields:
        raise argparse.ArgumentTypeError(f"{name!r} is not a size; sizes: {', '.join(fields)}")
    kind = fields[name]
    try:
        return name, kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} takes a {kind.__name__}, not {value!r}")


def parse_args(argv=None):
    """The command line, with the IRC server choice checked: a bad --ergo is an error here."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="a small set, under a minute")
    size.add_argument("--smoke", dest="mode", action="store_const", const="smoke",
                      help="tiny sizes, about 20 s: checks that the harness works")
    parser.set_defaults(mode="full")
    parser.add_argument("--only", help="comma-separated scenarios: fanout,rooms,private,"
                                       "storm,idle,history,log,cluster_fanout,cluster_rooms,"
                                       "cross_node; cluster stands for the last three")
    parser.add_argument("--size", action="append", type=size_override, default=[],
                        metavar="NAME=NUMBER",
                        help="override one of the mode's sizes, e.g. --size fanout_rate=2000")
    parser.add_argument("--chatd-option", action="append", default=[],
                        help="an extra chatd option, e.g. --chatd-option=--durability=power")
    parser.add_argument("--no-irc", action="store_true", help="skip the IRC reference server")
    parser.add_argument("--irc", choices=("auto", "ergo", "ngircd"), default="auto",
                        help="IRC reference server (auto: ergo if installed, else ngircd)")
    parser.add_argument("--ergo", metavar="PATH",
                        help="the Ergo IRC server binary to compare with (implies --irc ergo)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--scenario-timeout", type=float, default=240.0,
                        help="seconds one scenario may take on one server")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs")
    parser.add_argument("--profile", action="store_true",
                        help="sample chatd with py-spy during each scenario (slows it a little)")
    args = parser.parse_args(argv)
    if args.ergo:
        if args.no_irc or args.irc == "ngircd":
            parser.error("--ergo asks for Ergo as the IRC server; drop --no-irc / --irc ngircd")
        try:
            args.ergo = require_ergo(args.ergo)
        except NotErgo as error:
            parser.error(str(error))
    elif args.irc == "ergo" and not args.no_irc:
        args.ergo = find_ergo() or parser.error("--irc ergo: no Ergo IRC server on PATH")
    if args.profile and shutil.which("py-spy") is None:
        parser.error("--profile needs py-spy: pip install '.[bench]'")
    return args


def main(argv=None):
    args = parse_args(argv)
    results = asyncio.run(run_all(args))
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = args.results_dir / f"{args.mode}-{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nResults written to {path}")
    return path


if __name__ == "__main__":
    main()
