from __future__ import annotations

from core.mailer import Attachment, Email, MailError, send_email
from core.settings import EmailSettings


def test_sends_over_smtp_with_attachment(smtp_server) -> None:  # type: ignore[no-untyped-def]
    mailbox, port = smtp_server
    settings = EmailSettings(smtp_host="127.0.0.1", smtp_port=port, from_email="hello@example.org")
    send_email(
        Email(to="a@example.org", subject="Hi", text="Hello", attachments=[Attachment("r.pdf", b"%PDF-1")]), settings
    )
    [message] = mailbox.to("a@example.org")
    assert message["Subject"] == "Hi"
    [part] = list(message.iter_attachments())
    assert part.get_filename() == "r.pdf" and part.get_content() == b"%PDF-1"


def test_refused_message_raises(smtp_server) -> None:  # type: ignore[no-untyped-def]
    mailbox, port = smtp_server
    mailbox.refuse = True
    settings = EmailSettings(smtp_host="127.0.0.1", smtp_port=port)
    try:
        send_email(Email(to="a@example.org", subject="Hi", text="Hello"), settings)
    except MailError as exc:
        assert "a@example.org" in str(exc)
    else:
        raise AssertionError("a refused message must raise")


def test_outbox_dir_keeps_messages_as_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = EmailSettings(outbox_dir=str(tmp_path / "outbox"))
    message_id = send_email(Email(to="b@example.org", subject="Kept", text="Hello"), settings)
    [path] = list((tmp_path / "outbox").glob("*.eml"))
    content = path.read_text()
    assert "Subject: Kept" in content and message_id.strip("<>").split("@")[0] in path.name
