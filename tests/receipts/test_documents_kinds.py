"""Sale receipts, annual statements, oral declaration confirmations and corrections: what each one says."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from core.clock import uk_today
from core.runtime import InlineWorker, Runtime
from core.settings import Settings
from crm.models import Declaration, DeclarationMethod, DeclarationScope, StatementPreference, Supporter
from payments.models import GiftStatus
from receipts.models import DeliveryStatus, DocumentKind
from tests.fixtures.app import make_settings
from tests.fixtures.smtp import Mailbox
from tests.receipts import factories
from tests.receipts.helpers import deliveries, documents, history, run_job, stored_pdf
from tests.receipts.pdf import page_png, pdf_text


@pytest.fixture
def settings(database_url: str, tmp_path: Path, smtp_server: tuple[Mailbox, int]) -> Settings:
    """VAT at 20% (the shop charges it in these tests)."""
    return make_settings(
        database_url,
        tmp_path,
        email={"smtp_host": "127.0.0.1", "smtp_port": smtp_server[1]},
        shop={"vat_rate_bp": 2000},
    )


def test_mixed_basket_gets_a_sale_receipt_and_a_donation_receipt(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    supporter = factories.supporter(runtime)
    factories.declaration(runtime, supporter)
    order, gift = factories.order(
        runtime,
        supporter,
        lines=[("Solidarity T-shirt", "M", 2, 1500), ("Tote bag", "", 1, 800)],
        donation=500,
        vat_rate_bp=2000,
    )
    run_job(runtime, worker, "receipts.issue_for_order", order_id=order)

    [sale] = documents(runtime, DocumentKind.SALE_RECEIPT)
    [donation] = documents(runtime, DocumentKind.GIFT_RECEIPT)
    assert sale.reference == "SR-000001" and donation.reference == "GR-000001" and donation.gift_id == gift

    text = pdf_text(stored_pdf(runtime, sale))
    for expected in (
        "SALE RECEIPT",
        "SR-000001",
        "Solidarity T-shirt (M) 2 £15.00 £30.00",
        "Tote bag 1 £8.00 £8.00",
        "Goods total £38.00",
        "includes VAT at 20%: £6.33",
        "Your donation",
        "£5.00",
        "Total paid £43.00",
        "03/11/2025",
    ):
        assert expected in text, (expected, text)
    assert "Gift Aid" not in text and "taxpayer" not in text

    donation_text = pdf_text(stored_pdf(runtime, donation))
    assert "Donation given with your shop order" in donation_text
    assert "we will claim £1.25 Gift Aid" in donation_text
    assert sorted(str(m["Subject"]) for m in mailbox.messages) == [
        "Your receipt GR-000001 from Calais Refugee Aid",
        "Your sale receipt SR-000001 from Calais Refugee Aid",
    ]
    page_png(stored_pdf(runtime, sale), "sale_receipt")


def test_annual_statement_lists_the_tax_year(runtime: Runtime, worker: InlineWorker, mailbox: Mailbox) -> None:
    supporter = factories.supporter(runtime, preference=StatementPreference.ANNUAL)
    # Gift Aid declaration from 1 June 2025 (future gifts only): the May gift is not Gift Aided.
    factories.declaration(runtime, supporter, made_on=dt.date(2025, 6, 1), scope=DeclarationScope.FUTURE)
    factories.gift(runtime, supporter, amount=1000, received_on=dt.date(2025, 4, 5))  # 2024-25
    factories.gift(runtime, supporter, amount=1000, received_on=dt.date(2025, 4, 6))
    factories.gift(runtime, supporter, amount=5000, received_on=dt.date(2025, 5, 20))
    refunded = factories.gift(runtime, supporter, amount=2000, received_on=dt.date(2025, 9, 1))
    factories.gift(runtime, supporter, amount=123450, received_on=dt.date(2026, 4, 5))
    factories.gift(runtime, supporter, amount=700, received_on=dt.date(2026, 4, 6))  # 2026-27
    factories.gift(runtime, supporter, amount=900, received_on=dt.date(2025, 7, 7), status=GiftStatus.FAILED)
    factories.refund(
        runtime,
        supporter_id=supporter,
        gift_id=refunded,
        amount=500,
        refunded_on=dt.date(2025, 9, 10),
        reason="duplicate",
    )

    run_job(runtime, worker, "receipts.issue_annual_statement", supporter_id=supporter, tax_year="2025-26")

    [statement] = documents(runtime)
    assert statement.reference == "AS-000001" and statement.tax_year == "2025-26"
    pdf = stored_pdf(runtime, statement)
    text = pdf_text(pdf)
    # Gifts 6/4/25 £10 (no), 20/5/25 £50 (no), 1/9/25 £20 less £5 returned (yes), 5/4/26 £1,234.50 (yes).
    for expected in (
        "Tax year 2025-26: 06/04/2025 to 05/04/2026",
        "06/04/2025 Winter appeal Card £10.00 No",
        "20/05/2025 Winter appeal Card £50.00 No",
        "01/09/2025 Winter appeal Card £20.00 £5.00 Yes",
        "05/04/2026 Winter appeal Card £1,234.50 Yes",
        "Total donated £1,309.50",
        "Total Gift Aided £1,249.50",
        "Gift Aid claimed or to be claimed (25%) £312.38",
        "Grossed-up value of your Gift Aided gifts £1,561.88",
        "higher or additional rate",
        "Made on 01/06/2025 (online), covering this gift and all future gifts",
        "10/09/2025 01/09/2025 duplicate £5.00",
        "you must pay at least as much Income Tax",
    ):
        assert expected in text, (expected, text)
    assert "05/04/2025" not in text.replace("06/04/2025 to 05/04/2026", "")
    assert "06/04/2026" not in text and "£9.00" not in text
    [message] = mailbox.messages
    assert message["Subject"] == "Your 2025-26 statement of gifts from Calais Refugee Aid"
    page_png(pdf, "annual_statement")


def test_annual_statement_includes_records_merged_into_the_supporter(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    supporter = factories.supporter(runtime, preference=StatementPreference.ANNUAL)
    merged = factories.supporter(runtime, email="other@example.org")
    factories.gift(runtime, supporter, amount=1000, received_on=dt.date(2025, 6, 1))
    refunded = factories.gift(runtime, merged, amount=3000, received_on=dt.date(2025, 8, 1))
    factories.refund(
        runtime, supporter_id=merged, gift_id=refunded, amount=1000, refunded_on=dt.date(2025, 8, 2), reason="typo"
    )
    with runtime.unit_of_work() as uow:
        uow.session.execute(sa.update(Supporter).where(col(Supporter.id) == merged).values(merged_into_id=supporter))

    run_job(runtime, worker, "receipts.issue_annual_statement", supporter_id=supporter, tax_year="2025-26")
    run_job(runtime, worker, "receipts.issue_annual_statement", supporter_id=merged, tax_year="2025-26")

    [statement] = documents(runtime)
    assert statement.supporter_id == supporter
    text = pdf_text(stored_pdf(runtime, statement))
    for expected in ("01/06/2025", "01/08/2025", "Total donated £30.00", "02/08/2025 01/08/2025 typo £10.00"):
        assert expected in text, (expected, text)


def test_oral_declaration_confirmation_is_sent_and_recorded(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    supporter = factories.supporter(runtime)
    declaration = factories.declaration(
        runtime, supporter, made_on=uk_today() - dt.timedelta(days=2), method=DeclarationMethod.ORAL
    )
    run_job(runtime, worker, "receipts.issue_oral_confirmation", declaration_id=declaration)

    [letter] = documents(runtime)
    assert letter.reference == "DC-000001" and letter.declaration_id == declaration
    text = pdf_text(stored_pdf(runtime, letter))
    made = (uk_today() - dt.timedelta(days=2)).strftime("%d/%m/%Y")
    today = uk_today().strftime("%d/%m/%Y")
    cancel_by = (uk_today() + dt.timedelta(days=30)).strftime("%d/%m/%Y")
    for expected in (
        "Confirmation of your Gift Aid declaration",
        f"On {made} you told us",
        "Name Ms Ada Lovelace",
        "Home address 12 Acacia Avenue, Dover",
        "Postcode CT16 1AA",
        f"Date the declaration was made {made}",
        f"Date this letter was sent {today}",
        "25p for every £1 you give",
        "You must pay at least as much Income Tax and/or Capital Gains Tax",
        f"within 30 days of the date we sent this letter, that is by {cancel_by}",
        "as if you had never made it",
    ):
        assert expected in text, (expected, text)
    assert len(mailbox.to("ada@example.org")) == 1
    with runtime.read_session() as session:
        row = session.get(Declaration, declaration)
        assert row is not None and row.confirmation_sent_on == uk_today()
    # A second run (or a staff click) sends nothing more.
    run_job(runtime, worker, "receipts.issue_oral_confirmation", declaration_id=declaration)
    assert len(mailbox.messages) == 1


def test_refund_after_a_sent_receipt_issues_a_correction(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    supporter = factories.supporter(runtime)
    factories.declaration(runtime, supporter)
    gift = factories.gift(runtime, supporter, amount=10000, received_on=dt.date(2025, 10, 5))
    run_job(runtime, worker, "receipts.issue_for_gift", gift_id=gift)
    refund = factories.refund(
        runtime,
        supporter_id=supporter,
        gift_id=gift,
        amount=4000,
        refunded_on=dt.date(2025, 10, 20),
        reason="gave too much",
    )
    run_job(runtime, worker, "receipts.issue_correction", refund_id=refund)
    run_job(runtime, worker, "receipts.issue_correction", refund_id=refund)

    [original] = documents(runtime, DocumentKind.GIFT_RECEIPT)
    [correction] = documents(runtime, DocumentKind.CORRECTION)
    assert correction.reference == "CR-000001" and correction.corrects_id == original.id
    text = pdf_text(stored_pdf(runtime, correction))
    for expected in (
        "Corrected receipt",
        f"CORRECTION: this replaces receipt GR-000001 issued on {original.issued_on:%d/%m/%Y}",
        "Original amount £100.00",
        "Refunded on 20/10/2025 £40.00",
        "Corrected amount £60.00",
        "gave too much",
        "we will now claim £15.00 Gift Aid on the corrected amount",
    ):
        assert expected in text, (expected, text)
    # The original is untouched: same bytes as when it was sent.
    [first_mail, second_mail] = mailbox.messages
    assert next(iter(first_mail.iter_attachments())).get_content() == stored_pdf(runtime, original)
    assert second_mail["Subject"] == "Corrected receipt CR-000001 from Calais Refugee Aid"
    page_png(stored_pdf(runtime, correction), "correction")


def test_refund_recorded_before_the_receipts_shows_on_the_gift_receipt_and_corrects_the_sale(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """A basket refunded in full before its receipts were made: the gift receipt shows the money returned (so it
    needs no correction); the sale receipt, which lists the goods as sold, gets its correction."""
    supporter = factories.supporter(runtime)
    order, gift = factories.order(runtime, supporter, lines=[("Solidarity T-shirt", "L", 1, 1500)], donation=1000)
    assert gift is not None
    factories.refund(
        runtime, supporter_id=supporter, order_id=order, gift_id=gift, amount=2500, gift_amount=1000, order_amount=1500
    )
    # The correction job ran first and found nothing to correct.
    run_job(runtime, worker, "receipts.issue_for_order", order_id=order)
    kinds = sorted((d.kind, d.reference) for d in documents(runtime))
    assert kinds == [
        (DocumentKind.CORRECTION, "CR-000001"),
        (DocumentKind.GIFT_RECEIPT, "GR-000001"),
        (DocumentKind.SALE_RECEIPT, "SR-000001"),
    ]
    [sale_fix] = [pdf_text(stored_pdf(runtime, d)) for d in documents(runtime, DocumentKind.CORRECTION)]
    assert "sale receipt SR-000001" in sale_fix and "Corrected amount £0.00" in sale_fix and "Gift Aid" not in sale_fix
    [receipt] = documents(runtime, DocumentKind.GIFT_RECEIPT)
    receipt_text = pdf_text(stored_pdf(runtime, receipt))
    assert "Amount £10.00 Returned to you since £10.00 Your gift now £0.00" in receipt_text, receipt_text
    assert len(mailbox.messages) == 3


def test_a_receipt_made_after_a_partial_refund_shows_it_and_claims_gift_aid_on_the_rest(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """The receipt is right when it is made: it shows the money already returned and the Gift Aid on what was kept,
    and that refund gets no correction; a later refund does."""
    supporter = factories.supporter(runtime)
    factories.declaration(runtime, supporter)
    gift = factories.gift(runtime, supporter, amount=10000, received_on=dt.date(2025, 10, 5))
    factories.refund(runtime, supporter_id=supporter, gift_id=gift, amount=4000, refunded_on=dt.date(2025, 10, 6))
    run_job(runtime, worker, "receipts.issue_for_gift", gift_id=gift)

    [receipt] = documents(runtime, DocumentKind.GIFT_RECEIPT)
    receipt_text = pdf_text(stored_pdf(runtime, receipt))
    assert "Amount £100.00 Returned to you since £40.00 Your gift now £60.00" in receipt_text, receipt_text
    assert "we will claim £15.00 Gift Aid on this gift" in receipt_text, receipt_text
    assert documents(runtime, DocumentKind.CORRECTION) == []

    later = factories.refund(
        runtime, supporter_id=supporter, gift_id=gift, amount=1000, refunded_on=dt.date(2025, 10, 20)
    )
    run_job(runtime, worker, "receipts.issue_correction", refund_id=later)
    [correction] = documents(runtime, DocumentKind.CORRECTION)
    correction_text = pdf_text(stored_pdf(runtime, correction))
    assert "Returned in all £50.00" in correction_text and "Corrected amount £50.00" in correction_text
    assert "we will now claim £12.50 Gift Aid on the corrected amount" in correction_text


def test_supporter_without_email_goes_into_the_postal_batch(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    from receipts import service

    posted = factories.supporter(runtime, email=None, first_name="Grace", last_name="Hopper")
    oral = factories.declaration(runtime, posted, made_on=uk_today(), method=DeclarationMethod.ORAL)
    gift = factories.gift(runtime, posted, donor_details=factories.donor("Grace", "Hopper", None))
    run_job(runtime, worker, "receipts.issue_for_gift", gift_id=gift)
    run_job(runtime, worker, "receipts.issue_oral_confirmation", declaration_id=oral)
    assert mailbox.messages == []
    assert [d.status for d in deliveries(runtime)] == [DeliveryStatus.PENDING, DeliveryStatus.PENDING]

    with runtime.unit_of_work() as uow:
        batch = service.build_postal_batch(uow, runtime.settings)
        assert batch is not None
        path = Path(service.postal_batch_path(runtime.settings, batch))
    text = pdf_text(path.read_bytes())
    assert "GR-000001" in text and "DC-000001" in text and "Grace Hopper" in text
    assert [d.status for d in deliveries(runtime)] == [DeliveryStatus.POSTED, DeliveryStatus.POSTED]
    assert {h.summary for h in history(runtime, posted)} == {
        "Receipt GR-000001 printed for the post",
        "Gift Aid declaration confirmation DC-000001 printed for the post",
    }
    with runtime.read_session() as session:
        assert session.exec(select(Declaration.confirmation_sent_on)).one() == uk_today()
    with runtime.unit_of_work() as uow:
        assert service.build_postal_batch(uow, runtime.settings) is None
