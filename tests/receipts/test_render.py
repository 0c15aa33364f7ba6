"""Rendering without a database: same content, same bytes; the DUPLICATE mark; VAT only when charged; the logo;
tax years; the start-up check for libharfbuzz-subset."""

from __future__ import annotations

import base64
import ctypes
import datetime as dt
from pathlib import Path

import pytest

from core.settings import CharitySettings
from receipts import documents as docs
from receipts import render
from tests.receipts.pdf import page_count, pdf_text

CHARITY = docs.charity_from(CharitySettings(name="Calais Refugee Aid", registration_number="1234567"))
DONOR = docs.Donor(
    title="Mr", first_name="Alan", last_name="Turing", address_lines=["1 Bletchley Road"], postcode="MK3 6EB"
)


def receipt(**changes: object) -> docs.GiftReceipt:
    values: dict[str, object] = {
        "reference": "GR-000042",
        "issued_on": dt.date(2025, 10, 6),
        "charity": CHARITY,
        "donor": DONOR,
        "gift_id": "7d1f4b6e-0000-4000-8000-000000000001",
        "amount": 5000,
        "received_on": dt.date(2025, 10, 5),
        "method": "Card",
        "appeal": "General fund",
        "description": "One-off gift",
        "gift_aid": docs.GiftAidNote(status="invite"),
    }
    values.update(changes)
    return docs.GiftReceipt(**values)  # type: ignore[arg-type]


def test_same_content_renders_to_the_same_bytes_and_survives_json() -> None:
    first = render.render_pdf(receipt())
    again = render.render_pdf(docs.load(docs.dump(receipt())))
    assert first == again
    assert render.render_pdf(receipt(amount=5001)) != first


def test_duplicate_copy_is_marked() -> None:
    text = pdf_text(render.render_pdf(receipt(), duplicate=render.DuplicateMark(copied_on=dt.date(2026, 1, 2))))
    assert "DUPLICATE" in text and "made on 02/01/2026" in text and "issued on 06/10/2025" in text


def test_sale_receipt_without_vat_says_nothing_about_vat() -> None:
    sale = docs.SaleReceipt(
        reference="SR-000007",
        issued_on=dt.date(2025, 11, 3),
        charity=CHARITY,
        donor=DONOR,
        order_id="o",
        paid_on=dt.date(2025, 11, 3),
        method="Card",
        lines=[docs.SaleLine(description="Solidarity T-shirt (S)", quantity=1, unit_price=1500, total=1500)],
        goods_total=1500,
        total_paid=1500,
    )
    text = pdf_text(render.render_pdf(sale))
    assert "Total paid £15.00" in text and "VAT" not in text and "donation" not in text.lower()


def test_long_statement_runs_over_pages_with_page_numbers() -> None:
    gifts = [
        docs.StatementGift(
            received_on=dt.date(2025, 4, 6) + dt.timedelta(days=i),
            amount=1000,
            method="Card",
            appeal="General fund",
            gift_aided=True,
        )
        for i in range(90)
    ]
    statement = docs.AnnualStatement(
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
        total_donated=90_000,
        total_gift_aided=90_000,
        gift_aid=22_500,
        grossed_up=112_500,
    )
    pdf = render.render_pdf(statement)
    pages = page_count(pdf)
    assert pages >= 2
    assert f"Page {pages} of {pages}" in pdf_text(pdf) and "£1,125.00" in pdf_text(pdf)


def test_logo_from_settings(tmp_path: Path) -> None:
    png = tmp_path / "logo.png"
    # A 1x1 PNG.
    png.write_bytes(
        base64.b64decode(
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
        )
    )
    markup = render.logo_markup(str(png))
    assert markup.startswith('<img src="data:image/png;base64,')
    assert render.render_pdf(receipt(), logo=markup)[:5] == b"%PDF-"
    assert "<svg" in render.logo_markup("")


def test_tax_years() -> None:
    assert docs.parse_tax_year("2025-26") == (dt.date(2025, 4, 6), dt.date(2026, 4, 5))
    assert docs.parse_tax_year("1999-00") == (dt.date(1999, 4, 6), dt.date(2000, 4, 5))
    assert docs.tax_year_of(dt.date(2026, 4, 5)) == "2025-26" and docs.tax_year_of(dt.date(2026, 4, 6)) == "2026-27"
    for bad in ("2025-27", "2025", "25-26", "2025/26"):
        with pytest.raises(docs.TaxYearError):
            docs.parse_tax_year(bad)


def test_startup_warns_only_without_harfbuzz_subset(monkeypatch: pytest.MonkeyPatch) -> None:
    # This machine has it (the CI image installs libharfbuzz-subset0).
    assert render.harfbuzz_subset_available()
    assert render.startup_warnings() == []

    def missing(name: str, *args: object, **kwargs: object) -> object:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    [warning] = render.startup_warnings()
    assert "libharfbuzz-subset0" in warning and "slower" in warning


def test_another_process_renders_the_same_bytes() -> None:
    import hashlib
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    code = (
        "import hashlib; from tests.receipts.test_render import receipt; from receipts import render; "
        "print(hashlib.sha256(render.render_pdf(receipt())).hexdigest())"
    )
    other = subprocess.run([sys.executable, "-c", code], cwd=root, check=True, capture_output=True, text=True)
    assert other.stdout.strip() == hashlib.sha256(render.render_pdf(receipt())).hexdigest()


def test_threads_of_one_process_render_one_document_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Renders on several threads would contend (about twice the CPU each): they queue, and each is still right."""
    import threading
    import time

    import weasyprint

    running, most, lock = [0], [0], threading.Lock()
    write_pdf = weasyprint.HTML.write_pdf

    def observed(self: weasyprint.HTML, *args: object, **kwargs: object) -> bytes | None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.02)  # a window in which another thread's render would show
            return write_pdf(self, *args, **kwargs)  # type: ignore[arg-type]
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(weasyprint.HTML, "write_pdf", observed)
    amounts = [1000 + n for n in range(6)]
    results: dict[int, str] = {}

    def render_one(amount: int) -> None:
        results[amount] = pdf_text(render.render_pdf(receipt(amount=amount)))

    threads = [threading.Thread(target=render_one, args=(amount,)) for amount in amounts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert most[0] == 1
    assert all(f"£{amount // 100}.{amount % 100:02d}" in results[amount] for amount in amounts)
