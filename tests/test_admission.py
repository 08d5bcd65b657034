"""Abuse resistance, round two (issue 11): names, big replies, registration and bcrypt.

End to end over real sockets on loopback; "several addresses" are 127.0.0.2,
127.0.0.3, ... (the client binds its socket to them). The bounded-memory
structures of chatd/admission.py are also unit-tested on a task.Clock.
"""

import time

import bcrypt
import pytest
from twisted.internet import defer, task

from chatd import rules
from chatd.addresses import address_group
from chatd.admission import KnownLogins, RegistrationLimit
from chatd.auth import BUSY, ChatError, PasswordHasher
from chatd.bus import encode
from chatd.limits import TOO_FAST
from chatd.registry import DIRECTORY_COST
from support import (LIMITS_LIFTED, PASSWORD, connect, error, login, login_admin, look_at, ok,
                     register, start_server, stop_server)

THROTTLED = "Too many failed logins; try again in"


@pytest.fixture
def server(database):
    running = start_server(database, **LIMITS_LIFTED)
    yield running
    stop_server(running)


# -- names: one folding, and look-alikes ------------------------------------------------------

def test_fold_is_nfkc_and_casefold_and_only_ascii_names_are_keys():
    assert rules.fold("\u017fam") == "sam" and rules.fold("\u212aitchen") == "kitchen"
    assert rules.fold("Stra\u00dfe") == "strasse" and rules.fold("\ufb01le") == "file"
    assert rules.name_key("Sam") == "sam" and rules.name_key("\u017fam") is None
    assert rules.channel_key("Kitchen") == "kitchen"
    assert rules.channel_key("\u212aitchen") is None and rules.channel_key("ki tchen") is None


def test_skeletons_of_look_alikes_are_equal():
    for a, b in [("AIice", "alice"), ("a1ice", "alice"), ("rnallory", "mallory"),
                 ("b0b", "bob"), ("vvill", "will"), ("jo.hn", "jo_hn"),
                 ("\u0430lice", "alice"), ("b\u03bfb", "bob")]:
        assert rules.skeleton(a) == rules.skeleton(b), (a, b)
    assert rules.skeleton("alice") != rules.skeleton("alan")


@defer.inlineCallbacks
def test_a_name_that_only_folds_into_a_valid_one_names_nothing(server):
    """A PM to 'ſam' reached Sam, and deleting '\u212aitchen' (Kelvin sign) deleted kitchen."""
    admin = yield login_admin(server, "root")
    sam = yield login(server, "Sam")
    for target in ("\u017fam", "\uff33am"):     # long s; fullwidth S
        assert "There is no user named" in error((yield admin.request(
            {"private_message": "for sam?", "other_user": target})))
        assert "There is no user named" in error((yield admin.request({"ban": target})))
    ok((yield admin.request({"command": "create kitchen"})))
    assert "no channel named" in error((yield admin.request({"delete_channel": "\u212aitchen"})))
    assert "no channel named" in error((yield admin.request({"command": "delete \u212aitchen"})))
    assert "kitchen" in server.hub.channels
    # ASCII in any case still reaches the account and the channel.
    ok((yield admin.request({"private_message": "for sam", "other_user": "SAM"})))
    got = yield sam.wait_for(lambda m: "private_message" in m)
    assert got["private_message"] == "for sam" and got["other_user"] == "Sam"
    ok((yield admin.request({"delete_channel": "Kitchen"})))
    assert "kitchen" not in server.hub.channels


@defer.inlineCallbacks
def test_a_look_alike_of_an_existing_name_is_refused_with_the_reason(server):
    for name in ("alice", "mallory", "bob", "jo.hn"):
        yield register(server, name)
    client = yield connect(server)
    for name, like in [("AIice", "alice"), ("a1ice", "alice"), ("rnallory", "mallory"),
                       ("B0B", "bob"), ("jo_hn", "jo.hn")]:
        refused = error((yield client.request(
            {"register": name, "password": PASSWORD, "email": "x@example.org"})))
        assert refused.startswith(f"The name {name!r} looks too much like {like!r}, "
                                  "which is taken"), refused
    ok((yield client.request({"register": "alice2", "password": PASSWORD,
                              "email": "x@example.org"})))
    assert sorted(server.accounts.all_names()) == ["alice", "alice2", "bob", "jo.hn", "mallory"]


