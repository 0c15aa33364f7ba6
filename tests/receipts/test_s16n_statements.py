"""Annual statements: a yearly record merged along a chain of merges still reaches a statement; a refund with no
provider time is dated as its correction is; and the note on the Returned column says what happened (a refund
after the year's end, or money taken back by the bank), truthfully."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlmodel import col

from core.runtime import InlineWorker, Runtime
from core.settings import CharitySettings
from crm.models import StatementPreference, Supporter
from giving.commands.receipts import number_statements
from payments.models import Gift, GiftStatus, Refund
from receipts import documents as docs
from receipts import render, service
from receipts.models import DocumentKind
from tests.fixtures.smtp import Mailbox
from tests.receipts import factories
from tests.receipts.helpers import documents, run_job, stored_pdf
from tests.receipts.pdf import pdf_text

ANNUAL = StatementPreference.ANNUAL


def _statement(runtime: Runtime, worker: InlineWorker, supporter: object) -> tuple[docs.AnnualStatement, str]:
    run_job(runtime, worker, "receipts.issue_annual_statement", supporter_id=supporter, tax_year="2025-26")
    [statement] = documents(runtime, DocumentKind.ANNUAL_STATEMENT)
    content = docs.load(statement.content)
    assert isinstance(content, docs.AnnualStatement)
    return content, " ".join(pdf_text(stored_pdf(runtime, statement)).split())


def test_a_yearly_record_merged_along_a_chain_owes_the_last_survivor_its_statement(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """A (yearly) was merged into B, then B into C, and A still points at B (`giving.merge` now points earlier merges
    at the survivor, but rows merged otherwise keep the chain, which every resolver here follows). A's gift, now
    C's, had no receipt: C, the record that survives, is owed the statement."""
    a = factories.supporter(runtime, email="a@example.org", preference=ANNUAL)
    b = factories.supporter(runtime, email="b@example.org")
    c = factories.supporter(runtime, email="c@example.org")
    gift = factories.gift(runtime, a, amount=5000, received_on=dt.date(2025, 6, 1))
    run_job(runtime, worker, "receipts.issue_for_gift", gift_id=gift)
    assert documents(runtime) == []  # on yearly statements: no receipt
    with runtime.unit_of_work() as uow:
        uow.session.execute(sa.update(Gift).where(col(Gift.id) == gift).values(supporter_id=c))
        uow.session.execute(sa.update(Supporter).where(col(Supporter.id) == a).values(merged_into_id=b))
        uow.session.execute(sa.update(Supporter).where(col(Supporter.id) == b).values(merged_into_id=c))

    with runtime.read_session() as session:
        assert service.statement_candidates(session, "2025-26", everyone=False) == [c]
    assert number_statements(runtime, "2025-26", everyone=False) == 1
    worker.join()
    [statement] = documents(runtime, DocumentKind.ANNUAL_STATEMENT)
    assert statement.supporter_id == c
    assert "01/06/2025" in pdf_text(stored_pdf(runtime, statement))


