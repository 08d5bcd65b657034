"""Database engines: SQL is written once (qmark style) and adapted here per engine.

The shape follows Synapse's storage/engines: one small object per engine knows
its DB-API module, how to open a pool, how to set a connection up, which errors
mean "the database is unreachable", and the few spots where the dialects differ.
What the engines share lives in `Engine`.
"""

import importlib.resources
import queue
import re
import sqlite3
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

# How durable a commit is: "crash" survives kill -9 of chatd, "power" a power loss.
DURABILITY_LEVELS = ("crash", "power")


def schema_files():
    """The schema package: schema/ beside chatd/ in a checkout (an editable install maps
    chatd.schema to the checkout it was made from, not necessarily this one), else
    chatd.schema once installed."""
    checkout = Path(__file__).resolve().parent.parent / "schema"
    if (checkout / "__init__.py").is_file():
        return checkout
    try:
        return importlib.resources.files("chatd.schema")
    except ModuleNotFoundError:
        return importlib.resources.files("schema")


class DatabaseURLError(ValueError):
    """The --database value cannot be understood."""


class ConnectionPool(adbapi.ConnectionPool):
    """adbapi's pool, for functions that end their transaction themselves (chatd.store's
    Store._transaction commits, then tells the commits that wait for it): adbapi's own
    commit after them would be a second COMMIT, a round trip on MariaDB. A function
    that raises is rolled back, as by adbapi."""

    def _runWithConnection(self, func, *args, **kw):
        conn = self.connectionFactory(self)
        try:
            return func(conn, *args, **kw)
        except BaseException:
            try:
                conn.rollback()
            except BaseException:
                log.failure("rollback failed")
            raise


class ConnectionThread:
    """One connection in one thread of its own, for functions that end their transaction
    themselves, as ConnectionPool with one connection but lighter: a run is handed
    over with one queue put and answered with one callFromThread (Twisted's thread
    pool and Deferred plumbing around a commit of one message on SQLite cost about
    as much CPU as the commit).

    `runWithConnection(function, *args)` runs function(connection, *args) in the thread,
    rolls back if it raises, and fires on the reactor with its result or failure. The
    connection is opened (`connect()`, then `on_connect(connection)`) at the first run,
    or at the next if that failed or `is_lost(error)` says the last one lost it.
    Runs handed over while one runs follow it at once, with no wait for the reactor.
    """

    def __init__(self, connect, on_connect, name, is_lost=lambda error: False):
        from twisted.internet import reactor
        self._reactor = reactor
        self._connect, self._on_connect, self._is_lost = connect, on_connect, is_lost
        self._connection = None
        self._runs = queue.SimpleQueue()    # (function, args, deferred); None stops
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def runWithConnection(self, function, *args):
        d = defer.Deferred()
        self._runs.put((function, args, d))
        return d

    def close(self):
        """Finish the runs handed over, then close the connection (blocks until then,
        as adbapi's close does)."""
        if self._thread is not None:
            self._runs.put(None)
            self._thread.join()
            self._thread = None

    def _work(self):
        while (run := self._runs.get()) is not None:
            function, args, d = run
            try:
                result = self._run(function, args)
            except BaseException:
                self._reactor.callFromThread(d.errback, Failure())
            else:
                self._reactor.callFromThread(d.callback, result)
        if self._connection is not None:
            self._connection.close()

    def _run(self, function, args):
        if self._connection is None:
            connection = self._connect()
            try:
                self._on_connect(connection)
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        try:
            return function(self._connection, *args)
        except BaseException as e:
            if self._is_lost(e) or self._is_lost(e.__cause__):  # (a CommitUncertain's)
                connection, self._connection = self._connection, None
                try:
                    connection.close()
                except BaseException:
                    pass    # it is gone already; the next run opens a new one
                raise
            try:
                self._connection.rollback()
            except BaseException:
                log.failure("rollback failed")
            raise


