"""Fixtures for the desktop client tests: a real chatd, real models and real windows.

Everything runs on the Qt reactor installed by the root conftest, so
``qtbot.waitSignal`` drives the network too. Timers that would take real
minutes (heartbeat, away) run on a ``task.Clock`` each test advances itself.
"""

import pytest
from PyQt6.QtCore import QSettings
from twisted.internet import reactor, task

from qtclient.model import ChatModel
from qtclient.widgets.window import ChatWindow
from support import PASSWORD, register, start_server, stop_server, wait

ADMIN = "alice"
# How long (ms) a GUI test waits for the server. Waits end as soon as what they wait for
# happens, so a generous bound costs nothing on a fast machine and spares a busy one.
PATIENCE = 30000


@pytest.fixture
def chat_server(sqlite_database):
    """A running chatd where 'alice' becomes admin when she registers."""
    # Heartbeats run on fake clocks here, so the server must not time sessions out meanwhile.
    # The client's retry after "too fast" waits on that fake clock too, so a busy machine
    # that bunches a window's start-up requests must not trip flood control (the paging
    # test starts its own server with the default limits to test that retry).
    server = start_server(sqlite_database, admins=[ADMIN], presence_timeout=600,
                          flood_burst=200)
    yield server
    stop_server(server)


@pytest.fixture
def address(chat_server):
    return f"127.0.0.1:{chat_server.address.port}"


@pytest.fixture
def accounts(chat_server):
    """Register accounts by name (all with support.PASSWORD), each once."""
    registered = set()

    def make(*names):
        for name in set(names) - registered:
            wait(register(chat_server, name))
            registered.add(name)
    return make


@pytest.fixture
def make_model(qtbot, tmp_path):
    """ChatModels on the real reactor; each gets its own fake clock for its timers.

    Their outboxes live in the test's directory (one file per server and user, so a
    second model of the same user reads what the first one left)."""
    models = []

    def make(**options):
        clock = task.Clock()
        options.setdefault("reconnect_delays", (0.05, 0.2))
        options.setdefault("data_dir", str(tmp_path / "data"))
        model = ChatModel(reactor, clock=options.pop("clock", clock), **options)
        model.clock = clock
        models.append(model)
        return model
    yield make
    for model in models:
        model.close()


@pytest.fixture
def login(qtbot, address):
    """Log a model in and wait until its channel list has arrived."""
    def do(model, name, password=PASSWORD):
        with qtbot.waitSignal(model.channelsChanged, timeout=PATIENCE):
            model.login(address, name, password)
        return model
    return do


@pytest.fixture
def make_window(qtbot, tmp_path, make_model, address):
    """A shown ChatWindow with its own model and throw-away settings (server address filled in)."""
    def make(name="window", **options):
        model = make_model(**options)
        settings = QSettings(str(tmp_path / f"{name}.ini"), QSettings.Format.IniFormat)
        settings.setValue("server/address", address)
        window = ChatWindow(model, settings)
        qtbot.addWidget(window)
        window.show()
        return window
    return make


@pytest.fixture
def logged_in_window(qtbot, make_window, accounts):
    """A window of a registered user logged in through its login page, with the user list loaded."""
    def make(name, **options):
        accounts(name)
        window = make_window(name, **options)
        fill_login(window, name)
        with qtbot.waitSignal(window.model.usersChanged, timeout=PATIENCE):
            window.login_page.submit.click()
        return window
    return make


def fill_login(window, name, password=PASSWORD):
    window.login_page.name.setText(name)
    window.login_page.password.setText(password)
