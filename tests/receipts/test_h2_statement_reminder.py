"""The annual statement's closing words (giftaid.md §6): a donor whose declaration is still in force is told how to
cancel it and reminded of the tax they must pay, even in a year when nothing was Gift Aided (every gift refunded),
since the charity will claim on their next gifts under it. The PDF is read back."""

from __future__ import annotations

import datetime as dt
import uuid

from core.runtime import InlineWorker, Runtime
from crm.models import StatementPreference
from receipts.models import DocumentKind
from tests.fixtures.smtp import Mailbox
from tests.receipts import factories
from tests.receipts.helpers import documents, run_job, stored_pdf
from tests.receipts.pdf import pdf_text

TAX_REMINDER = "you must pay at least as much Income Tax and/or Capital Gains Tax"
HOW_TO_CANCEL = "To cancel or change your declaration"
NAME_OR_ADDRESS_ONLY = "Please tell us about any change of name or home address"


def _refunded_gift(runtime: Runtime, supporter: uuid.UUID) -> None:
    """A gift of the 2025-26 year, all of it refunded: nothing Gift Aided in the year."""
    gift = factories.gift(runtime, supporter, amount=2500, received_on=dt.date(2025, 10, 5))
    factories.refund(runtime, supporter_id=supporter, gift_id=gift, amount=2500, refunded_on=dt.date(2025, 10, 20))


def _statement_text(runtime: Runtime, worker: InlineWorker, supporter: uuid.UUID) -> str:
    run_job(runtime, worker, "receipts.issue_annual_statement", supporter_id=supporter, tax_year="2025-26")
    [statement] = documents(runtime, DocumentKind.ANNUAL_STATEMENT)
    return pdf_text(stored_pdf(runtime, statement))


def test_a_declaration_in_force_with_nothing_gift_aided_still_gets_the_reminder_and_how_to_cancel(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """It only asked the donor to report a change of name or address: no word of how to cancel the declaration the
    statement lists as in force, nor of the tax they must pay for the charity to claim on their next gifts."""
    supporter = factories.supporter(runtime, preference=StatementPreference.ANNUAL)
    factories.declaration(runtime, supporter, made_on=dt.date(2025, 4, 1))
    _refunded_gift(runtime, supporter)

    text = _statement_text(runtime, worker, supporter)
    assert "Total Gift Aided £0.00" in text, text
    assert "Made on 01/04/2025" in text, text
    assert HOW_TO_CANCEL in text, text
    assert TAX_REMINDER in text, text
    assert "tax status" in text, text


def test_a_cancelled_declaration_with_nothing_gift_aided_gets_no_reminder(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """Cancelled within the year and nothing Gift Aided: nothing is left to cancel or to pay tax for."""
    supporter = factories.supporter(runtime, preference=StatementPreference.ANNUAL)
    factories.declaration(
        runtime, supporter, made_on=dt.date(2025, 4, 1), cancellation_effective_on=dt.date(2026, 1, 1)
    )
    _refunded_gift(runtime, supporter)

    text = _statement_text(runtime, worker, supporter)
    assert "cancelled from 01/01/2026" in text, text
    assert TAX_REMINDER not in text and HOW_TO_CANCEL not in text, text
    assert NAME_OR_ADDRESS_ONLY in text, text


def test_no_declaration_gets_no_reminder(runtime: Runtime, worker: InlineWorker, mailbox: Mailbox) -> None:
    supporter = factories.supporter(runtime, preference=StatementPreference.ANNUAL)
    factories.gift(runtime, supporter, amount=2500, received_on=dt.date(2025, 10, 5))

    text = _statement_text(runtime, worker, supporter)
    assert "We hold no Gift Aid declaration for you in this tax year" in text, text
    assert TAX_REMINDER not in text and HOW_TO_CANCEL not in text, text
    assert NAME_OR_ADDRESS_ONLY in text, text
