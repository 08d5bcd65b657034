"""Test setup shared by the server and the GUI tests.

The whole suite runs in one process on the Qt reactor (qreactor, as
qtclient.qtreactor fixes it), so
end-to-end tests (real servers, real TCP clients) and GUI tests (pytest-qt)
share one event loop. The reactor is hooked into Qt with runReturn(); a test
that returns a Deferred (an `inlineCallbacks` test) is run by spinning a Qt
event loop until the Deferred fires, on the main stack (no greenlets, which
Qt's nested loops do not survive).

MariaDB tests run when CHATD_TEST_MYSQL names a server
(mysql://root:@127.0.0.1:3306); CHATD_REQUIRE_MYSQL=1 turns a missing MariaDB
into a failure instead of a skip (CI sets both).
"""

import inspect
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QT_API", "pyqt6")

import pytest  # noqa: E402
from PyQt6.QtWidgets import QApplication  # noqa: E402

_app = QApplication.instance() or QApplication([])
from qtclient.qtreactor import install  # noqa: E402

install()
from twisted.internet import defer, reactor  # noqa: E402

reactor.runReturn(installSignalHandlers=False)

from support import mysql_database, start_server, stop_server, wait  # noqa: E402


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run `inlineCallbacks` tests to completion on the Qt reactor."""
    function = pyfuncitem.obj
    if inspect.iscoroutinefunction(function):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    result = function(**{name: pyfuncitem.funcargs[name] for name in names})
    if isinstance(result, defer.Deferred):
        wait(result, timeout=pyfuncitem.get_closest_marker("timeout").args[0]
             if pyfuncitem.get_closest_marker("timeout") else 60)
    return True


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): how long a Deferred test may run")


@pytest.fixture(params=["sqlite", "mysql"])
def database(request, tmp_path):
    """A fresh, empty database URL on each engine."""
    if request.param == "sqlite":
        yield f"sqlite:{tmp_path / 'chatd.sqlite'}"
    else:
        with mysql_database() as url:
            yield url


@pytest.fixture
def sqlite_database(tmp_path):
    return f"sqlite:{tmp_path / 'chatd.sqlite'}"


@pytest.fixture
def server(database):
    """A running chatd on a free loopback port, on each engine."""
    running = start_server(database)
    yield running
    stop_server(running)


@pytest.fixture
def sqlite_server(sqlite_database):
    running = start_server(sqlite_database)
    yield running
    stop_server(running)


def pytest_unconfigure(config):
    """Stop the reactor's thread pool (bcrypt, DNS) so its non-daemon threads let pytest exit.

    The reactor was started with runReturn() and never runs its shutdown
    triggers, which is what would normally stop the pool.
    """
    if reactor.threadpool is not None:
        reactor.threadpool.stop()
