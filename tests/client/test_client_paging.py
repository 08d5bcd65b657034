"""The desktop client follows the directory's cursor: a real server with more
accounts and channels than one reply holds (issue 11: replies are byte-capped)."""

import pytest

from support import PASSWORD, start_server, stop_server, wait

from conftest import PATIENCE, fill_login

SMALL_REPLY = 4096
ACCOUNTS, CHANNELS = 260, 150


@pytest.fixture
def chat_server(sqlite_database):
    """A server whose replies hold about 100 users or 60 channels, with default flood limits."""
    server = start_server(sqlite_database, presence_timeout=600, max_reply=SMALL_REPLY)
    for n in range(ACCOUNTS):
        wait(server.accounts.register(f"user{n:03}", PASSWORD, "u@example.org", "127.0.0.1"))
    for n in range(CHANNELS):
        wait(server.hub.create_channel(f"room-{n:03}", False, None))
    yield server
    stop_server(server)


@pytest.mark.timeout(120)
def test_the_client_lists_every_user_and_channel_across_pages(qtbot, make_window, chat_server):
    window = make_window("user007")
    fill_login(window, "user007")
    with qtbot.waitSignal(window.model.usersChanged, timeout=PATIENCE):
        window.login_page.submit.click()
    model = window.model
    assert [u.user for u in model.users] == [f"user{n:03}" for n in range(ACCOUNTS)]
    assert sorted(c.name for c in model.channels) == sorted(
        ["general"] + [f"room-{n:03}" for n in range(CHANNELS)])
    # More than one page each (so the cursor was followed), shown in the sidebar.
    assert ACCOUNTS > 2 * (SMALL_REPLY // 60) and CHANNELS > SMALL_REPLY // 60
    assert window.chat_page.sidebar.browse.childCount() == CHANNELS + 1