def test_a_refund_with_no_provider_time_is_on_the_statement_dated_as_its_correction(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    ada = factories.supporter(runtime)
    gift = factories.gift(runtime, ada, amount=5000, received_on=dt.date(2025, 6, 1))
    run_job(runtime, worker, "receipts.issue_for_gift", gift_id=gift)
    refund = factories.refund(runtime, supporter_id=ada, gift_id=gift, amount=2000, reason="duplicate")
    recorded = factories.at_uk(dt.date(2025, 9, 3))
    with runtime.unit_of_work() as uow:
        uow.session.execute(
            sa.update(Refund).where(col(Refund.id) == refund).values(refunded_at=None, created_at=recorded)
        )
    run_job(runtime, worker, "receipts.issue_correction", refund_id=refund)
    [correction] = documents(runtime, DocumentKind.CORRECTION)
    correction_content = docs.load(correction.content)
    assert isinstance(correction_content, docs.Correction)
    assert correction_content.refunded_on == dt.date(2025, 9, 3)

    with runtime.unit_of_work() as uow:
        service.allocate_annual_statement(uow, runtime.settings, ada, "2025-26")
    worker.join()
    [statement] = documents(runtime, DocumentKind.ANNUAL_STATEMENT)
    content = docs.load(statement.content)
    assert isinstance(content, docs.AnnualStatement)
    assert [(r.refunded_on, r.amount, r.reason) for r in content.refunds] == [(dt.date(2025, 9, 3), 2000, "duplicate")]


def test_a_refund_after_the_years_end_is_explained_as_a_refund_not_a_chargeback(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    ada = factories.supporter(runtime, preference=ANNUAL)
    gift = factories.gift(runtime, ada, amount=5000, received_on=dt.date(2025, 6, 1))
    factories.gift(runtime, ada, amount=2000, received_on=dt.date(2025, 7, 1))
    factories.refund(runtime, supporter_id=ada, gift_id=gift, amount=1500, refunded_on=dt.date(2026, 5, 12))

    content, text = _statement(runtime, worker, ada)
    assert content.layout == docs.LAYOUT_VERSION and content.refunds == []
    assert "01/06/2025 Winter appeal Card £50.00 £15.00" in text
    assert "chargeback" not in text and "card dispute" not in text
    assert "Refunded after the tax year ended" in text
    assert "12/05/2026 01/06/2025 requested by the donor £15.00" in text
    assert "No refunds or corrections in this tax year" not in text


def test_money_taken_back_by_the_bank_beside_a_later_refund_gets_both_explanations(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    ada = factories.supporter(runtime, preference=ANNUAL)
    factories.gift(
        runtime, ada, amount=3000, received_on=dt.date(2025, 6, 1), status=GiftStatus.REVERSED, returned_amount=3000
    )
    refunded = factories.gift(runtime, ada, amount=2000, received_on=dt.date(2025, 7, 1))
    factories.refund(runtime, supporter_id=ada, gift_id=refunded, amount=2000, refunded_on=dt.date(2025, 8, 1))
    later = factories.gift(runtime, ada, amount=1000, received_on=dt.date(2025, 8, 1))
    factories.refund(runtime, supporter_id=ada, gift_id=later, amount=400, refunded_on=dt.date(2026, 4, 20))

    _, text = _statement(runtime, worker, ada)
    assert "01/08/2025 01/07/2025 requested by the donor £20.00" in text  # the year's refund, listed
    assert "chargeback or a card dispute" in text
    assert "20/04/2026 01/08/2025 requested by the donor £4.00" in text


def test_a_year_whose_returned_money_was_all_refunded_in_it_needs_no_note(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    ada = factories.supporter(runtime, preference=ANNUAL)
    gift = factories.gift(runtime, ada, amount=5000, received_on=dt.date(2025, 6, 1))
    factories.refund(runtime, supporter_id=ada, gift_id=gift, amount=5000, refunded_on=dt.date(2025, 6, 20))

    _, text = _statement(runtime, worker, ada)
    assert "20/06/2025 01/06/2025 requested by the donor £50.00" in text
    assert "chargeback" not in text and "after the tax year ended" not in text


def _stored_statement(layout: int, *, refunded: int) -> docs.AnnualStatement:
    charity = docs.charity_from(CharitySettings(name="Calais Refugee Aid", registration_number="1234567"))
    donor = docs.Donor(title="Ms", first_name="Ada", last_name="Lovelace", address_lines=["12 Acacia Avenue"])
    gift = docs.StatementGift(
        received_on=dt.date(2025, 6, 1),
        amount=5000,
        returned=1500,
        refunded=refunded,
        method="Card",
        appeal="Winter appeal",
        gift_aided=False,
    )
    return docs.AnnualStatement(
        layout=layout,
        reference="AS-000001",
        issued_on=dt.date(2026, 6, 1),
        charity=charity,
        donor=donor,
        tax_year="2025-26",
        period_start=dt.date(2025, 4, 6),
        period_end=dt.date(2026, 4, 5),
        declarations=[],
        gifts=[gift],
        refunds=[],
        total_donated=3500,
        total_gift_aided=0,
        gift_aid=0,
        grossed_up=0,
    )


def test_a_statement_stored_before_layout_5_prints_its_note_as_it_did() -> None:
    """Content issued as layout 4 has no `refunded`: its Returned column was all explained as taken back, and a
    stored statement renders the same words years later."""
    stored = docs.load(docs.dump(_stored_statement(4, refunded=0)))
    assert "chargeback or a card dispute" in " ".join(pdf_text(render.render_pdf(stored)).split())
    assert "chargeback" not in " ".join(pdf_text(render.render_pdf(_stored_statement(5, refunded=1500))).split())


def test_layout_5_keeps_the_fixed_column_widths_of_layout_4() -> None:
    """The same content as layout 4 and 5 (nothing a new field changes) renders the same PDF: the fixed widths
    apply to both."""
    four = _stored_statement(4, refunded=0).model_copy(update={"gifts": []})
    five = four.model_copy(update={"layout": 5})
    assert 'class="annual_statement layout-5 fixed-tables"' in render.render_html(five)
    assert render.render_pdf(four) == render.render_pdf(five)
