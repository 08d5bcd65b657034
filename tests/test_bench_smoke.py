"""The benchmark harness works: `python -m bench --smoke` runs every scenario.

A benchmark is not a test, so nothing here looks at a timing: only that the
results file exists and that its counts add up (every message sent was
delivered to everyone who should get it, every message is in the log, every
connection was held, every history page was full).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


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
        "fanout", "rooms", "private", "storm", "idle", "history", "log"}
    for name, scenario in smoke_results["scenarios"].items():
        for server, figures in scenario["results"].items():
            assert "failed" not in figures, (name, server, figures)
            assert "setup_failures" not in figures, (name, server, figures)
            assert "server_errors" not in figures, (name, server, figures)
            assert "server_crashed" not in figures, (name, server, figures)


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
    for figures in smoke_results["scenarios"]["fanout"]["results"].values():
        if "steady_logged" in figures:
            assert figures["steady_log_missing"] == 0
            assert figures["steady_logged"] == figures["steady_messages_sent"]


def test_idle_connections_held_and_history_pages_full(smoke_results):
    for figures in smoke_results["scenarios"]["idle"]["results"].values():
        assert figures["connections_held"] == figures["connections_requested"]
    for figures in smoke_results["scenarios"]["history"]["results"].values():
        assert figures["requests"] > 0 and figures["short_pages"] == 0


def test_storm_logins_all_succeeded(smoke_results):
    params = smoke_results["scenarios"]["storm"]["parameters"]
    for figures in smoke_results["scenarios"]["storm"]["results"].values():
        assert figures["storm_logins"] == params["L"]
