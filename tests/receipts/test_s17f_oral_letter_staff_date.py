"""Staff record an oral declaration's confirmation date themselves (a letter of their own, on the staff page or the
API) while our numbered letter still waits to go: our letter states the day it really went, never the day staff
recorded (a day before it existed, with 30 days to cancel it does not give), and what it states can be made again
from stored rows alone (a copy, a postal batch made again). crm then records the day ours went, the later
written confirmation (the donor's 30 days run from the latest: tests/receipts/test_s17m_oral_latest_confirmation.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import time_machine

from core.runtime import InlineWorker, Runtime
from crm import service as crm_service
from crm.models import Declaration, DeclarationMethod
from receipts import service
from receipts.delivery import MailError
from receipts.errors import NothingToResend
from receipts.models import DeliveryStatus, DocumentKind
from receipts.storage import sha256
from tests.fixtures.smtp import Mailbox
from tests.receipts import factories
from tests.receipts.helpers import deliveries, documents, history, stored_pdf
from tests.receipts.pdf import pdf_text

MADE_ON = dt.date(2025, 11, 1)
STAFF_DAY = dt.date(2025, 11, 2)


def _attachment(message: object) -> bytes:
    return bytes(next(iter(message.iter_attachments())).get_content())  # type: ignore[attr-defined]


def _sent_on(runtime: Runtime, declaration: object) -> dt.date | None:
    with runtime.read_session() as session:
        row = session.get(Declaration, declaration)
        assert row is not None
        return row.confirmation_sent_on


def _numbered(runtime: Runtime, worker: InlineWorker, *, email: str | None) -> tuple:
    from receipts import tasks

    worker.stop()
    supporter = factories.supporter(runtime, email=email)
    declaration = factories.declaration(runtime, supporter, made_on=MADE_ON, method=DeclarationMethod.ORAL)
    tasks.issue_oral_confirmation(declaration_id=str(declaration))
    [letter] = documents(runtime, DocumentKind.ORAL_CONFIRMATION)
    [delivery] = deliveries(runtime, letter.id)
    return declaration, letter, delivery


def _staff_record(runtime: Runtime, declaration: object, day: dt.date) -> None:
    with runtime.unit_of_work() as uow:
        crm_service.confirm_oral_declaration(
            uow,
            declaration,  # type: ignore[arg-type]
            confirmation_sent_on=day,
            by="fundraiser@calais-aid.example",
        )


def test_a_late_email_states_the_day_it_went_not_the_day_staff_recorded(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """Numbered on 3 November, the email is refused; staff record that a confirmation went on 2 November; the email
    goes on 5 November. It says 5 November and 5 December (in the PDF, its date, the email), the stored PDF is that
    letter, and a copy asked for later repeats those days. crm records 5 November, the later letter."""
    numbered = dt.datetime(2025, 11, 3, 10, 0, tzinfo=dt.UTC)
    with time_machine.travel(numbered, tick=False):
        declaration, letter, delivery = _numbered(runtime, worker, email="ada@example.org")
        mailbox.refuse = True
        with pytest.raises(MailError), runtime.unit_of_work() as uow:
            service.send_delivery(uow, runtime.settings, delivery.id, attempt=1, final=False)
        mailbox.refuse = False
        _staff_record(runtime, declaration, STAFF_DAY)
    with time_machine.travel(numbered + dt.timedelta(days=2), tick=False), runtime.unit_of_work() as uow:
        assert service.send_delivery(uow, runtime.settings, delivery.id, attempt=2, final=False) == DeliveryStatus.SENT

    assert _sent_on(runtime, declaration) == dt.date(2025, 11, 5)
    [message] = mailbox.messages
    sent = _attachment(message)
    text = pdf_text(sent)
    assert "Date 05/11/2025" in text and "Date this letter was sent 05/11/2025" in text, text
    assert "that is by 05/12/2025" in text and "02/11/2025" not in text and "02/12/2025" not in text, text
    body = message.get_body(("plain",))
    assert body is not None and "until 05/12/2025" in body.get_content()
    [stored] = documents(runtime, DocumentKind.ORAL_CONFIRMATION)
    assert stored_pdf(runtime, stored) == sent and stored.sha256 == sha256(sent)

    with time_machine.travel(numbered + dt.timedelta(days=9), tick=False):
        with runtime.unit_of_work() as uow:
            copy_id = service.resend(uow, letter.id, requested_by="staff@example.org").id
        with runtime.unit_of_work() as uow:
            assert service.send_delivery(uow, runtime.settings, copy_id, attempt=1, final=False) == "sent"
    copy = pdf_text(_attachment(mailbox.messages[1]))
    assert "DUPLICATE" in copy and "Date this letter was sent 05/11/2025" in copy, copy
    assert "that is by 05/12/2025" in copy and "02/11/2025" not in copy, copy


def test_an_email_sent_the_day_it_was_numbered_states_what_it_stated_when_numbered(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """Refused at 10:00, staff record 2 November at 10:30, it goes at 11:00 the same day: the letter that goes is the
    one the issuing job rendered (3 November, cancel by 3 December), and the stored file and hash stay."""
    numbered = dt.datetime(2025, 11, 3, 10, 0, tzinfo=dt.UTC)
    with time_machine.travel(numbered, tick=False):
        declaration, letter, delivery = _numbered(runtime, worker, email="ada@example.org")
        mailbox.refuse = True
        with pytest.raises(MailError), runtime.unit_of_work() as uow:
            service.send_delivery(uow, runtime.settings, delivery.id, attempt=1, final=False)
        mailbox.refuse = False
    with time_machine.travel(numbered + dt.timedelta(minutes=30), tick=False):
        _staff_record(runtime, declaration, STAFF_DAY)
    with time_machine.travel(numbered + dt.timedelta(hours=1), tick=False), runtime.unit_of_work() as uow:
        assert service.send_delivery(uow, runtime.settings, delivery.id, attempt=2, final=False) == DeliveryStatus.SENT

    [message] = mailbox.messages
    sent = _attachment(message)
    text = pdf_text(sent)
    assert "Date this letter was sent 03/11/2025" in text and "that is by 03/12/2025" in text, text
    assert "02/12/2025" not in text, text
    [stored] = documents(runtime, DocumentKind.ORAL_CONFIRMATION)
    assert (stored.sha256, stored.content, stored.rendered_at) == (letter.sha256, letter.content, letter.rendered_at)
    assert stored_pdf(runtime, stored) == sent


def test_a_posted_letter_states_its_batch_day_not_the_day_staff_recorded(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """No email: numbered on 3 November, staff record 4 November, the postal batch is made on 10 November. The page
    says 10 November (cancel by 10 December), and so does the batch made again after another supporter's erasure."""
    from giving.privacy import erase_supporter

    numbered = dt.datetime(2025, 11, 3, 10, 0, tzinfo=dt.UTC)
    with time_machine.travel(numbered, tick=False):
        declaration, _, _ = _numbered(runtime, worker, email=None)
        other = factories.supporter(runtime, email=None, first_name="Bob", last_name="Pagewright")
        other_gift = factories.gift(
            runtime, other, donor_details=factories.donor(first_name="Bob", last_name="Pagewright", email=None)
        )
        from receipts import tasks

        tasks.issue_for_gift(gift_id=str(other_gift))
    with time_machine.travel(numbered + dt.timedelta(days=1), tick=False):
        _staff_record(runtime, declaration, dt.date(2025, 11, 4))
    with time_machine.travel(numbered + dt.timedelta(days=7), tick=False), runtime.unit_of_work() as uow:
        batch = service.build_postal_batch(uow, runtime.settings)
        assert batch is not None and batch.documents == 2
    path = Path(service.postal_batch_path(runtime.settings, batch))
    printed = pdf_text(path.read_bytes())
    assert "Date this letter was sent 10/11/2025" in printed and "that is by 10/12/2025" in printed, printed
    assert "04/11/2025" not in printed and "04/12/2025" not in printed, printed
    assert _sent_on(runtime, declaration) == dt.date(2025, 11, 10)

    with time_machine.travel(numbered + dt.timedelta(days=9), tick=False):
        with runtime.unit_of_work() as uow:
            erase_supporter(uow, runtime.settings, other)
        with runtime.unit_of_work() as uow:
            assert service.rebuild_postal_batch(uow, runtime.settings, batch.id) == 1
    rebuilt = pdf_text(path.read_bytes())
    assert "Pagewright" not in rebuilt, rebuilt
    assert "Date this letter was sent 10/11/2025" in rebuilt and "that is by 10/12/2025" in rebuilt, rebuilt
    assert "04/11/2025" not in rebuilt and "04/12/2025" not in rebuilt, rebuilt


