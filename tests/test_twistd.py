"""`twistd chatd`: options, and the real command in a subprocess on each engine."""

import json
import os
import re
import queue
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from twisted.application.service import IServiceCollection
from twisted.python.usage import UsageError

from chatd.server import ChatServer
from chatd.tap import Options, makeService


def parse(*argv):
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_defaults_need_no_options():
    config = parse().config()
    assert config.listen == "tcp:7878"
    assert config.database == "sqlite:chatd.sqlite"
    assert config.bcrypt_rounds == 12 and config.admins == []
    assert config.spool_file is None and config.spool_memory == 10000


def test_options_are_validated_with_clear_messages():
    cases = [
        (["--database", "postgres://x"], "unknown database"),
        (["--database", "mysql://root@localhost"], "needs a host and a database"),
        (["--database", "mysql://root@localhost:notaport/db"], "port"),
        (["--bcrypt-rounds", "many"], "whole number"),
        (["--bcrypt-rounds", "3"], "between 4 and 31"),
        (["--listen", "7878"], "endpoint string"),
        (["--max-line", "10"], "at least 256"),
        (["--spool-memory", "0"], "at least 1"),
        (["--spool-memory", "lots"], "whole number"),
    ]
    for argv, message in cases:
        with pytest.raises(UsageError, match=message):
            parse(*argv)


def test_make_service_only_assembles():
    options = parse("--listen", "tcp:0", "--database", "sqlite:/nonexistent/dir/x.sqlite",
                    "--admin", "alice", "--admin", "bob")
    top = makeService(options)
    assert IServiceCollection.providedBy(top)
    [server] = list(top)
    assert isinstance(server, ChatServer) and not server.running
    assert server.config.admins == ["alice", "bob"]


TWISTD = [str(Path(sys.executable).with_name("twistd")), "--pidfile=", "-n", "chatd"]
CHECKOUT = Path(__file__).resolve().parents[1]


def environment(*first_on_path):
    """This checkout (and `first_on_path`) first on PYTHONPATH, so twistd finds its plugin
    whatever kind of install this is."""
    path = [str(p) for p in first_on_path] + [str(CHECKOUT)]
    inherited = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path + ([inherited] if inherited else [])))