class Engine:
    """What every engine shares; subclasses name the module and the dialect."""

    name = None
    module = None           # the DB-API module
    insert_ignore = None    # INSERT that skips a row whose key exists (spool replay)
    commits_in_flight = 1   # message commits that may overlap (one writer unless said)
    # The message pool's connections take several statements in one round trip, so a
    # commit sends its id lock, inserts and COMMIT at once (MessageLog._commit_in_one_trip).
    one_trip_commits = False
    checkpoint_interval = None  # seconds between background log checkpoints (None: the engine needs none)

    def __init__(self, durability="crash"):
        if durability not in DURABILITY_LEVELS:
            raise ValueError(f"durability is one of {', '.join(DURABILITY_LEVELS)}")
        self.durability = durability

    def cursor(self, connection):
        """A cursor that takes the engine-neutral (qmark) SQL: sqlite3's own."""
        return connection.cursor()

    def is_integrity_error(self, failure_or_exc):
        return isinstance(getattr(failure_or_exc, "value", failure_or_exc),
                          self.module.IntegrityError)

    def is_connection_error(self, exc):
        """True only if `exc` says the database cannot be reached or is busy: a
        mistake in the SQL is a bug and must not be retried or spooled."""
        raise NotImplementedError

    def begin(self, cursor, readonly=False):
        """Open the transaction explicitly where the driver does not."""

    def checkpoint(self, connection):
        """Copy the write-ahead log back into the database (checkpoint_interval's work)."""
        raise NotImplementedError

    def schema_lock(self):
        """The name of the server-wide lock held while upgrading the schema, or None
        where one process has the database to itself."""
        return None

    def insert_raising(self, table, keys, column):
        """INSERT of `keys` + `column` that, on a row with those keys, keeps the larger
        `column` (a read marker only moves forward)."""
        names = ", ".join(keys + (column,))
        marks = ", ".join("?" * (len(keys) + 1))
        return f"INSERT INTO {table} ({names}) VALUES ({marks}) " + self._raise_clause(keys, column)

    def migrations(self):
        """[(version, sql text)] of schema/<engine>/NNN_*.sql, oldest first."""
        found = []
        for entry in (schema_files() / self.name).iterdir():
            match = re.match(r"(\d{3})_.*\.sql$", entry.name)
            if match:
                found.append((int(match.group(1)), entry.read_text()))
        return sorted(found)

    @staticmethod
    def split_statements(script):
        """Split a schema file into statements (no semicolons inside our literals; a
        CREATE TRIGGER runs to its END)."""
        lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
        statements, pending = [], ""
        for part in "\n".join(lines).split(";"):
            pending = f"{pending};{part}" if pending else part
            if (re.match(r"\s*CREATE\s+TRIGGER\b", pending, re.IGNORECASE)
                    and not re.search(r"\bEND\s*$", pending, re.IGNORECASE)):
                continue
            if pending.strip():
                statements.append(pending.strip())
            pending = ""
        return statements