def test_a_letter_that_never_went_is_withdrawn_once_cancelled_even_after_staff_recorded_a_date(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """Our email is refused; staff record a confirmation of their own (2 November); the donor then cancels (void:
    within 30 days of it). None of our letters went, so ours does not go out confirming what the donor cancelled:
    the delivery is withdrawn with the reason on the history, and staff cannot send a copy of it."""
    numbered = dt.datetime(2025, 11, 3, 10, 0, tzinfo=dt.UTC)
    with time_machine.travel(numbered, tick=False):
        declaration, letter, delivery = _numbered(runtime, worker, email="ada@example.org")
        mailbox.refuse = True
        with pytest.raises(MailError), runtime.unit_of_work() as uow:
            service.send_delivery(uow, runtime.settings, delivery.id, attempt=1, final=False)
        mailbox.refuse = False
        _staff_record(runtime, declaration, STAFF_DAY)
        with runtime.unit_of_work() as uow:
            cancelled = crm_service.cancel_declaration(
                uow,
                declaration,  # type: ignore[arg-type]
                effective_on=dt.date(2025, 11, 3),
                reason="changed mind",
            )
            assert cancelled.voided
    with time_machine.travel(numbered + dt.timedelta(hours=1), tick=False):
        with runtime.unit_of_work() as uow:
            status = service.send_delivery(uow, runtime.settings, delivery.id, attempt=2, final=False)
        assert status == DeliveryStatus.WITHDRAWN
        with pytest.raises(NothingToResend), runtime.unit_of_work() as uow:
            service.resend(uow, letter.id, requested_by="staff@example.org")
    assert mailbox.messages == []
    [item] = history(runtime, letter.supporter_id)
    assert item.summary.endswith("not sent: the declaration was cancelled"), item.summary
