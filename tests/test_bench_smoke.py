"""The benchmark harness works: `python -m bench --smoke` runs every scenario.

A benchmark is not a test, so nothing here looks at a timing: only that the
results file exists and that its counts add up (every message sent was
delivered to everyone who should get it, every message is in the log, every
connection was held, every history page was full).
"""

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CLUSTER_SCENARIOS = {"cluster_fanout", "cluster_rooms", "cross_node"}
CLUSTER_TARGETS = {"chatd-mariadb", "chatd-1-node", "chatd-2-nodes"}


def cluster_runs_here():
    """The bench runs its cluster scenarios when MariaDB answers and nats-server and
    nats-py are installed; CI (CHATD_REQUIRE_MYSQL=1) must have them all."""
    from bench.servers import cluster_unavailable, mariadb_available
    from support import REQUIRE_MYSQL
    missing = cluster_unavailable() or (None if mariadb_available() else "no MariaDB")
    assert not (REQUIRE_MYSQL and missing), f"CHATD_REQUIRE_MYSQL=1 but {missing}"
    return missing is None


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    results_dir = tmp_path_factory.mktemp("bench-results")
    command = [sys.executable, "-m", "bench", "--smoke", "--results-dir", str(results_dir)]
    if shutil.which("ngircd") is None:
        command.append("--no-irc")  # the harness would apt-get it; CI installs it beforehand
    finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    files = list(results_dir.glob("smoke-*.json"))
    assert len(files) == 1, finished.stdout[-3000:]
    return json.loads(files[0].read_text())


def test_every_scenario_ran_on_every_server(smoke_results):
    assert set(smoke_results["scenarios"]) == {
        "fanout", "rooms", "private", "storm", "idle", "history", "log"} | (
        CLUSTER_SCENARIOS if cluster_runs_here() else set())
    for name, scenario in smoke_results["scenarios"].items():
        for server, figures in scenario["results"].items():
            assert "failed" not in figures, (name, server, figures)
            assert "setup_failures" not in figures, (name, server, figures)
            assert "server_errors" not in figures, (name, server, figures)
            assert "server_crashed" not in figures, (name, server, figures)
            for dropped in ("clients_closed_by_server", "slow_readers_dropped",
                            "presence_lapses"):
                assert dropped not in figures, (name, server, figures)


def test_every_message_sent_was_delivered(smoke_results):
    checked = 0
    for name, scenario in smoke_results["scenarios"].items():
        for server, figures in scenario["results"].items():
            for key, expected in figures.items():
                if key.endswith("deliveries_expected"):
                    delivered = figures[key.replace("_expected", "")]
                    assert expected > 0, (name, server, key)
                    assert delivered == expected, (name, server, key, delivered, expected)
                    checked += 1
    assert checked >= 6


def test_every_message_is_in_the_log(smoke_results):
    log = next(iter(smoke_results["scenarios"]["log"]["results"].values()))
    assert log["messages_sent"] > 0
    assert log["log_missing"] == 0 and log["logged"] == log["messages_sent"]
    for figures in fanout_results(smoke_results):
        if "steady_logged" in figures:
            assert figures["steady_log_missing"] == 0
            assert figures["steady_logged"] == figures["steady_messages_sent"]


def fanout_results(smoke_results):
    """The figures of every fan-out run: the fan-out's and the cluster fan-out's."""
    scenarios = smoke_results["scenarios"]
    return [figures for name in ("fanout", "cluster_fanout") if name in scenarios
            for figures in scenarios[name]["results"].values()]


def test_idle_connections_held_and_history_pages_full(smoke_results):
    for figures in smoke_results["scenarios"]["idle"]["results"].values():
        assert figures["connections_held"] == figures["connections_requested"]
    for figures in smoke_results["scenarios"]["history"]["results"].values():
        assert figures["requests"] > 0 and figures["short_pages"] == 0


