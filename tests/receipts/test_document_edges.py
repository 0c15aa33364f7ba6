"""Documents in situations found in review: an oral confirmation delivered only by a copy staff sent again, a tax
year not over yet, a correction after money a lost dispute returned, and what a statement and a sale receipt say."""

from __future__ import annotations

import datetime as dt

import pytest

from core.clock import uk_today
from core.runtime import InlineWorker, Runtime
from crm.models import Declaration, DeclarationMethod, StatementPreference
from giving.commands.receipts import number_statements, run_annual
from payments.models import Dispute, DisputeStatus, Gift, Provider
from receipts import service
from receipts.documents import tax_year_of
from receipts.errors import TaxYearNotOver
from receipts.models import DeliveryStatus, DocumentKind
from tests.fixtures.smtp import Mailbox
from tests.receipts import factories
from tests.receipts.helpers import deliveries, documents, run_job, stored_pdf
from tests.receipts.pdf import pdf_text

ANNUAL = StatementPreference.ANNUAL


def test_an_oral_confirmation_first_delivered_by_a_copy_confirms_the_declaration(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """The letter's email was refused to its last try; staff send it again (a copy) and the server accepts it. The
    written record has now been sent, so the declaration is confirmed that day; a further copy changes nothing."""
    from receipts import tasks

    supporter = factories.supporter(runtime)
    declaration = factories.declaration(
        runtime, supporter, made_on=uk_today() - dt.timedelta(days=1), method=DeclarationMethod.ORAL
    )
    worker.stop()
    tasks.issue_oral_confirmation(declaration_id=str(declaration))
    [delivery] = deliveries(runtime)
    mailbox.refuse = True
    with runtime.unit_of_work() as uow:
        assert service.send_delivery(uow, runtime.settings, delivery.id, attempt=13, final=True) == "failed"
    mailbox.refuse = False
    [letter] = documents(runtime)
    for _ in range(2):
        with runtime.unit_of_work() as uow:
            copy_id = service.resend(uow, letter.id, requested_by="staff@example.org").id
        with runtime.unit_of_work() as uow:
            assert service.send_delivery(uow, runtime.settings, copy_id, attempt=1, final=False) == DeliveryStatus.SENT
        with runtime.read_session() as session:
            row = session.get(Declaration, declaration)
            assert row is not None and row.confirmation_sent_on == uk_today()
    assert len(mailbox.messages) == 2


def test_statements_of_a_tax_year_not_over_are_refused_unless_year_to_date(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """A statement is issued once per supporter and year: one for the year we are in would stand as the year's,
    and the full one could never follow. The run refuses it, numbering nothing; `year_to_date` (the demo) allows."""
    running = tax_year_of(uk_today())
    supporter = factories.supporter(runtime, preference=ANNUAL)
    factories.gift(runtime, supporter, amount=1000, received_on=uk_today() - dt.timedelta(days=1))
    worker.stop()
    with pytest.raises(TaxYearNotOver):
        run_annual(runtime, running, wait=False)
    with pytest.raises(TaxYearNotOver):
        number_statements(runtime, running, everyone=True)
    with pytest.raises(TaxYearNotOver), runtime.unit_of_work() as uow:
        service.allocate_annual_statement(uow, runtime.settings, supporter, running)
    assert documents(runtime) == []
    assert number_statements(runtime, running, everyone=True, year_to_date=True) == 1


def test_a_correction_counts_money_a_lost_dispute_returned_before_the_refund(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """£100 Gift Aided; £30 lost in a card dispute (the Gift Aid rules then claim on the £70 kept); then £20
    refunded. The correction says what the donor kept and what we claim: £50 and £12.50."""
    supporter = factories.supporter(runtime)
    factories.declaration(runtime, supporter)
    gift = factories.gift(runtime, supporter, amount=10000, received_on=dt.date(2025, 10, 5))
    run_job(runtime, worker, "receipts.issue_for_gift", gift_id=gift)
    with runtime.unit_of_work() as uow:
        uow.session.add(
            Dispute(
                supporter_id=supporter,
                gift_id=gift,
                amount=3000,
                status=DisputeStatus.LOST,
                provider=Provider.STRIPE,
                closed_at=dt.datetime(2025, 11, 15, 12, tzinfo=dt.UTC),  # before the refund of 1 December
            )
        )
        row = uow.session.get(Gift, gift)
        assert row is not None
        row.returned_amount += 3000
        uow.session.add(row)
    refund = factories.refund(runtime, supporter_id=supporter, gift_id=gift, amount=2000)
    run_job(runtime, worker, "receipts.issue_correction", refund_id=refund)
    [correction] = documents(runtime, DocumentKind.CORRECTION)
    text = pdf_text(stored_pdf(runtime, correction))
    for expected in ("Refunded on", "£20.00", "Returned in all £50.00", "Corrected amount £50.00", "£12.50 Gift Aid"):
        assert expected in text, (expected, text)