class SqliteEngine(Engine):
    name = "sqlite"
    module = sqlite3
    insert_ignore = "INSERT OR IGNORE"
    # A checkpoint (copying the WAL's pages back, two fsyncs) run by a committing
    # connection delays that commit's acks by milliseconds, every ~70 messages with
    # SQLite's default of 1,000 pages. chatd checkpoints on a connection of its own
    # instead (chatd.store.Checkpoints); the committing connections' own checkpoint
    # stays, at WAL_BOUND_PAGES, as the bound on the WAL's size under a load that
    # never pauses, and finds little left to copy.
    checkpoint_interval = 0.2
    WAL_BOUND_PAGES = 10000     # 40 MB of 4 KiB pages
    CONNECT_OPTIONS = dict(check_same_thread=False, isolation_level=None)
    # The OperationalError texts that mean "busy or unreachable" (sqlite3 gives no codes
    # before 3.11's sqlite_errorcode); anything else ("no such table", a syntax error) is a bug.
    UNAVAILABLE = ("database is locked", "database table is locked", "unable to open",
                   "disk i/o error", "database or disk is full", "readonly database")

    @staticmethod
    def use_index(index):
        return f"INDEXED BY {index}"

    def __init__(self, path, durability="crash", busy_timeout=5.0):
        super().__init__(durability)
        self.path = path
        self.busy_timeout = busy_timeout

    def describe(self):
        return f"sqlite:{self.path}"

    def beside(self, suffix):
        """A file next to the database's: chatd.sqlite -> chatd<suffix>."""
        path = Path(self.path)
        return str(path.with_name(path.stem.split(".")[0] + suffix))

    def default_spool_path(self):
        return self.beside("-spool.jsonl")

    def search_index_path(self):
        """chatd.searchindex's file: chatd.sqlite -> chatd-search.sqlite."""
        return self.beside("-search.sqlite")

    def make_pool(self, for_messages=False):
        # One connection per pool: the message log's and everything else's. Every
        # writing transaction takes the write lock when it begins (BEGIN IMMEDIATE),
        # so the two wait for each other (busy_timeout) instead of failing with
        # "database is locked"; reads begin deferred and, in WAL mode, wait for nobody.
        # isolation_level=None: transactions are opened by begin(), never implicitly.
        # The message log's commits, one at a time, go to a thread of their own; so
        # does everything else (one connection: adbapi's pool would only add its
        # thread pool's hand-offs, about as much reactor CPU as a login's reads).
        return ConnectionThread(self._connect, self.on_connect,
                                "chatd-message-log" if for_messages else "chatd-sqlite")

    def _connect(self):
        return sqlite3.connect(self.path, **self.CONNECT_OPTIONS)

    def on_connect(self, conn):
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL: a commit survives a crash of the process (the WAL is in the
        # OS's cache); FULL also fsyncs the WAL at each commit, so it survives power loss.
        conn.execute("PRAGMA synchronous=" + ("FULL" if self.durability == "power" else "NORMAL"))
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        conn.execute(f"PRAGMA wal_autocheckpoint={self.WAL_BOUND_PAGES}")

    def is_connection_error(self, exc):
        return (isinstance(exc, sqlite3.OperationalError)
                and any(text in str(exc).lower() for text in self.UNAVAILABLE))

    def begin(self, cursor, readonly=False):
        cursor.execute("BEGIN" if readonly else "BEGIN IMMEDIATE")

    def checkpoint(self, connection):
        # PASSIVE: copy what no reader still needs, never wait for a writer. Once all
        # is copied the next commit starts the WAL over from its beginning.
        cursor = connection.cursor()
        cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
        cursor.fetchall()

    @staticmethod
    def _raise_clause(keys, column):
        return (f"ON CONFLICT ({', '.join(keys)}) DO UPDATE"
                f" SET {column} = MAX({column}, excluded.{column})")


class _FormatCursor:
    """A MySQLdb cursor that takes qmark SQL (MySQLdb's placeholders are %s)."""

    def __init__(self, cursor):
        self._cursor = cursor

    def execute(self, sql, params=()):
        return self._cursor.execute(sql.replace("?", "%s"), params)

    def executemany(self, sql, rows):
        return self._cursor.executemany(sql.replace("?", "%s"), rows)

    def __getattr__(self, name):
        return getattr(self._cursor, name)


class MysqlEngine(Engine):
    name = "mysql"
    insert_ignore = "INSERT IGNORE"
    # A commit holds the message_ids row lock from its first statement to its COMMIT;
    # sent as one round trip, no client thread runs while it is held. The commits run
    # one after the other in one thread, the next handed over while one runs, so it
    # follows at once (several pool threads queueing on the lock were slower under
    # load: each step waited for a core).
    one_trip_commits = True
    commits_in_flight = 2
    # Server errors that mean busy or going away (client-side errors are 2000-2999):
    # too many connections, shutdown, lock wait timeout, deadlock, query interrupted, killed.
    UNAVAILABLE_CODES = {1040, 1053, 1205, 1213, 1317, 1927}

    @staticmethod
    def use_index(index):
        # MariaDB otherwise walks the whole channel back from its newest row to
        # reach `id < before` (bench: 37 history pages/s → 1,870 with the hint).
        return f"FORCE INDEX ({index})"

    def __init__(self, host, port, user, password, database, durability="crash"):
        super().__init__(durability)
        self.host, self.port, self.user = host, port, user
        self.password, self.database = password, database

    @property
    def module(self):
        import MySQLdb
        return MySQLdb

    def describe(self):
        return f"mysql://{self.user}@{self.host}:{self.port}/{self.database}"

    def schema_lock(self):
        return f"chatd-schema-{self.database}"[:64]     # GET_LOCK names are server-wide

    def default_spool_path(self):
        """In the working directory, named after the database so two never share one."""
        return f"chatd-spool-{self.database}.jsonl"

    def connect_kwargs(self):
        return dict(host=self.host, port=self.port, user=self.user,
                    passwd=self.password, db=self.database, charset="utf8mb4",
                    connect_timeout=5, read_timeout=30, write_timeout=30)

    def make_pool(self, for_messages=False):
        import MySQLdb  # (fails early with a clear ImportError)
        if for_messages:
            from MySQLdb.constants import CLIENT
            return ConnectionThread(
                lambda: MySQLdb.connect(**self.connect_kwargs(),
                                        client_flag=CLIENT.MULTI_STATEMENTS),
                self.on_connect, "chatd-message-log", is_lost=self.is_connection_error)
        return ConnectionPool("MySQLdb", cp_reconnect=True, cp_min=1, cp_max=4,
                              cp_openfun=self.on_connect, **self.connect_kwargs())

    @staticmethod
    def on_connect(conn):
        cursor = conn.cursor()
        cursor.execute("SET time_zone = '+00:00'")
        cursor.execute("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'")
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        cursor.close()
        conn.autocommit(False)

    def cursor(self, connection):
        return _FormatCursor(connection.cursor())

    @staticmethod
    def _raise_clause(keys, column):
        return f"ON DUPLICATE KEY UPDATE {column} = GREATEST({column}, VALUES({column}))"

    @staticmethod
    def was_not_sent(exc):
        """True if `exc` says the statement never reached the server: the client could
        not send it (CR_SERVER_GONE_ERROR; a reply lost after sending is 2013)."""
        return bool(getattr(exc, "args", None)) and exc.args[0] == 2006

    def is_connection_error(self, exc):
        MySQLdb = self.module
        if isinstance(exc, MySQLdb.InterfaceError):
            return True
        if not isinstance(exc, MySQLdb.OperationalError):
            return False
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        return code is None or 2000 <= code < 3000 or code in self.UNAVAILABLE_CODES


def engine_from_url(url, durability="crash"):
    """Parse `sqlite:PATH` or `mysql://USER:PASS@HOST:PORT/DB` into an engine."""
    if url.startswith("sqlite:"):
        path = url[len("sqlite:"):]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise DatabaseURLError("sqlite: needs a file path, e.g. sqlite:chatd.sqlite")
        return SqliteEngine(path, durability)
    if url.startswith(("mysql://", "mariadb://")):
        parts = urlsplit(url)
        database = parts.path.lstrip("/")
        if not parts.hostname or not database:
            raise DatabaseURLError(
                "a MySQL URL needs a host and a database: mysql://USER:PASS@HOST:PORT/DB")
        try:
            port = parts.port or 3306
        except ValueError:
            raise DatabaseURLError(f"the port in {url!r} is not a number") from None
        return MysqlEngine(parts.hostname, port, unquote(parts.username or "root"),
                           unquote(parts.password or ""), database, durability)
    raise DatabaseURLError(
        f"unknown database {url!r}: use sqlite:PATH or mysql://USER:PASS@HOST:PORT/DB")