def test_storm_logins_all_succeeded(smoke_results):
    params = smoke_results["scenarios"]["storm"]["parameters"]
    for figures in smoke_results["scenarios"]["storm"]["results"].values():
        assert figures["storm_logins"] == params["L"]


def test_server_cpu_per_delivery(smoke_results):
    phases = {"fanout": ("steady", "max"), "rooms": ("rooms",), "private": ("private",),
              "log": ("relay",), "cluster_fanout": ("steady", "max"),
              "cluster_rooms": ("rooms",)}
    for name, prefixes in phases.items():
        if name in CLUSTER_SCENARIOS and not cluster_runs_here():
            continue
        for server, figures in smoke_results["scenarios"][name]["results"].items():
            for prefix in prefixes:
                per_1k = figures[f"{prefix}_server_cpu_s_per_1k"]
                assert isinstance(per_1k, float) and per_1k >= 0, (name, server, prefix)
    # The closed loop keeps the server busy for a second: /proc's 10 ms ticks see it.
    for server, figures in smoke_results["scenarios"]["fanout"]["results"].items():
        assert figures["max_server_cpu_s_per_1k"] > 0, server


def test_ratios_to_the_irc_server_are_in_the_results(smoke_results):
    for name in ("fanout", "rooms", "private"):
        scenario = smoke_results["scenarios"][name]
        irc = [server for server in scenario["results"] if not server.startswith("chatd")]
        if not irc:
            assert scenario["ratios"] == {}
            continue
        chatd = [server for server in scenario["results"] if server.startswith("chatd")]
        assert sorted(scenario["ratios"]) == sorted(f"{c}/{irc[0]}" for c in chatd)
        for pair, ratios in scenario["ratios"].items():
            mine, theirs = (scenario["results"][server] for server in pair.split("/"))
            if name == "fanout":  # busy enough for the IRC server's CPU to show in ticks
                assert "max_server_cpu_s_per_1k" in ratios, pair
            for key, value in ratios.items():
                assert value == round(mine[key] / theirs[key], 2), (name, pair, key)


def test_every_receiver_got_its_share(smoke_results):
    for name in ("fanout", "storm", "log", "cluster_fanout", "cross_node"):
        if name in CLUSTER_SCENARIOS and not cluster_runs_here():
            continue
        for server, figures in smoke_results["scenarios"][name]["results"].items():
            shares = [key for key in figures if key.endswith("receivers_short")]
            assert shares, (name, server)
            for key in shares:
                assert figures[key] == 0, (name, server, key, figures)
            assert "presence_lapses" not in figures, (name, server, figures)


def test_cluster_scenarios_ran_on_one_and_two_nodes(smoke_results):
    """MariaDB alone, 1 node and 2 nodes side by side; on 2 nodes the clients are on
    both, every message reached the viewers of the other node too, and the NATS
    server's CPU is counted for the cluster targets."""
    if not cluster_runs_here():
        pytest.skip("no MariaDB, nats-server or nats-py here")
    scenarios = smoke_results["scenarios"]
    sizes = smoke_results["sizes"]
    for name in CLUSTER_SCENARIOS:
        assert set(scenarios[name]["results"]) == CLUSTER_TARGETS, name
    for name, clients in (("cluster_fanout", sizes["fanout_viewers"]),
                          ("cluster_rooms", sizes["rooms_clients"])):
        on_nodes = [int(n) for n in
                    scenarios[name]["results"]["chatd-2-nodes"]["clients_per_node"].split("/")]
        assert len(on_nodes) == 2 and min(on_nodes) > 0 and sum(on_nodes) == clients, name
        for server, figures in scenarios[name]["results"].items():
            nats = [key for key in figures if "_nats_cpu_" in key]
            assert bool(nats) == (server != "chatd-mariadb"), (name, server, figures)
    cross = scenarios["cross_node"]["results"]
    for server, figures in cross.items():
        assert figures["same_node_deliveries"] == figures["same_node_deliveries_expected"] > 0
        assert figures["send_acks"] == figures["same_node_messages_sent"], server
        assert ("other_node_deliveries" in figures) == (server == "chatd-2-nodes"), server
    two = cross["chatd-2-nodes"]
    assert two["other_node_deliveries"] == two["other_node_deliveries_expected"] > 0
    assert two["same_node_deliveries_expected"] == two["other_node_deliveries_expected"]


