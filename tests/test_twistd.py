"""`twistd chatd`: options, and the real command in a subprocess on each engine."""

import json
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


def run_twistd(cwd, *args, open_files=None):
    """Start `twistd -n chatd ARGS` in `cwd`; return it and the port it listens on.

    `open_files`: the process's descriptor limit (RLIMIT_NOFILE), if not inherited.
    """
    twistd = Path(sys.executable).with_name("twistd")
    limit = None if open_files is None else (
        lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files)))
    process = subprocess.Popen(
        [str(twistd), "--pidfile=", "-n", "chatd", *args], cwd=cwd,
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
