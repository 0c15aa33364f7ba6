"""Staff record that a written confirmation of an oral declaration went (day D) while our numbered letter still
waits; ours goes later, on day T, and says "you may cancel until T + 30". The donor's 30 days run from the latest
written confirmation sent: crm records T, so a cancellation up to T + 30 makes the declaration never made, and a
claim waits until that window has closed (giftaid reads crm's `confirmation_sent_on`)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import time_machine

from core.runtime import InlineWorker, Runtime
from crm import service as crm_service
from crm.models import Declaration, DeclarationMethod
from giftaid import service as giftaid_service
from receipts import service
from receipts.delivery import MailError
from receipts.models import DeliveryStatus, DocumentKind
from tests.fixtures.smtp import Mailbox
from tests.receipts import factories
from tests.receipts.helpers import deliveries, documents
from tests.receipts.pdf import pdf_text

MADE_ON = dt.date(2025, 11, 1)
STAFF_DAY = dt.date(2025, 11, 4)  # D
NUMBERED = dt.datetime(2025, 11, 3, 10, 0, tzinfo=dt.UTC)
WENT = dt.datetime(2025, 11, 20, 10, 0, tzinfo=dt.UTC)  # T: 20 November, cancel by 20 December
WENT_ON = dt.date(2025, 11, 20)


def _sent_on(runtime: Runtime, declaration: uuid.UUID) -> dt.date | None:
    with runtime.read_session() as session:
        row = session.get(Declaration, declaration)
        assert row is not None
        return row.confirmation_sent_on


def _code(runtime: Runtime, gift_id: uuid.UUID, today: dt.date) -> str:
    with runtime.read_session() as session:
        explanation = giftaid_service.explain(session, runtime.settings, gift_id, today=today)
    return explanation.code or "claimable"


def _numbered(runtime: Runtime, worker: InlineWorker, *, email: str | None) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """An oral declaration recorded on 3 November, a gift under it, and its letter numbered (not sent yet)."""
    from receipts import tasks

    worker.stop()
    supporter = factories.supporter(runtime, email=email)
    declaration = factories.declaration(runtime, supporter, made_on=MADE_ON, method=DeclarationMethod.ORAL)
    gift = factories.gift(runtime, supporter, received_on=MADE_ON, donor_details=factories.donor(email=email))
    tasks.issue_oral_confirmation(declaration_id=str(declaration))
    [letter] = documents(runtime, DocumentKind.ORAL_CONFIRMATION)
    [delivery] = deliveries(runtime, letter.id)
    return declaration, gift, delivery.id


def _staff_record(runtime: Runtime, declaration: uuid.UUID, day: dt.date) -> None:
    with runtime.unit_of_work() as uow:
        crm_service.confirm_oral_declaration(
            uow, declaration, confirmation_sent_on=day, by="fundraiser@calais-aid.example"
        )


def _cancel(runtime: Runtime, declaration: uuid.UUID, on: dt.date) -> bool:
    with time_machine.travel(factories.at_uk(on), tick=False), runtime.unit_of_work() as uow:
        return crm_service.cancel_declaration(uow, declaration, effective_on=on, reason="changed mind").voided


def _emailed_late(runtime: Runtime, worker: InlineWorker, mailbox: Mailbox) -> tuple[uuid.UUID, uuid.UUID]:
    with time_machine.travel(NUMBERED, tick=False):
        declaration, gift, delivery = _numbered(runtime, worker, email="ada@example.org")
        mailbox.refuse = True
        with pytest.raises(MailError), runtime.unit_of_work() as uow:
            service.send_delivery(uow, runtime.settings, delivery, attempt=1, final=False)
        mailbox.refuse = False
    with time_machine.travel(factories.at_uk(STAFF_DAY), tick=False):
        _staff_record(runtime, declaration, STAFF_DAY)
    with time_machine.travel(WENT, tick=False), runtime.unit_of_work() as uow:
        assert service.send_delivery(uow, runtime.settings, delivery, attempt=2, final=False) == DeliveryStatus.SENT
    [message] = mailbox.messages
    text = pdf_text(bytes(next(iter(message.iter_attachments())).get_content()))
    assert "Date this letter was sent 20/11/2025" in text and "that is by 20/12/2025" in text, text
    return declaration, gift


def test_a_cancellation_within_the_letters_30_days_voids_after_staff_recorded_an_earlier_confirmation(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """D = 4 November recorded by staff, our email goes on 20 November ("cancel by 20/12/2025"): crm now counts from
    20 November, and a donor who cancels on 19 December (after D + 30, within T + 30) is treated as never having
    declared."""
    declaration, _ = _emailed_late(runtime, worker, mailbox)
    assert _sent_on(runtime, declaration) == WENT_ON
    assert _cancel(runtime, declaration, WENT_ON + dt.timedelta(days=29)) is True


def test_the_gifts_wait_for_the_letters_30_days_not_the_staff_dates(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """Past D + 30 but within T + 30 the gift is not claimable (the donor may still cancel as our letter allows);
    once T + 30 is over, it is."""
    _, gift = _emailed_late(runtime, worker, mailbox)
    assert _code(runtime, gift, STAFF_DAY + dt.timedelta(days=31)) == "oral_unconfirmed"
    assert _code(runtime, gift, WENT_ON + dt.timedelta(days=30)) == "oral_unconfirmed"
    assert _code(runtime, gift, WENT_ON + dt.timedelta(days=31)) == "claimable"


def test_a_posted_letter_moves_the_window_to_its_batch_day(runtime: Runtime, worker: InlineWorker) -> None:
    """No email: staff record 4 November, the postal batch prints our letter on 20 November: crm counts from the
    20th, so a cancellation on 19 December voids."""
    with time_machine.travel(NUMBERED, tick=False):
        declaration, _, _ = _numbered(runtime, worker, email=None)
    with time_machine.travel(factories.at_uk(STAFF_DAY), tick=False):
        _staff_record(runtime, declaration, STAFF_DAY)
    with time_machine.travel(WENT, tick=False), runtime.unit_of_work() as uow:
        assert service.build_postal_batch(uow, runtime.settings) is not None
    assert _sent_on(runtime, declaration) == WENT_ON
    assert _cancel(runtime, declaration, WENT_ON + dt.timedelta(days=29)) is True


def test_a_later_staff_date_stays_and_a_copy_does_not_move_the_window(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """The latest written confirmation counts: staff recording a letter of their own sent after ours keeps theirs,
    and a copy of ours sent later still says (and crm keeps) the day ours first went."""
    declaration, _ = _emailed_late(runtime, worker, mailbox)
    later = WENT_ON + dt.timedelta(days=3)
    with time_machine.travel(factories.at_uk(later), tick=False):
        _staff_record(runtime, declaration, later)
    [letter] = documents(runtime, DocumentKind.ORAL_CONFIRMATION)
    with time_machine.travel(factories.at_uk(later + dt.timedelta(days=2)), tick=False):
        with runtime.unit_of_work() as uow:
            copy = service.resend(uow, letter.id, requested_by="staff@example.org").id
        with runtime.unit_of_work() as uow:
            assert service.send_delivery(uow, runtime.settings, copy, attempt=1, final=False) == DeliveryStatus.SENT
    assert _sent_on(runtime, declaration) == later