# -- the Ergo reference server: found by `ergo --version` -------------------------------

FAKE_ERGO = """#!/bin/sh
# Answers like Ergo's command line: only `--version` prints the version line.
if [ "$1" = "--version" ]; then echo "ergo-2.14.0"; exit 0; fi
printf 'ergo.\\nUsage:\\n\\tergo run [--conf <filename>]\\n\\tergo --version\\n'
exit 1
"""
NOT_ERGO = """#!/bin/sh
# Like Debian's ERGO (quantum chemistry): no version line for --version.
echo "ERGO: cannot open input file '$1'" >&2
exit 1
"""


def executable(path, text):
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_ergo_is_recognized_by_its_version_flag(tmp_path):
    from bench.servers import ergo_version, require_ergo
    fake = executable(tmp_path / "ergo", FAKE_ERGO)
    assert ergo_version(str(fake)) == "ergo-2.14.0"
    assert require_ergo(str(fake)) == str(fake)
    assert ergo_version(str(executable(tmp_path / "chemistry", NOT_ERGO))) is None


def test_a_bad_ergo_path_is_a_clear_error(tmp_path):
    from bench.servers import NotErgo, require_ergo
    not_executable = tmp_path / "plain"
    not_executable.write_text(FAKE_ERGO)
    cases = {tmp_path / "missing": "no such file",
             not_executable: "not an executable file",
             executable(tmp_path / "chemistry", NOT_ERGO): "does not print ergo-X.Y.Z"}
    for path, message in cases.items():
        with pytest.raises(NotErgo, match=message):
            require_ergo(str(path))


def test_the_bench_runs_ergo_from_ergo_path(tmp_path):
    from bench.run import irc_target, parse_args
    from bench.servers import ErgoTarget
    fake = executable(tmp_path / "ergo", FAKE_ERGO)
    target = irc_target(parse_args(["--smoke", "--ergo", str(fake)]), tmp_path)
    assert isinstance(target, ErgoTarget) and target.binary == str(fake)
    assert target.describe() == "ergo-2.14.0"


def test_the_bench_stops_at_once_on_a_bad_ergo_path(tmp_path):
    chemistry = executable(tmp_path / "chemistry", NOT_ERGO)
    for argv, message in (([str(tmp_path / "missing")], "no such file"),
                          ([str(chemistry)], "is not the Ergo IRC server"),
                          ([str(executable(tmp_path / "ergo", FAKE_ERGO)), "--no-irc"],
                           "drop --no-irc")):
        finished = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--ergo", *argv],
                                  cwd=REPO, capture_output=True, text=True, timeout=60,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
        assert finished.returncode == 2, finished.stdout + finished.stderr
        assert message in finished.stderr and "Traceback" not in finished.stderr
        assert finished.stdout == ""  # nothing started


# -- a receiver that stops getting messages is reported, with why -----------------------

@pytest.fixture(scope="module")
def bench_users(tmp_path_factory):
    """A seeded chatd SQLite database in a directory of its own, and its users."""
    from bench.scenarios import FANOUT_CHANNEL, user_name
    from bench.servers import ChatdTarget
    workdir = tmp_path_factory.mktemp("bench-chatd")
    users = [user_name(i) for i in range(5)]
    asyncio.run(ChatdTarget("sqlite", workdir).prepare(
        users, [FANOUT_CHANNEL], [(FANOUT_CHANNEL, user) for user in users]))
    return workdir, users


def chatd(workdir, *options):
    from bench.servers import ChatdTarget
    return ChatdTarget("sqlite", workdir, options)


