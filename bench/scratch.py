"""A database to measure on and throw away, for the store-level benches."""

import contextlib
import tempfile
import uuid

from chatd.engines import engine_from_url


@contextlib.contextmanager
def scratch_database(server=None, name="chatd-bench"):
    """The URL of a fresh database: a new SQLite file, or with `server`
    (mysql://USER@HOST:PORT) a new MariaDB database, dropped afterwards."""
    if server is None:
        yield f"sqlite:{tempfile.mkdtemp()}/{name}.sqlite"
        return
    import MySQLdb
    base = engine_from_url(server.rstrip("/") + "/x")
    database = "chatd_bench_" + uuid.uuid4().hex[:8]
    admin = MySQLdb.connect(host=base.host, port=base.port, user=base.user, passwd=base.password)
    admin.cursor().execute(f"CREATE DATABASE {database} CHARACTER SET utf8mb4")
    try:
        yield server.rstrip("/") + "/" + database
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {database}")