# -- big replies: a byte cap, paging with a cursor, and their cost ------------------------------

SMALL_REPLY = 4096


@pytest.fixture
def paged_server(sqlite_database):
    running = start_server(sqlite_database, max_reply=SMALL_REPLY, **LIMITS_LIFTED)
    yield running
    stop_server(running)


@defer.inlineCallbacks
def pages(client, action, key, **fields):
    """Every page of a paged list, following `next`: [(reply, its size in bytes)]."""
    result, cursor = [], None
    while True:
        request = dict({action: ""}, **fields, **({} if cursor is None else {"after": cursor}))
        reply = ok((yield client.request(request)))
        result.append((reply, len(encode(reply))))
        cursor = reply["next"]
        if cursor is None:
            return result
        assert len(result) < 1000


@pytest.mark.timeout(120)
@defer.inlineCallbacks
def test_the_directory_is_paged_under_the_byte_cap_and_the_cursor_walks_all(paged_server):
    names = [f"user{n:03}" for n in range(250)] + ["Zed", "anna"]
    for name in names:
        yield paged_server.accounts.register(name, PASSWORD, f"{name}@example.org", "127.0.0.1")
    alice = yield login(paged_server, "alice")
    first = ok((yield alice.request({"list_users": ""})))     # the seed shape: the first page
    assert first["next"] is not None and 0 < len(first["users"]) < len(names)
    walked = yield pages(alice, "list_users", "users")
    assert walked[0][0]["users"] == first["users"]
    assert all(size <= SMALL_REPLY for _, size in walked), [size for _, size in walked]
    listed = [u["user"] for reply, _ in walked for u in reply["users"]]
    assert listed == sorted(names + ["alice"], key=str.casefold)      # each once, in order
    seven = ok((yield alice.request({"list_users": "", "limit": 7})))
    assert len(seven["users"]) == 7 and seven["next"] == "user004"
    assert "'limit' is between 1 and 1000" in error((yield alice.request(
        {"list_users": "", "limit": 0})))

    for n in range(120):
        yield paged_server.hub.create_channel(f"room-{n:03}", n % 2, "alice")
    channel_pages = yield pages(alice, "list_channels", "channels")
    assert len(channel_pages) > 1 and all(size <= SMALL_REPLY for _, size in channel_pages)
    listed = [c["name"] for reply, _ in channel_pages for c in reply["channels"]]
    assert listed == sorted(["general"] + [f"room-{n:03}" for n in range(120)])


@defer.inlineCallbacks
def test_a_history_page_shrinks_to_the_byte_cap_and_has_more_stays_right(paged_server):
    alice = yield login(paged_server, "alice")
    yield look_at(alice, "general")
    bodies = [f"{n:02} " + "x" * 1000 for n in range(30)]
    for body in bodies:
        ok((yield alice.request({"channel_message": body, "channel": "general"})))
    seen, before = [], None
    while True:
        request = {"get_channel": "general", "limit": 200}
        if before is not None:
            request["before"] = before
        page = ok((yield alice.request(request)))
        assert len(encode(page)) <= SMALL_REPLY and 0 < len(page["messages"]) < 30
        seen[:0] = [m["channel_message"] for m in page["messages"]]
        before = page["messages"][0]["id"]
        if not page["has_more"]:
            break
    assert seen == bodies
    # A message larger than the cap still comes, alone, and says there are older ones.
    ok((yield alice.request({"channel_message": "y" * 3900 + "é" * 100, "channel": "general"})))
    page = ok((yield alice.request({"get_channel": "general"})))
    assert len(page["messages"]) == 1 and page["has_more"] is True
    ok((yield alice.request({"private_message": "short", "other_user": "alice"})))
    private = ok((yield alice.request({"get_private": "alice"})))
    assert [m["private_message"] for m in private["messages"]] == ["short"]
    assert private["has_more"] is False


