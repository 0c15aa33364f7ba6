"""SMTP with STARTTLS (`[email] use_tls`): the server's certificate is checked before the password goes over."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from core.mailer import Email, MailError, send_email
from core.settings import EmailSettings
from tests.fixtures.smtp import Mailbox, free_port


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no authority signed (what a man in the middle would present)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _accept_any_login(server: object, session: object, envelope: object, mechanism: str, data: object) -> AuthResult:
    return AuthResult(success=True)


@pytest.fixture
def starttls_server(tmp_path: Path) -> Iterator[tuple[Mailbox, int, Path]]:
    """(mailbox, port, certificate): an SMTP server that offers STARTTLS with a self-signed certificate."""
    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=_accept_any_login,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield mailbox, port, cert
    finally:
        controller.stop()


def _settings(port: int) -> EmailSettings:
    return EmailSettings(
        smtp_host="127.0.0.1", smtp_port=port, use_tls=True, username="receipts", password="smtp-password"
    )


def test_starttls_refuses_a_server_whose_certificate_is_not_trusted(
    starttls_server: tuple[Mailbox, int, Path],
) -> None:
    """With `use_tls` the password and the donors' receipts go only to a server whose certificate checks out: a
    STARTTLS that accepts any certificate protects nothing from a man in the middle."""
    mailbox, port, _cert = starttls_server
    with pytest.raises(MailError, match="certificate"):
        send_email(Email(to="a@example.org", subject="Hi", text="Hello"), _settings(port))
    assert mailbox.messages == []


def test_starttls_sends_to_a_server_whose_certificate_is_trusted(
    starttls_server: tuple[Mailbox, int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    mailbox, port, cert = starttls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the machine's trust store, here holding the test's certificate
    send_email(Email(to="a@example.org", subject="Hi", text="Hello"), _settings(port))
    [message] = mailbox.to("a@example.org")
    assert message["Subject"] == "Hi"
