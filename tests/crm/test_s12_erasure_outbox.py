"""Erasure also deletes the supporter's emails from the demo/laptop outbox (`[email] outbox_dir`, one `.eml` a
message, receipts attached): through a durable job written with the erasure, which names no address in the clear,
and leaves everyone else's emails (even an address that merely contains theirs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import select

from core.mailer import Attachment, Email, send_email
from core.models import Job, JobStatus
from core.runtime import Runtime
from core.settings import Settings
from giving.privacy import erase_supporter
from tests.crm.helpers import make_supporter
from tests.fixtures.app import make_settings

OUTBOX_JOB = "privacy.delete_outbox_mail"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path, email={"outbox_dir": str(tmp_path / "outbox")})


def mail(settings: Settings, to: str, subject: str, *, receipt: bool = False) -> None:
    attachments = [Attachment("receipt-R1.pdf", b"%PDF-1.7 Ada Lovelace, 12 Acacia Avenue")] if receipt else []
    send_email(Email(to=to, subject=subject, text="Dear Ada,", attachments=attachments), settings.email)


def subjects(outbox: Path) -> set[str]:
    found = set()
    for path in outbox.glob("*.eml"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("Subject: "):
                found.add(line.removeprefix("Subject: "))
    return found


def test_erasure_deletes_the_supporters_emails_from_the_outbox(
    runtime: Runtime, settings: Settings, request: pytest.FixtureRequest
) -> None:
    ada = make_supporter(runtime, email="ada@example.org")
    make_supporter(runtime, email="jada@example.org", first_name="Jada")
    mail(settings, "ada@example.org", "Your receipt", receipt=True)
    mail(settings, "Ada Lovelace <ADA@Example.org>", "Please confirm your email updates")
    mail(settings, "jada@example.org", "Jada's receipt", receipt=True)
    mail(settings, "ada@example.org.uk", "Someone else at a longer address")
    outbox = Path(settings.email.outbox_dir)
    (outbox / "notes.txt").write_text("not an email")
    assert len(list(outbox.glob("*.eml"))) == 4

    with runtime.unit_of_work() as uow:
        erase_supporter(uow, runtime.settings, ada)
    # Durable: written with the erasure, so a crash before the worker runs it loses nothing.
    with runtime.read_session() as session:
        job = session.exec(select(Job).where(Job.actor_name == OUTBOX_JOB)).one()
    assert "ada@example.org" not in json.dumps(job.arguments).lower()

    request.getfixturevalue("worker").join()
    assert subjects(outbox) == {"Jada's receipt", "Someone else at a longer address"}
    assert (outbox / "notes.txt").exists()
    with runtime.read_session() as session:
        assert session.exec(select(Job).where(Job.actor_name == OUTBOX_JOB)).one().status == JobStatus.DONE


def test_without_an_outbox_erasure_asks_for_no_outbox_job(runtime: Runtime) -> None:
    """Sending over SMTP keeps no copy here: nothing to delete, no job."""
    ada = make_supporter(runtime)
    settings = runtime.settings
    smtp_only = settings.model_copy(update={"email": settings.email.model_copy(update={"outbox_dir": ""})})
    with runtime.unit_of_work() as uow:
        erase_supporter(uow, smtp_only, ada)
    with runtime.read_session() as session:
        assert session.exec(select(Job).where(Job.actor_name == OUTBOX_JOB)).first() is None
