"""The client over TLS against a real chatd with a self-signed certificate made in the test."""

import pytest
from support import PASSWORD, make_self_signed_cert, start_server, stop_server

from conftest import PATIENCE, fill_login


@pytest.fixture
def tls_server(qtbot, sqlite_database, tmp_path, make_model):
    """A chatd listening with TLS only, its certificate self-signed for 'localhost';
    'bob' registered through a model that trusts it."""
    key, cert = make_self_signed_cert(tmp_path)
    server = start_server(sqlite_database,
                          listen=f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
    server.cert_file = str(cert)
    server.tls_address = f"tls://localhost:{server.address.port}"
    registrar = make_model(ca_file=server.cert_file)
    with qtbot.waitSignal(registrar.registered, timeout=PATIENCE):
        registrar.register(server.tls_address, "bob", "bob@example.org", PASSWORD)
    registrar.close()
    yield server
    stop_server(server)


def test_the_model_logs_in_over_tls_when_it_trusts_the_servers_certificate(
        qtbot, make_model, tls_server):
    model = make_model(ca_file=tls_server.cert_file)
    with qtbot.waitSignal(model.channelsChanged, timeout=PATIENCE):
        model.login(tls_server.tls_address, "bob", PASSWORD)
    assert model.user == "bob" and model.state == "online"


def test_an_unverifiable_certificate_is_a_clear_login_error(qtbot, make_model, tls_server):
    model = make_model()  # the system's roots do not include our self-signed certificate
    with qtbot.waitSignal(model.loginFailed, timeout=PATIENCE) as failed:
        model.login(tls_server.tls_address, "bob", PASSWORD)
    message = failed.args[0]
    assert "could not prove its identity" in message
    assert "certificate verify failed" in message
    assert "--ca-file" in message
    assert model.user is None


def test_a_certificate_for_another_host_name_is_refused_even_when_trusted(
        qtbot, make_model, tls_server, tmp_path):
    other_key, other_cert = make_self_signed_cert(tmp_path, hostname="chat.example.org")
    model = make_model(ca_file=str(other_cert))
    with qtbot.waitSignal(model.loginFailed, timeout=PATIENCE) as failed:
        model.login(tls_server.tls_address, "bob", PASSWORD)
    assert "could not prove its identity" in failed.args[0]
    assert str(other_cert) in failed.args[0]


def test_plain_tcp_to_a_tls_server_does_not_log_in(qtbot, make_model, tls_server):
    model = make_model()
    with qtbot.waitSignal(model.loginFailed, timeout=PATIENCE) as failed:
        model.login(f"localhost:{tls_server.address.port}", "bob", PASSWORD)
    assert failed.args[0].startswith("Could not reach the server")


def test_login_page_with_tls_ticked_and_a_trusted_certificate_file(
        qtbot, make_window, tls_server):
    window = make_window()
    page = window.login_page
    page.set_server(tls_server.tls_address)
    assert page.use_tls.isChecked() and page.address.text() == f"localhost:{tls_server.address.port}"
    fill_login(window, "bob")
    with qtbot.waitSignal(window.model.loginFailed, timeout=PATIENCE):
        page.submit.click()
    assert page.error.isVisible() and "could not prove its identity" in page.error.text()

    page.set_ca_file(tls_server.cert_file)
    assert window.model.ca_file == tls_server.cert_file
    assert tls_server.cert_file in page.trust_label.text()
    assert window.settings.value("server/ca_file") == tls_server.cert_file
    fill_login(window, "bob")
    with qtbot.waitSignal(window.model.loggedIn, timeout=PATIENCE):
        page.submit.click()
    assert window.pages.currentWidget() is window.chat_page
    assert window.settings.value("server/address") == tls_server.tls_address


def test_an_unreadable_certificate_file_is_an_inline_error(qtbot, make_model, tls_server, tmp_path):
    model = make_model(ca_file=str(tmp_path / "missing.pem"))
    with qtbot.waitSignal(model.loginFailed, timeout=PATIENCE) as failed:
        model.login(tls_server.tls_address, "bob", PASSWORD)
    assert failed.args[0].startswith("Cannot read the certificate file")
