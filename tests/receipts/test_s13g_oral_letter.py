"""The written record of an oral Gift Aid declaration (giftaid.md §1C rule 13 and §6; issue 5): it describes the
gifts the declaration covers in words a letter can stand on, dated, and says that gifts made before the letter are
covered too. "This gift" names nothing in a letter about a telephone call, and "the past 4 years" is counted from a
day the letter must give."""

from __future__ import annotations

import datetime as dt

from core.runtime import InlineWorker, Runtime
from crm.models import DeclarationMethod, DeclarationScope
from receipts import documents as docs
from receipts import render
from receipts.models import DocumentKind
from tests.fixtures.smtp import Mailbox
from tests.receipts import factories
from tests.receipts.helpers import documents, run_job, stored_pdf
from tests.receipts.pdf import pdf_text


def _letter_text(runtime: Runtime, worker: InlineWorker, declaration: object) -> str:
    run_job(runtime, worker, "receipts.issue_oral_confirmation", declaration_id=declaration)
    [letter] = documents(runtime, DocumentKind.ORAL_CONFIRMATION)
    return pdf_text(stored_pdf(runtime, letter))


def test_a_letter_for_the_past_4_years_and_future_gives_the_day_it_reaches_back_to(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    supporter = factories.supporter(runtime)
    declaration = factories.declaration(
        runtime, supporter, made_on=dt.date(2025, 9, 1), method=DeclarationMethod.ORAL
    )  # start: 01/09/2021

    text = _letter_text(runtime, worker, declaration)
    covers = "all your gifts from 01/09/2021 onwards"
    assert f"to treat {covers} as Gift Aid donations, including the gifts you made before this letter." in text, text
    assert f"Declaration covers {covers} Date the declaration was made 01/09/2025" in text, text
    assert "this gift" not in text, text


def test_a_letter_for_future_gifts_counts_them_from_the_day_the_declaration_was_made(
    runtime: Runtime, worker: InlineWorker, mailbox: Mailbox
) -> None:
    supporter = factories.supporter(runtime)
    declaration = factories.declaration(
        runtime, supporter, made_on=dt.date(2025, 9, 1), method=DeclarationMethod.ORAL, scope=DeclarationScope.FUTURE
    )

    text = _letter_text(runtime, worker, declaration)
    assert "Declaration covers all your gifts from 01/09/2025 onwards Date" in text, text
    assert "including the gifts you made before this letter" in text, text
    assert "this gift" not in text, text


def test_a_letter_issued_before_the_dated_wording_renders_as_it_did() -> None:
    """Content of layout 2 has no `covers`: it prints the scope as it did then (a stored letter renders the same)."""
    charity = docs.Charity(
        name="Calais Refugee Aid",
        registration="1234567",
        address="1 Example St",
        postcode="CT16 1AA",
        email="a@b.example",
        phone="01",
    )
    letter = docs.OralConfirmation(
        layout=2,
        reference="DC-000001",
        issued_on=dt.date(2025, 9, 2),
        charity=charity,
        donor=docs.Donor(
            first_name="Ada", last_name="Lovelace", address_lines=["12 Acacia Avenue"], postcode="CT16 1AA"
        ),
        declaration_id="d",
        declaration=docs.DeclarationSummary(made_on=dt.date(2025, 9, 1), method="oral", scope="future"),
        cancel_by=dt.date(2025, 10, 2),
    )
    text = pdf_text(render.render_pdf(letter, logo=render.logo_markup()))
    assert "Declaration covers this gift and all future gifts" in text, text
