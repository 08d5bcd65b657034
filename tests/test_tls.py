"""TLS end to end: chatd on an `ssl:` endpoint with a certificate made at test time.

Clients verify the server's certificate against the one trust root they are
given; a client trusting anything else (another certificate, the platform's
roots) or expecting another host name must fail the handshake, and the
server must keep serving the clients that verify.
"""

import pytest
from cryptography.x509 import load_pem_x509_certificate
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer

from chatd.tap import Options
from support import (PASSWORD, connect_tls, make_self_signed_cert, ok, start_server,
                     stop_server, tls_listen)


@pytest.fixture
def certificate(tmp_path):
    (tmp_path / "server").mkdir()
    return make_self_signed_cert(tmp_path / "server", hostname="localhost")


@pytest.fixture
def tls_server(database, certificate):
    key_path, cert_path = certificate
    running = start_server(database, listen=tls_listen(key_path, cert_path))
    yield running
    stop_server(running)


def test_the_ssl_listen_string_is_accepted_by_twistd_options(certificate):
    key_path, cert_path = certificate
    options = Options()
    options.parseOptions(["--listen", f"ssl:7879:privateKey={key_path}:certKey={cert_path}"])
    assert options.config().listen == f"ssl:7879:privateKey={key_path}:certKey={cert_path}"


@defer.inlineCallbacks
def test_register_login_and_messages_over_verified_tls(tls_server, certificate):
    _, cert_path = certificate
    alice = yield connect_tls(tls_server, cert_path)
    ok((yield alice.request({"register": "alice", "password": PASSWORD,
                             "email": "alice@example.org"})))
    ok((yield alice.request({"user:pwd": f"alice:{PASSWORD}", "user": "alice"})))
    bob = yield connect_tls(tls_server, cert_path)
    ok((yield bob.request({"register": "bob", "password": PASSWORD, "email": "bob@example.org"})))
    ok((yield bob.request({"user:pwd": f"bob:{PASSWORD}", "user": "bob"})))
    for client in (alice, bob):
        ok((yield client.request({"join": "general"})))
        client.send({"presence": "online", "channel": "general"})
        yield client.event("members", channel="general")
    sent = ok((yield alice.request({"channel_message": "over TLS", "user": "alice",
                                    "channel": "general"})))
    relayed = yield bob.wait_for(lambda m: "channel_message" in m)
    assert relayed == {"channel_message": "over TLS", "user": "alice", "channel": "general",
                       "id": sent["id"], "time": sent["time"]}
    ok((yield bob.request({"private_message": "psst", "other_user": "alice"})))
    private = yield alice.wait_for(lambda m: m.get("private_message") == "psst")
    assert private["user"] == "bob"
    # The connection really is TLS: the peer certificate is the one we generated.
    peer = alice.transport.getPeerCertificate()
    assert peer.to_cryptography() == load_pem_x509_certificate(open(cert_path, "rb").read())
    assert tls_server.hub.ips["alice"] == "127.0.0.1"


@defer.inlineCallbacks
def expect_failed_handshake(client):
    """The client sends a request that must never be answered: the handshake fails first."""
    client.send({"register": "mallory", "password": PASSWORD, "email": "m@example.org"})
    yield client.closed
    assert client.lost_reason.check(SSL.Error), client.lost_reason
    assert "certificate verify failed" in str(client.lost_reason.value), client.lost_reason
    assert not client.inbox


@defer.inlineCallbacks
def test_a_client_trusting_another_certificate_fails_verification(tls_server, certificate,
                                                                   tmp_path):
    (tmp_path / "other").mkdir()
    _, other_cert = make_self_signed_cert(tmp_path / "other", hostname="localhost")
    yield expect_failed_handshake((yield connect_tls(tls_server, other_cert)))
    yield expect_failed_handshake((yield connect_tls(tls_server, None)))    # platform roots
    assert "mallory" not in tls_server.accounts.names
    # Clients that verify are unaffected.
    good = yield connect_tls(tls_server, certificate[1])
    ok((yield good.request({"register": "alice", "password": PASSWORD,
                            "email": "alice@example.org"})))


@defer.inlineCallbacks
def test_a_client_expecting_another_host_name_fails_verification(tls_server, certificate):
    client = yield connect_tls(tls_server, certificate[1], hostname="chat.example.org")
    client.send({"register": "mallory", "password": PASSWORD, "email": "m@example.org"})
    yield client.closed
    assert client.lost_reason.check(VerificationError), client.lost_reason
    assert not client.inbox
    assert "mallory" not in tls_server.accounts.names
