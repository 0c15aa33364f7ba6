"""Email over SMTP (`[email]` settings): no TLS and no login unless configured. With `use_tls`, STARTTLS to a server
whose certificate the machine trusts (its CA store; `SSL_CERT_FILE` names another). With `outbox_dir` (the demo, a
laptop) each message is written there as a `.eml` file instead; `delete_from_outbox` removes a person's (erasure)."""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from email.utils import formatdate, getaddresses, make_msgid
from pathlib import Path

from email_validator import EmailNotValidError, validate_email

from core import metrics
from core.settings import EmailSettings


@dataclass
class Attachment:
    filename: str
    content: bytes
    mime_type: str = "application/pdf"


@dataclass
class Email:
    to: str
    subject: str
    text: str
    html: str | None = None
    from_email: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    # What it is, for the counters `emails_sent` / `emails_failed` (receipt, subscribe, password_reset, ...).
    kind: str = "other"


class MailError(Exception):
    """The SMTP server could not be reached or refused the message: worth retrying, unless `permanent` (the
    recipient's server said the address does not exist: the same message gets the same answer)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


# An enhanced status code (RFC 3463) at the start of a reply's text: "5.1.1 <ada@...>: ... User unknown".
_ENHANCED_STATUS = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


def build_message(email: Email, settings: EmailSettings) -> EmailMessage:
    message = EmailMessage()
    message["From"] = email.from_email or settings.from_email
    message["To"] = email.to
    message["Subject"] = email.subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain=(email.from_email or settings.from_email).split("@")[-1])
    for name, value in email.headers.items():
        message[name] = value
    message.set_content(email.text)
    if email.html:
        message.add_alternative(email.html, subtype="html")
    for attachment in email.attachments:
        maintype, _, subtype = attachment.mime_type.partition("/")
        message.add_attachment(attachment.content, maintype=maintype, subtype=subtype, filename=attachment.filename)
    return message


def ascii_address(address: str) -> str:
    """An address whose domain is international (ada@bücher.org, as crm keeps it) in its ASCII form
    (ada@xn--bcher-kva.org), the same mailbox, which a server without SMTPUTF8 (many relays) accepts; any other
    address as given (one whose local part is not ASCII needs a server with SMTPUTF8)."""
    if address.isascii():
        return address
    try:
        return validate_email(address, check_deliverability=False).ascii_email or address
    except EmailNotValidError:
        return address


def send_email(email: Email, settings: EmailSettings) -> str:
    """Send one message; returns its Message-ID. Raises MailError on any SMTP failure. Counted by `email.kind`
    (`emails_sent`, `emails_failed`)."""
    try:
        message_id = _send(email, settings)
    except MailError:
        metrics.count("emails_failed", kind=email.kind)
        raise
    metrics.count("emails_sent", kind=email.kind)
    return message_id


def _send(email: Email, settings: EmailSettings) -> str:
    if settings.outbox_dir:
        return _write_to_outbox(build_message(email, settings), Path(settings.outbox_dir))
    sender = email.from_email or settings.from_email
    message = build_message(replace(email, to=ascii_address(email.to), from_email=ascii_address(sender)), settings)
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.timeout) as smtp:
            if settings.use_tls:
                # A context that checks the server's certificate and name: smtplib's default checks neither, which
                # would hand the password and the donors' receipts to anyone in the middle.
                smtp.starttls(context=ssl.create_default_context())
            password = settings.password.get_secret_value()
            if settings.username and password:
                smtp.login(settings.username, password)
            smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        replies = "; ".join(f"{code} {_text(reply)}" for code, reply in exc.recipients.values())
        raise MailError(f"could not send to {email.to}: {replies}", permanent=_no_such_address(exc)) from exc
    except (OSError, smtplib.SMTPException) as exc:
        raise MailError(f"could not send to {email.to}: {exc}") from exc
    return str(message["Message-ID"])


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _no_such_address(exc: smtplib.SMTPRecipientsRefused) -> bool:
    """Whether the server refused the recipient's address itself, for good: a 5xx reply to RCPT whose enhanced
    status is 5.1.x (no such mailbox, no such domain, a malformed address). Other 5xx replies are left to the
    retries: relay or authentication refused (5.7.x) and replies that do not say are, as often as not, about our own
    sending (a relay's configuration, put right meanwhile), where failing every delivery at once would be worse."""
    if not exc.recipients:
        return False
    for code, reply in exc.recipients.values():
        status = _ENHANCED_STATUS.match(_text(reply))
        if code < 500 or status is None or status.group(1, 2) != ("5", "1"):
            return False
    return True


def outbox_recipients(path: Path) -> list[str]:
    """The addresses (To, Cc, Bcc; lower case) of one message in the outbox; only its headers are read."""
    with path.open("rb") as handle:
        headers = BytesHeaderParser(policy=default_policy).parse(handle)
    fields = [str(value) for name in ("To", "Cc", "Bcc") for value in headers.get_all(name, [])]
    return [address.strip().lower() for _, address in getaddresses(fields) if address.strip()]


def delete_from_outbox(outbox_dir: str, addressed_to: Callable[[str], bool]) -> int:
    """Delete every message of the outbox (`[email] outbox_dir`) with a recipient `addressed_to` accepts (it is
    given each address in lower case); returns how many. Other files, and other people's messages, stay."""
    if not outbox_dir:
        return 0
    outbox = Path(outbox_dir)
    if not outbox.is_dir():
        return 0
    deleted = 0
    for path in sorted(outbox.glob("*.eml")):
        try:
            recipients = outbox_recipients(path)
        except FileNotFoundError:  # deleted meanwhile (another run of the same job)
            continue
        if any(addressed_to(address) for address in recipients):
            path.unlink(missing_ok=True)
            deleted += 1
    return deleted


def _write_to_outbox(message: EmailMessage, outbox: Path) -> str:
    outbox.mkdir(parents=True, exist_ok=True)
    message_id = str(message["Message-ID"])
    name = message_id.strip("<>").replace("@", "_").replace("/", "_")
    (outbox / f"{name}.eml").write_bytes(bytes(message))
    return message_id