def test_deliveries_pair_each_send_time_with_the_arrival_of_its_chunk():
    """Stamps are kept raw while a run receives; each latency is its chunk's arrival
    minus its own send time, and a phase selects by send time."""
    import time
    from bench.clients import Deliveries
    deliveries = Deliveries()
    start = time.monotonic_ns()
    early, late = start - 5_000_000, start - 1_000_000
    assert deliveries.record(b'{"channel_message":"a1 ~%d~"}\n{"channel_message":"a2 ~%d~"}\n'
                             % (early, late)) == 2
    assert deliveries.record(b'{"reply_to":"presence","ok":true}\n') == 0
    assert deliveries.record(b'{"channel_message":"a3 ~%d~"}\n' % late) == 1
    ended = time.monotonic_ns()
    assert len(deliveries) == 3
    first, second, third = deliveries.latency()
    assert start - early <= first <= ended - early and start - late <= second <= ended - late
    assert first - second == late - early      # one chunk: one arrival time
    assert third >= second
    assert deliveries.summary()["count"] == 3
    assert deliveries.summary(since_ns=late)["count"] == 2
    assert deliveries.summary(until_ns=late)["count"] == 1


def test_heartbeats_start_at_login_and_a_lapse_is_reported(bench_users):
    """Clients wait through a setup longer than --presence-timeout and still get every
    message; the one that stops heartbeating is reported, with when it went offline."""
    from bench.clients import Deliveries, marked_text
    from bench.scenarios import FANOUT_CHANNEL, Run, new_tag, wait_for_deliveries
    workdir, users = bench_users
    target = chatd(workdir, "--presence-timeout", "2")

    async def scenario():
        async with Run(target, "lapse", heartbeat_period=0.4) as run:
            deliveries = Deliveries()
            early = await run.open(users[:3], lambda name: FANOUT_CHANNEL, deliveries)
            await asyncio.sleep(2.5)    # a slow setup: longer than the presence timeout
            late = await run.open(users[3:], lambda name: FANOUT_CHANNEL, deliveries)
            await run.load_starts()
            early[0].presence_line = None   # it heartbeats no more ...
            # ... and times out: presence sweeps every third of the timeout, so offline
            # comes 2 to 2.7 s after the last heartbeat.
            await asyncio.sleep(3.2)
            tag = new_tag("t")
            for sequence in range(5):
                early[1].send_channel_message(FANOUT_CHANNEL, marked_text(tag, sequence))
            await wait_for_deliveries(deliveries, 5 * (len(users) - 1), quiet_timeout=1)
            run.receivers_short("t", early + late, 5)
            run.server_errors()
        return run.figures

    figures = asyncio.run(scenario())
    assert figures["t_receivers_short"] == 1, figures
    assert figures["t_first_short"].startswith(
        f"{users[0]}: 0 of 5 (connected, announced offline "), figures
    assert figures["presence_lapses"] == 1, figures
    assert figures["first_presence_lapse"].startswith(f"{users[0]} announced offline "), figures
    assert "s into the load" in figures["first_presence_lapse"]


