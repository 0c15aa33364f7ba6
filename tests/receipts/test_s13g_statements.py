"""Annual statements against issue 5 and giftaid.md §6: every gift of a supporter on yearly statements reaches a
statement (also after a merge into a record that is not), and a statement that stands instead of receipts invites a
Gift Aid declaration when one could be made, as those receipts would have."""

from __future__ import annotations

import datetime as dt

from core.runtime import InlineWorker, Runtime
from crm.models import DeclarationScope, StatementPreference
from giving.commands.receipts import number_statements
from payments.models import Gift, GiftStatus
from receipts import service
from receipts.models import DocumentKind
from tests.fixtures.smtp import Mailbox
from tests.receipts import factories
from tests.receipts.helpers import documents, run_job, stored_pdf
from tests.receipts.pdf import pdf_text

ANNUAL = StatementPreference.ANNUAL


def _merge(runtime: Runtime, old: object, survivor: object) -> None:
    from giving.merge import merge_supporters

    with runtime.unit_of_work() as uow:
        merge_supporters(uow, old, survivor, by="test")  # type: ignore[arg-type]


def test_gifts_of_a_yearly_record_merged_into_a_per_gift_one_reach_a_statement(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """The old record chose a yearly statement, so its gift had no receipt. Merged into a record that gets one per
    gift, the gift moves to the survivor: the annual run must still give it a statement, or the gift is never
    receipted at all."""
    old = factories.supporter(runtime, email="old@example.org", preference=ANNUAL)
    survivor = factories.supporter(runtime, email="ada@example.org")
    yearly_gift = factories.gift(runtime, old, amount=5000, received_on=dt.date(2025, 6, 1))
    run_job(runtime, worker, "receipts.issue_for_gift", gift_id=yearly_gift)
    assert documents(runtime) == []  # on yearly statements: no receipt
    _merge(runtime, old, survivor)

    with runtime.read_session() as session:
        assert service.statement_candidates(session, "2025-26", everyone=False) == [survivor]
    assert number_statements(runtime, "2025-26", everyone=False) == 1
    worker.join()
    [statement] = documents(runtime, DocumentKind.ANNUAL_STATEMENT)
    assert statement.supporter_id == survivor
    assert "01/06/2025" in pdf_text(stored_pdf(runtime, statement))


def test_the_survivor_of_a_yearly_record_gets_no_statement_for_a_year_its_gifts_were_all_receipted(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """The per-gift survivor's own gift of 2024-25 had its receipt, and the yearly record gave nothing that year:
    no statement is owed for it."""
    old = factories.supporter(runtime, email="old@example.org", preference=ANNUAL)
    survivor = factories.supporter(runtime, email="ada@example.org")
    factories.gift(runtime, old, amount=5000, received_on=dt.date(2025, 6, 1))
    receipted = factories.gift(runtime, survivor, amount=3000, received_on=dt.date(2024, 6, 1))
    run_job(runtime, worker, "receipts.issue_for_gift", gift_id=receipted)
    _merge(runtime, old, survivor)

    with runtime.read_session() as session:
        assert service.statement_candidates(session, "2024-25", everyone=False) == []
        assert service.statement_candidates(session, "2025-26", everyone=False) == [survivor]


def test_a_yearly_record_that_had_its_statement_before_the_merge_adds_none(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """Its gifts were on its own statement already: the per-gift survivor needs none for that year."""
    old = factories.supporter(runtime, email="old@example.org", preference=ANNUAL)
    survivor = factories.supporter(runtime, email="ada@example.org")
    factories.gift(runtime, old, amount=5000, received_on=dt.date(2025, 6, 1))
    run_job(runtime, worker, "receipts.issue_annual_statement", supporter_id=old, tax_year="2025-26")
    _merge(runtime, old, survivor)

    with runtime.read_session() as session:
        assert service.statement_candidates(session, "2025-26", everyone=False) == []


def _statement_text(runtime: Runtime, worker: InlineWorker, supporter: object) -> str:
    run_job(runtime, worker, "receipts.issue_annual_statement", supporter_id=supporter, tax_year="2025-26")
    [statement] = documents(runtime, DocumentKind.ANNUAL_STATEMENT)
    return pdf_text(stored_pdf(runtime, statement))


def test_a_statement_instead_of_receipts_invites_a_declaration_for_the_gifts_none_covers(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """A supporter on yearly statements gets no receipts, so no receipt's invitation either: the statement carries
    it, with what a declaration (which may reach back four years) could bring on the year's gifts no declaration
    covers. Here one made on 1 August covers later gifts only: the June gifts could still be Gift Aided."""
    supporter = factories.supporter(runtime, preference=ANNUAL)
    factories.declaration(runtime, supporter, made_on=dt.date(2025, 8, 1), scope=DeclarationScope.FUTURE)
    factories.gift(runtime, supporter, amount=1000, received_on=dt.date(2025, 6, 1))
    factories.gift(runtime, supporter, amount=2050, received_on=dt.date(2025, 6, 2))
    factories.gift(runtime, supporter, amount=4000, received_on=dt.date(2025, 9, 1))
    euros = factories.gift(runtime, supporter, amount=9000, received_on=dt.date(2025, 9, 2))
    with runtime.unit_of_work() as uow:
        row = uow.session.get(Gift, euros)
        assert row is not None
        row.currency = "EUR"  # never Gift Aid: no part of the invitation
        uow.session.add(row)

    text = _statement_text(runtime, worker, supporter)
    assert "Total Gift Aided £40.00" in text, text
    # £10.00 and £20.50 not covered: £2.50 + £5.13 (each gift's Gift Aid, as a claim would add them).
    assert "Are you a UK taxpayer?" in text, text
    assert "we could claim £7.63 more on your gifts of this tax year" in text, text


def test_a_statement_whose_gifts_are_all_gift_aided_invites_nothing(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    supporter = factories.supporter(runtime, preference=ANNUAL)
    factories.declaration(runtime, supporter)
    factories.gift(runtime, supporter, amount=1000, received_on=dt.date(2025, 6, 1))

    text = _statement_text(runtime, worker, supporter)
    assert "Total Gift Aided £10.00" in text and "Are you a UK taxpayer?" not in text, text


def test_money_a_bank_took_back_is_explained_not_contradicted_by_the_refunds_section(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """A chargeback is no refund: the gift shows "Returned £50.00", and the refunds section must not say, bare,
    that nothing was returned or corrected in the year."""
    ada = factories.supporter(runtime, preference=ANNUAL)
    factories.gift(
        runtime, ada, amount=5000, received_on=dt.date(2025, 6, 1), status=GiftStatus.REVERSED, returned_amount=5000
    )
    factories.gift(runtime, ada, amount=2000, received_on=dt.date(2025, 7, 1))
    run_job(runtime, worker, "receipts.issue_annual_statement", supporter_id=ada, tax_year="2025-26")
    [statement] = documents(runtime, DocumentKind.ANNUAL_STATEMENT)
    text = " ".join(pdf_text(stored_pdf(runtime, statement)).split())
    assert "No refunds or corrections in this tax year" not in text
    assert "No refunds in this tax year" in text
    assert "chargeback or a card dispute" in text


def test_a_year_with_nothing_returned_says_so_plainly(runtime: Runtime, worker: InlineWorker, mailbox: Mailbox) -> None:
    ada = factories.supporter(runtime, preference=ANNUAL)
    factories.gift(runtime, ada, amount=2000, received_on=dt.date(2025, 7, 1))
    run_job(runtime, worker, "receipts.issue_annual_statement", supporter_id=ada, tax_year="2025-26")
    [statement] = documents(runtime, DocumentKind.ANNUAL_STATEMENT)
    text = " ".join(pdf_text(stored_pdf(runtime, statement)).split())
    assert "No refunds or corrections in this tax year" in text
    assert "chargeback" not in text