@defer.inlineCallbacks
def test_a_directory_page_costs_several_requests(sqlite_server):
    """With the default flood budget (20 at once), pages cost DIRECTORY_COST each."""
    alice = yield login(sqlite_server, "alice")      # the login took one token
    allowed = int((sqlite_server.config.flood_burst - 1) // DIRECTORY_COST)
    for _ in range(allowed):
        alice.send({"list_users": ""})
    alice.send({"list_users": "", "ref": "one too many"})
    refused = yield alice.wait_for(lambda m: m.get("ref") == "one too many")
    assert error(refused) == TOO_FAST
    answered = alice.take(lambda m: m.get("reply_to") == "list_users" and m.get("ok"))
    assert len(answered) == allowed


# -- registration per address ---------------------------------------------------------------------

def test_address_group_treats_an_ipv6_64_as_one_address():
    assert address_group("2001:db8:1:2::1") == address_group("2001:db8:1:2:ffff::9") \
        == "2001:db8:1:2::/64"
    assert address_group("2001:db8:1:3::1") != address_group("2001:db8:1:2::1")
    assert address_group("::ffff:127.0.0.2") == "127.0.0.2" == address_group("127.0.0.2")


def test_registration_limit_slides_over_the_hour():
    clock = task.Clock()
    limit = RegistrationLimit(clock, per_hour=2)
    limit.take("2001:db8::1")
    limit.take("2001:db8::2")
    with pytest.raises(ChatError, match="at most 2"):
        limit.take("2001:db8::3")       # the same /64
    limit.take("198.51.100.1")
    clock.advance(3601)
    limit.take("2001:db8::4")
    assert len(limit._times) == 1       # forgotten once out of the window


@defer.inlineCallbacks
def test_one_address_creates_at_most_the_limit_of_accounts_an_hour(sqlite_database):
    server = start_server(sqlite_database, registrations_per_hour=3)
    try:
        spammer = yield connect(server, source="127.0.0.2")
        for n in range(3):
            ok((yield spammer.request({"register": f"spam{n}", "password": PASSWORD,
                                       "email": "s@example.org"})))
        again = yield connect(server, source="127.0.0.2")     # a new connection is no way out
        for client in (spammer, again):
            refused = error((yield client.request({"register": "spam9", "password": PASSWORD,
                                                   "email": "s@example.org"})))
            assert refused.startswith("Too many accounts were created from your address in the "
                                      "last hour (at most 3); try again in "), refused
        other = yield connect(server, source="127.0.0.3")
        ok((yield other.request({"register": "honest", "password": PASSWORD,
                                 "email": "h@example.org"})))
        assert sorted(server.accounts.all_names()) == ["honest", "spam0", "spam1", "spam2"]
    finally:
        stop_server(server)


# -- the bcrypt queue and login throttling ----------------------------------------------------------

def test_known_logins_are_bounded_and_keep_the_newest():
    known = KnownLogins(capacity=3)
    for n in range(5):
        known.add(f"user{n}", "127.0.0.1")
    known.add("user2", "127.0.0.1")
    assert len(known) == 3 and ("USER4", "127.0.0.1") in known
    assert ("user1", "127.0.0.1") not in known and ("user4", "127.0.0.2") not in known


@pytest.mark.timeout(120)
@defer.inlineCallbacks
def test_past_the_bcrypt_queue_logins_are_busy_and_known_ones_go_first(sqlite_database):
    server = start_server(sqlite_database, bcrypt_rounds=11, bcrypt_concurrency=1,
                          bcrypt_queue=3, login_failures=10**6, max_connections_per_ip=100)
    try:
        yield register(server, "victim")
        yield register(server, "newcomer")
        victim = yield login(server, "victim", register_first=False)     # known from 127.0.0.1
        ok((yield victim.request({"logout": ""})))
        sprayers = []
        for n in range(10):
            sprayer = yield connect(server, source=f"127.0.0.{n + 2}")
            sprayers.append(sprayer)
        answers = []
        for n, sprayer in enumerate(sprayers):
            sprayer.send({"user:pwd": f"guess{n}:wrong password"})
            sprayer.wait_for(lambda m: m.get("reply_to") == "user:pwd", timeout=60
                             ).addCallback(lambda m, n=n: answers.append((n, m)))
        from support import until
        yield until(lambda: server.hasher.queued == 3)
        newcomer = yield connect(server, source="127.0.0.50")
        assert error((yield newcomer.request({"user:pwd": f"newcomer:{PASSWORD}"}))) == BUSY
        victim.send({"user:pwd": f"victim:{PASSWORD}", "ref": "v"})
        mine = yield victim.wait_for(lambda m: m.get("ref") == "v", timeout=60)
        ok(mine)
        yield until(lambda: len(answers) == 10)
        busy = [n for n, m in answers if m.get("error") == BUSY]
        wrong = [n for n, m in answers if m.get("error") == "Wrong name or password."]
        assert len(busy) + len(wrong) == 10 and len(busy) >= 6, answers
        assert server.hasher.running == 0 and server.hasher.queued == 0
    finally:
        stop_server(server)


@defer.inlineCallbacks
def test_bcrypt_threads_take_the_next_waiter_while_the_reactor_is_busy():
    """A finished check starts the next waiter in its thread: with the reactor blocked
    (as in a login storm, only longer), the waiting line still drains."""
    hasher = PasswordHasher(rounds=4, concurrency=1)
    password_hash = bcrypt.hashpw(b"right", bcrypt.gensalt(4)).decode()
    try:
        checks = [hasher.check(password, password_hash) for password in
                  ("right", "wrong", "right", "wrong", "right")]
        assert hasher.running == 1 and hasher.queued == 4
        deadline = time.monotonic() + 10
        while hasher.queued and time.monotonic() < deadline:
            time.sleep(0.001)   # the reactor does not run meanwhile
        assert hasher.queued == 0
        assert (yield defer.gatherResults(checks)) == [True, False, True, False, True]
        assert hasher.running == 0
    finally:
        hasher.stop()


@pytest.mark.timeout(120)
@defer.inlineCallbacks
def test_failing_logins_from_fresh_addresses_do_not_lock_the_owner_out_at_home(database):
    server = start_server(database, login_failures=3, max_connections_per_ip=100)
    try:
        owner = yield login(server, "victim")       # has logged in from 127.0.0.1
        ok((yield owner.request({"logout": ""})))
        for n in range(6):                          # 2 failures each: under the per-IP threshold
            attacker = yield connect(server, source=f"127.0.0.{n + 2}")
            for _ in range(2):
                reply = yield attacker.request({"user:pwd": "victim:a wrong guess"})
                assert error(reply) in ("Wrong name or password.",) or \
                    error(reply).startswith(THROTTLED)
        stranger = yield connect(server, source="127.0.0.40")
        assert error((yield stranger.request({"user:pwd": f"victim:{PASSWORD}"}))
                     ).startswith(THROTTLED)        # the account's backoff holds elsewhere
        for _ in range(3):
            ok((yield owner.request({"user:pwd": f"victim:{PASSWORD}"})))
            ok((yield owner.request({"logout": ""})))
    finally:
        stop_server(server)



def test_the_listen_backlog_holds_a_login_storm_not_twisteds_fifty(sqlite_server):
    """Clients all reconnecting at once wait in the kernel's accept queue; with
    Twisted's backlog of 50 the kernel drops the rest's SYNs (a 1 s wait each)."""
    import subprocess
    from chatd.limits import LISTEN_BACKLOG
    port = sqlite_server.address.port
    shown = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True,
                           text=True, check=True).stdout.split()
    somaxconn = int(open("/proc/sys/net/core/somaxconn").read())
    assert int(shown[2]) == min(LISTEN_BACKLOG, somaxconn) > 50     # ss: Send-Q is the backlog