def test_clients_closed_by_the_server_are_reported_with_why(bench_users):
    """One client is told goodbye (a line too long), one is dropped as a slow reader
    (it stops reading, with a tiny receive buffer): both are counted, with their reasons."""
    from bench.clients import PASSWORD, ChatdClient
    from bench.scenarios import FANOUT_CHANNEL, Run
    workdir, users = bench_users
    target = chatd(workdir, "--max-output-buffer", "65536")

    async def stalled_client(port, name):
        """Logged in and looking, on a socket with a tiny receive buffer; then paused."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        _, client = await asyncio.get_running_loop().create_connection(
            lambda: ChatdClient(name), sock=sock)
        await client.request({"user:pwd": f"{name}:{PASSWORD}"})
        await client.look_at(FANOUT_CHANNEL)
        client.ready_at = time.monotonic()
        client.transport.pause_reading()
        return client

    async def scenario():
        async with Run(target, "closed") as run:
            sender, rude = await run.open(users[:2], lambda name: FANOUT_CHANNEL)
            stalled = await stalled_client(run.server.port, users[2])
            run.clients.append(stalled)
            await run.load_starts()
            rude.send_line(b"x" * 20_000 + b"\n")     # --max-line is 16,384
            text = "y" * 3000
            # At most 10,000 lines of 3 kB: far past the limit. In bursts of 10, so the
            # sender's own copies (it looks at the channel too) stay well under its limit.
            for _ in range(1000):
                for _ in range(10):
                    sender.send_channel_message(FANOUT_CHANNEL, text)
                await asyncio.sleep(0.02)
                if run.server.log_lines(target.slow_reader_log):
                    break
            stalled.transport.resume_reading()     # and so it sees the reset
            for _ in range(100):
                if stalled.closed and rude.closed:
                    break
                await asyncio.sleep(0.05)
            run.server_errors()
        return run.figures

    figures = asyncio.run(scenario())
    assert figures["clients_closed_by_server"] == 2, figures
    assert figures["slow_readers_dropped"] == 1, figures
    assert f"dropping {users[2]} from 127.0.0.1" in figures["first_slow_reader_drop"]
    assert "1x disconnect abuse: A line is at most 16384 bytes" in figures["close_reasons"]
    assert "1x connection error: ConnectionResetError" in figures["close_reasons"], figures


def test_missing_deliveries_are_printed_with_what_explains_them():
    from bench.report import losses
    figures = {"steady_deliveries_expected": 749_000, "steady_deliveries": 743_460,
               "steady_receivers_short": 40, "steady_first_short": "u00003: 612 of 749 (...)",
               "max_deliveries_expected": 10, "max_deliveries": 10, "max_receivers_short": 0,
               "presence_lapses": 40, "first_presence_lapse": "u00003 announced offline ..."}
    assert losses(figures) == [
        "steady: 5,540 of 749,000 deliveries missing",
        "  steady_receivers_short: 40",
        "  steady_first_short: u00003: 612 of 749 (...)",
        "  presence_lapses: 40",
        "  first_presence_lapse: u00003 announced offline ..."]
    figures["steady_deliveries"] = 749_000
    assert losses(figures) == []


def test_profile_parts_count_each_sample_once_by_its_innermost_part(tmp_path):
    from bench.profile import summarize
    twisted = "/usr/lib/python3.11/site-packages/twisted/internet"
    hub = f"{REPO}/chatd/hub.py"
    relay = [f"Hub.channel_message ({hub}:215)", f"LocalBus.publish ({REPO}/chatd/bus.py:92)",
             f"ChatProtocol.write_line ({REPO}/chatd/protocol.py:133)",
             f"FileDescriptor.write ({twisted}/abstract.py:394)"]
    raw = tmp_path / "profile.txt"
    raw.write_text("\n".join([
        "thread (1): MainThread;" + ";".join(
            relay + [f"FileDescriptor.startWriting ({twisted}/abstract.py:486)"]) + " 3",
        "thread (1): MainThread;" + ";".join(relay) + " 1",
        "thread (1): MainThread;"
        f"FileDescriptor.doWrite ({twisted}/abstract.py:271);"
        f"Connection.writeSomeData ({twisted}/tcp.py:293);untilConcludes (util.py:9) 4",
        "thread (2): PoolThread-twisted.internet.reactor-0;"
        f"flush ({REPO}/chatd/store.py:200) 50",
    ]) + "\n")
    summary = summarize(raw, top=5)
    assert summary["profile_samples"] == 8
    assert summary["profile_parts_pct"] == {"send (writeSomeData)": 50.0,
                                            "epoll register (startWriting)": 37.5,
                                            "transport.write (queue, checks)": 12.5}
    assert summary["profile_inclusive_pct"]["Hub.channel_message (chatd/hub.py)"] == 50.0
