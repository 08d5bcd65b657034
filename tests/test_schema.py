"""The schema as deployed: a real mysqldump of a running server loads and serves again.

`schema/demo-mysqldump.sql` is made by `scripts/make_demo_dump.py` from a real
chatd on MariaDB. Loading it with the `mysql` client and starting the current
server on it checks that a database written by chatd is read back, and upgraded
if its schema is older, without losing accounts, channels or the message log.
"""

import re
import subprocess
from pathlib import Path

from twisted.internet import defer

from chatd.engines import engine_from_url
from support import login, mysql_database, start_server, stop_server

DUMP = Path(__file__).resolve().parent.parent / "schema" / "demo-mysqldump.sql"
DEMO_PASSWORD = "demo-password"


def load_dump(url):
    """Load the dump into the database `url` names instead of `chatd_demo`."""
    engine = engine_from_url(url)
    script = DUMP.read_text().replace("`chatd_demo`", f"`{engine.database}`")
    subprocess.run(["mysql", "-h", engine.host, "-P", str(engine.port), "-u", engine.user,
                    *([f"-p{engine.password}"] if engine.password else [])],
                   input=script, text=True, check=True)


def test_the_demo_dump_is_a_dump_of_the_current_schema():
    versions = sorted(int(p.name.split("_")[0]) for p in
                      (DUMP.parent / "mysql").glob("[0-9]*.sql"))
    dump = DUMP.read_text()
    assert "CREATE DATABASE /*!32312 IF NOT EXISTS*/ `chatd_demo`" in dump
    recorded = re.search(r"INSERT INTO `schema_version` VALUES\s*([^;]*);", dump).group(1)
    assert [int(v) for v in re.findall(r"\((\d+)\)", recorded)] == versions, (
        "schema/demo-mysqldump.sql is older than schema/mysql/: run scripts/make_demo_dump.py")


@defer.inlineCallbacks
def test_a_server_starts_on_the_demo_dump_and_serves_its_data():
    with mysql_database() as url:
        load_dump(url)
        server = start_server(url)
        try:
            bob = yield login(server, "bob", DEMO_PASSWORD, register_first=False)
            page = yield bob.request({"get_channel": "general"})
            assert page["ok"], page
            assert [(m["user"], m["channel_message"]) for m in page["messages"]] == [
                ("alice", "Welcome to chatd! This is the general channel."),
                ("bob", "Hi everyone, glad to be here."),
                ("carol", "Hello! Is the release still planned for Friday?"),
                ("alice", "Yes, Friday afternoon."),
            ]
            private = yield bob.request({"get_private": "alice"})
            assert [m["private_message"] for m in private["messages"]] == [
                "Can you review my patch?", "Sure, after lunch."]
            channels = yield bob.request({"list_channels": ""})
            assert {"general", "random"} <= {c["name"] for c in channels["channels"]}
            sent = yield bob.request({"channel_message": "still here", "channel": "general"})
            assert sent["id"] > max(m["id"] for m in page["messages"] + private["messages"])
        finally:
            stop_server(server)


@defer.inlineCallbacks
def test_a_migration_that_fails_half_way_leaves_nothing_behind_on_sqlite(tmp_path):
    """Each schema file is one transaction: a failure in its second statement must not
    leave its first table behind (every later start then failed: "table already exists")."""
    from chatd.engines import SqliteEngine
    from chatd.store import Store
    store = Store(SqliteEngine(str(tmp_path / "chatd.sqlite")), max_queued=1000)
    store.pool = store.engine.make_pool()
    try:
        broken = [(1, "CREATE TABLE first (x INTEGER); CREATE TABLE second (y INTEGER,")]
        try:
            yield store.upgrade_schema(broken)
        except Exception as e:
            assert "syntax error" in str(e) or "incomplete input" in str(e), e
        else:
            raise AssertionError("the broken migration was applied")
        fixed = [(1, "CREATE TABLE first (x INTEGER); CREATE TABLE second (y INTEGER)")]
        assert (yield store.upgrade_schema(fixed)) == 1
        tables = yield store.query("SELECT name FROM sqlite_master WHERE type = 'table'"
                                   " ORDER BY name")
        assert [t[0] for t in tables] == ["first", "schema_version", "second"]
    finally:
        store.pool.close()


def test_schema_files_come_from_the_package():
    from chatd.engines import SqliteEngine, engine_from_url
    for engine in (SqliteEngine("x"), engine_from_url("mysql://u@h/db")):
        versions = [v for v, _ in engine.migrations()]
        assert versions == list(range(1, len(versions) + 1)) and len(versions) >= 3
