"""Documents in situations found in review: an oral confirmation delivered only by a copy staff sent again, a tax
year not over yet, a correction after money a lost dispute returned, and what a statement and a sale receipt say."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from sqlmodel import col

from core.clock import uk_today
from core.runtime import InlineWorker, Runtime
from crm.models import Declaration, DeclarationMethod, DeclarationScope, StatementPreference
from giving.commands.receipts import number_statements, run_annual
from payments.models import Dispute, DisputeStatus, Gift, Method, Provider
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


# --- the annual statement ---------------------------------------------------------------------------------------------


def statement_text(runtime: Runtime, worker: InlineWorker, supporter: object) -> str:
    run_job(runtime, worker, "receipts.issue_annual_statement", supporter_id=supporter, tax_year="2025-26")
    [statement] = documents(runtime, DocumentKind.ANNUAL_STATEMENT)
    return pdf_text(stored_pdf(runtime, statement))


def test_a_statement_never_adds_euros_to_pounds(runtime: Runtime, worker: InlineWorker, mailbox: Mailbox) -> None:
    """£10 by card and €20 by SEPA Direct Debit: each gift in its own currency; the sterling totals (and Gift Aid)
    count the pounds only, and the euros have a total of their own."""
    supporter = factories.supporter(runtime, preference=ANNUAL)
    factories.declaration(runtime, supporter)
    factories.gift(runtime, supporter, amount=1000, received_on=dt.date(2025, 6, 1))
    euro = factories.gift(runtime, supporter, amount=2000, received_on=dt.date(2025, 7, 1), method=Method.DIRECT_DEBIT)
    with runtime.unit_of_work() as uow:
        uow.session.execute(sa.update(Gift).where(col(Gift.id) == euro).values(currency="EUR"))
    text = statement_text(runtime, worker, supporter)
    assert "01/07/2025 Winter appeal Direct Debit €20.00 No" in text, text
    assert "Total donated £10.00" in text and "Total donated in EUR (no Gift Aid) €20.00" in text, text
    assert "Total Gift Aided £10.00" in text and "£2.50" in text, text
    assert "£20.00" not in text and "£30.00" not in text, text


def test_a_declaration_made_after_the_year_that_reaches_back_is_listed(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """Gift of 1 October 2025; on 20 April 2026 the donor declares for the past four years. The statement marks
    the gift Gift Aided and names that declaration."""
    supporter = factories.supporter(runtime, preference=ANNUAL)
    factories.gift(runtime, supporter, amount=4000, received_on=dt.date(2025, 10, 1))
    factories.declaration(
        runtime, supporter, made_on=dt.date(2026, 4, 20), scope=DeclarationScope.PAST_4_YEARS_AND_FUTURE
    )
    text = statement_text(runtime, worker, supporter)
    assert "01/10/2025 Winter appeal Card £40.00 Yes" in text, text
    assert "Made on 20/04/2026" in text and "We hold no Gift Aid declaration" not in text, text


def test_a_declaration_for_one_gift_of_another_year_is_not_listed(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    supporter = factories.supporter(runtime, preference=ANNUAL)
    old_gift = factories.gift(runtime, supporter, amount=1000, received_on=dt.date(2024, 6, 1))
    factories.declaration(
        runtime, supporter, made_on=dt.date(2024, 6, 1), scope=DeclarationScope.THIS_GIFT, gift_id=old_gift
    )
    factories.gift(runtime, supporter, amount=2000, received_on=dt.date(2025, 7, 1))
    text = statement_text(runtime, worker, supporter)
    assert "01/07/2025 Winter appeal Card £20.00 No" in text, text
    assert "Made on 01/06/2024" not in text and "We hold no Gift Aid declaration" in text, text


def test_a_gift_claimed_under_a_declaration_made_void_is_not_gift_aided(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """An oral declaration cancelled within 30 days of its written record is treated as never made (giftaid.md
    rule 13), and the Gift Aid claimed under it is taken back: the statement must not count it (the donor uses the
    grossed-up figure for higher-rate relief)."""
    from giftaid import service as giftaid_service

    supporter = factories.supporter(runtime, preference=ANNUAL)
    declaration = factories.declaration(runtime, supporter, made_on=dt.date(2025, 5, 1), method=DeclarationMethod.ORAL)
    with runtime.unit_of_work() as uow:
        uow.session.execute(
            sa.update(Declaration)
            .where(col(Declaration.id) == declaration)
            .values(confirmation_sent_on=dt.date(2025, 5, 2))
        )
    factories.gift(runtime, supporter, amount=10000, received_on=dt.date(2025, 6, 1))
    with runtime.unit_of_work() as uow:
        assert giftaid_service.build_claim(uow, runtime.settings, through=dt.date(2025, 12, 31), actor="t").lines == 1
    with runtime.unit_of_work() as uow:
        change = giftaid_service.cancel_declaration(
            uow, runtime.settings, declaration, effective_on=dt.date(2025, 5, 20), reason="letter", actor="t"
        )
        assert change.adjusted_gift_ids
    text = statement_text(runtime, worker, supporter)
    assert "01/06/2025 Winter appeal Card £100.00 No" in text, text
    assert "Total Gift Aided £0.00" in text, text


def test_a_sale_receipt_says_where_the_donation_of_the_basket_is_receipted(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """A supporter on yearly statements buys a shirt and adds £5: the sale receipt comes (shop orders always get
    one) but no gift receipt, so it says the donation will be on their statement, not that it has its own."""
    yearly = factories.supporter(runtime, preference=ANNUAL)
    order, _gift = factories.order(runtime, yearly, lines=[("Solidarity T-shirt", "M", 1, 1500)], donation=500)
    run_job(runtime, worker, "receipts.issue_for_order", order_id=order)
    [sale] = documents(runtime, DocumentKind.SALE_RECEIPT)
    assert documents(runtime, DocumentKind.GIFT_RECEIPT) == []
    text = pdf_text(stored_pdf(runtime, sale))
    assert "it will be on your annual statement" in text and "its own donation receipt" not in text, text


def test_an_oral_confirmation_going_by_post_is_dated_the_day_it_is_printed(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """A donor without email: the letter is numbered today and printed in a postal batch on a later day, which is
    the day it is sent (and recorded as such). So it states that day as the day it was sent and counts the 30 days
    from it, rather than the day it was numbered (a cancel-by date a week too early); the stored PDF is the letter
    printed (tests/receipts/test_h_oral_letter_dates.py has the batch's page)."""
    import time_machine

    supporter = factories.supporter(runtime, email=None)
    day = dt.datetime(2026, 1, 12, 10, 0, tzinfo=dt.UTC)
    with time_machine.travel(day, tick=False):
        declaration = factories.declaration(
            runtime, supporter, made_on=dt.date(2026, 1, 10), method=DeclarationMethod.ORAL
        )
        run_job(runtime, worker, "receipts.issue_oral_confirmation", declaration_id=declaration)
    [letter] = documents(runtime)
    [delivery] = deliveries(runtime)
    assert delivery.channel == "post"
    with time_machine.travel(day + dt.timedelta(days=7), tick=False), runtime.unit_of_work() as uow:
        assert service.build_postal_batch(uow, runtime.settings) is not None
    with runtime.read_session() as session:
        row = session.get(Declaration, declaration)
        assert row is not None and row.confirmation_sent_on == dt.date(2026, 1, 19)
    text = pdf_text(stored_pdf(runtime, letter))
    assert "Date this letter was sent 19/01/2026" in text and "Date of this letter" not in text, text
    assert "within 30 days of the date we sent this letter, that is by 18/02/2026" in text, text
    assert "11/02/2026" not in text and "12/01/2026" not in text, text


def test_erasure_takes_the_address_out_of_a_failed_deliverys_error(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """The SMTP error of a failed send names the address ("could not send to ada@..."): erasure removes it there
    too, not only from `to_email`."""
    from giving.privacy import erase_supporter
    from receipts import tasks

    supporter = factories.supporter(runtime)
    gift = factories.gift(runtime, supporter)
    worker.stop()
    tasks.issue_for_gift(gift_id=str(gift))
    [delivery] = deliveries(runtime)
    mailbox.refuse = True
    with runtime.unit_of_work() as uow:
        assert service.send_delivery(uow, runtime.settings, delivery.id, attempt=13, final=True) == "failed"
    assert "ada@example.org" in deliveries(runtime)[0].last_error
    with runtime.unit_of_work() as uow:
        erase_supporter(uow, runtime.settings, supporter)
    [erased] = deliveries(runtime)
    assert erased.to_email is None and "ada@example.org" not in erased.last_error, erased.last_error
    assert "[erased]" in erased.last_error
