"""Layout 4 (fixed column widths) applies to content issued as layout 4 only: a document issued before renders with
the automatic widths it was printed with, and the words are the same either way."""

from __future__ import annotations

import datetime as dt

from core.settings import CharitySettings
from receipts import documents as docs
from receipts import render
from tests.receipts.pdf import pdf_text

CHARITY = docs.charity_from(CharitySettings(name="Calais Refugee Aid", registration_number="1234567"))
DONOR = docs.Donor(
    title="Mr", first_name="Alan", last_name="Turing", address_lines=["1 Bletchley Road"], postcode="MK3 6EB"
)


def statement(layout: int) -> docs.AnnualStatement:
    gifts = [
        docs.StatementGift(
            received_on=dt.date(2025, 4 + month, 6),
            amount=1000,
            method="Direct Debit",
            appeal="General fund",
            gift_aided=True,
        )
        for month in range(9)
    ]
    return docs.AnnualStatement(
        layout=layout,
        reference="AS-000001",
        issued_on=dt.date(2026, 4, 10),
        charity=CHARITY,
        donor=DONOR,
        tax_year="2025-26",
        period_start=dt.date(2025, 4, 6),
        period_end=dt.date(2026, 4, 5),
        declarations=[],
        gifts=gifts,
        refunds=[],
        total_donated=9000,
        total_gift_aided=9000,
        gift_aid=2250,
        grossed_up=11250,
    )


def test_layout_4_on_marks_the_body_for_fixed_tables() -> None:
    assert docs.LAYOUT_VERSION >= 4
    assert 'class="annual_statement layout-4 fixed-tables"' in render.render_html(statement(4))
    assert 'class="annual_statement layout-5 fixed-tables"' in render.render_html(statement(5))
    assert 'class="annual_statement layout-3"' in render.render_html(statement(3))


def test_earlier_content_keeps_its_automatic_widths_with_the_same_words() -> None:
    earlier, current = render.render_pdf(statement(3)), render.render_pdf(statement(4))
    # The fixed widths move the columns: the PDFs differ. If the rules reached layout 3 content, they would not.
    assert earlier != current
    assert pdf_text(earlier) == pdf_text(current)
    assert "06/04/2025 General fund Direct Debit £10.00 Yes" in pdf_text(current)