def run_twistd(cwd, *args, command=TWISTD, open_files=None):
    """Start `twistd -n chatd ARGS` in `cwd`; return it and the port it listens on.

    `open_files`: the process's descriptor limit (RLIMIT_NOFILE), if not inherited.
    """
    limit = None if open_files is None else (
        lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files)))
    process = subprocess.Popen(
        [*command, *args], cwd=cwd, env=environment(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=limit)
    lines = queue.Queue()
    def read_output():
        for line in process.stdout:
            lines.put(line)
        lines.put(None)   # end of output: the process has exited
    threading.Thread(target=read_output, daemon=True).start()
    output = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if line is None:
            break
        output.append(line)
        found = re.search(r"chatd listening on ([\d.]+):(\d+)", line)
        if found:
            process.later_output = lines   # the rest of its log, line by line
            return process, int(found.group(2))
    process.kill()
    raise AssertionError("chatd did not start:\n" + "".join(output))


def talk(port, *requests):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        stream = sock.makefile("rwb")
        answers = []
        for request in requests:
            stream.write(json.dumps(request).encode() + b"\n")
            stream.flush()
            while True:
                message = json.loads(stream.readline())
                if "reply_to" in message:
                    answers.append(message)
                    break
        return answers


def register_and_login(port):
    return talk(port,
                {"register": "alice", "password": "long enough", "email": "a@example.org"},
                {"user:pwd": "alice:long enough", "user": "alice"})


def stop(process):
    """SIGTERM; twistd stops cleanly and then exits by that signal, as it was asked to."""
    process.terminate()
    assert process.wait(timeout=30) in (0, -signal.SIGTERM)


def test_twistd_with_no_options_listens_on_7878_with_sqlite(tmp_path):
    free = socket.socket()
    if free.connect_ex(("127.0.0.1", 7878)) == 0:
        pytest.skip("something already listens on port 7878")
    free.close()
    process, port = run_twistd(tmp_path, "--bcrypt-rounds", "4")
    try:
        assert port == 7878
        assert all(reply.get("ok") for reply in register_and_login(port))
    finally:
        stop(process)
    assert (tmp_path / "chatd.sqlite").exists()


def test_twistd_against_mariadb(tmp_path):
    from support import mysql_database
    with mysql_database() as url:
        process, port = run_twistd(tmp_path, "--listen", "tcp:0:interface=127.0.0.1",
                                   "--database", url, "--bcrypt-rounds", "4")
        try:
            assert all(reply.get("ok") for reply in register_and_login(port))
        finally:
            stop(process)


# -- start-up that fails loudly -------------------------------------------------

def twistd_failure(cwd, *args, env=None, command=TWISTD):
    """Run `twistd -n chatd ARGS`, which must fail to start; return (stderr line, log)."""
    started = time.monotonic()
    done = subprocess.run([*command, "--bcrypt-rounds", "4", *args], cwd=cwd,
                          env=env or environment(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, (done.returncode, done.stderr, done.stdout)
    assert time.monotonic() - started < 30
    [line] = done.stderr.splitlines()
    assert line.startswith("chatd: could not start: ")
    assert "chatd could not start" in done.stdout and "Traceback" in done.stdout
    assert "chatd listening" not in done.stdout
    return line, done.stdout


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_bad_endpoint_string_fails_with_one_line(tmp_path):
    line, _ = twistd_failure(tmp_path, "--listen", "tcp:notaport")
    assert "--listen tcp:notaport: not a usable endpoint" in line


def test_a_port_in_use_fails_with_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line, _ = twistd_failure(tmp_path, "--listen", f"tcp:{port}:interface=127.0.0.1")
    assert f"--listen tcp:{port}:interface=127.0.0.1: cannot listen there" in line
    assert "in use" in line


def test_an_sqlite_file_that_cannot_be_opened_fails_with_one_line(tmp_path):
    line, _ = twistd_failure(tmp_path, "--database", "sqlite:no/such/dir/chatd.sqlite")
    assert line == ("chatd: could not start: cannot open the database"
                    " sqlite:no/such/dir/chatd.sqlite: unable to open database file")


def test_mysql_without_mysqlclient_fails_with_one_line_instead_of_hanging(tmp_path):
    fake = tmp_path / "no-mysqlclient"
    fake.mkdir()
    (fake / "MySQLdb.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'MySQLdb'\", name='MySQLdb')\n")
    line, _ = twistd_failure(tmp_path, "--database", "mysql://root@127.0.0.1:3306/chatd",
                             env=environment(fake))
    assert "needs mysqlclient, which is not installed: pip install 'chatd[mysql]'" in line


def test_an_unreachable_database_server_fails_with_one_line(tmp_path):
    pytest.importorskip("MySQLdb")
    port = free_port()
    line, _ = twistd_failure(tmp_path, "--database", f"mysql://root@127.0.0.1:{port}/chatd")
    assert f"cannot reach the database server at 127.0.0.1:{port}" in line


def test_an_unknown_database_fails_with_one_line(tmp_path):
    from support import mysql_database
    with mysql_database() as url:
        missing = url + "_missing"
        line, _ = twistd_failure(tmp_path, "--database", missing)
    assert f"the database {missing.rsplit('/', 1)[1]!r} does not exist" in line


# -- the chatd command -----------------------------------------------------------

CHATD = [sys.executable, "-m", "chatd"]     # what the `chatd` console script runs


def test_chatd_run_serves_like_twistd(tmp_path):
    process, port = run_twistd(tmp_path, "--listen", "tcp:0:interface=127.0.0.1",
                               "--bcrypt-rounds", "4", command=[*CHATD, "run"])
    try:
        assert all(reply.get("ok") for reply in register_and_login(port))
    finally:
        stop(process)
    assert (tmp_path / "chatd.sqlite").exists()


def chatd(*args, cwd):
    return subprocess.run([*CHATD, *args], cwd=cwd, env=environment(), capture_output=True,
                          text=True, timeout=60)


def test_chatd_help_and_usage_errors_are_short(tmp_path):
    usage = chatd("--help", cwd=tmp_path)
    assert usage.returncode == 0 and usage.stdout.startswith("Usage: chatd run [options]")
    options = chatd("run", "--help", cwd=tmp_path)
    assert options.returncode == 0 and options.stdout.startswith("Usage: chatd run [options]")
    assert "every network interface" in options.stdout and "--spool-memory" in options.stdout
    wrong = chatd("run", "--bcrypt-rounds", "3", cwd=tmp_path)
    assert wrong.returncode == 2 and wrong.stdout == ""
    assert wrong.stderr.splitlines()[0] == (
        "chatd run: --bcrypt-rounds must be between 4 and 31, not 3")
    unknown = chatd("serve", cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown command 'serve'" in unknown.stderr


def test_chatd_run_start_failure_exits_1_with_one_line(tmp_path):
    failed = chatd("run", "--listen", "tcp:notaport", cwd=tmp_path)
    assert failed.returncode == 1
    assert failed.stderr.splitlines() == [
        "chatd: could not start: --listen tcp:notaport: not a usable endpoint"
        " (invalid literal for int() with base 10: 'notaport')."]


def test_past_the_descriptor_limit_newcomers_are_told_and_the_server_stays_usable(tmp_path):
    """With 128 descriptors the cap is 64 connections; 150 idle sockets do not lock anyone out."""
    process, port = run_twistd(tmp_path, "--listen", "tcp:0:interface=127.0.0.1",
                               "--bcrypt-rounds", "4", "--max-connections-per-ip", "1000",
                               open_files=128)
    sockets = []
    try:
        for _ in range(150):
            sockets.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            time.sleep(0.002)
        held, refused = sockets[:64], sockets[64:]
        for sock in refused:
            notice = json.loads(sock.makefile("rb").readline())
            assert notice == {"event": "disconnect", "kind": "limit", "reason":
                              "The server is full right now; try again in a minute."}
            sock.close()
        for sock in held:
            sock.settimeout(0.01)
            with pytest.raises(socket.timeout):
                sock.recv(1)
        held.pop().close()
        time.sleep(0.5)
        assert all(reply.get("ok") for reply in register_and_login(port))
    finally:
        for sock in sockets:
            sock.close()
        stop(process)
    log = "".join(line for line in process.later_output.queue if line is not None)
    assert "Too many open files" not in log and "EMFILE" not in log, log
    assert "(--max-connections)" in log
