"""Payout CSV imports and matching as a finance officer meets them: files saved from a spreadsheet, duplicated rows,
amounts with a sign before the pound, lines that must not be taken for a gift (found in review)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import col, select

from core.runtime import Runtime
from core.settings import Settings
from payments.imports import InvalidImport, import_gocardless_export, import_stripe_report
from payments.models import Payout, PayoutLine
from tests.fakes.provider_server import FakeProvider
from tests.payments import factories_money as make
from tests.payments.payout_fakes import money_settings, run_giving

HEADER = (
    "balance_transaction_id,currency,gross,fee,net,reporting_category,source_id,description,automatic_payout_id,"
    "charge_id,payment_intent_id,refund_id,dispute_id\n"
)


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return money_settings(database_url, tmp_path, fake_stripe, fake_gocardless)


def payout_lines(runtime: Runtime, provider_payout_id: str) -> tuple[Payout, list[PayoutLine]]:
    with runtime.read_session() as session:
        payout = session.exec(select(Payout).where(Payout.provider_payout_id == provider_payout_id)).one()
        lines = list(
            session.exec(select(PayoutLine).where(PayoutLine.payout_id == payout.id).order_by(col(PayoutLine.position)))
        )
        session.expunge_all()
        return payout, lines


def no_payouts(runtime: Runtime) -> bool:
    with runtime.read_session() as session:
        return session.exec(select(Payout)).all() == []


def test_an_amount_with_an_unquoted_thousands_comma_is_a_clear_error_naming_the_row(
    runtime: Runtime, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A row with more fields than the header (here `1,234.50` written without quotes) used to crash the command
    with a traceback ('list' object has no attribute 'strip')."""
    report = tmp_path / "report.csv"
    report.write_text(
        HEADER
        + "txn_1,gbp,35.00,0.73,34.27,charge,ch_1,gift,po_1,ch_1,pi_1,,\n"
        + "txn_2,gbp,1,234.50,0.00,1,234.50,charge,ch_2,gift,po_1,ch_2,pi_2,,\n"
    )

    result = run_giving(["payouts", "import-stripe", str(report)], settings, monkeypatch, tmp_path)

    assert result.exit_code == 1
    assert "row 3" in result.stderr and "more fields than the header" in result.stderr
    assert no_payouts(runtime)


def test_amounts_with_a_sign_before_the_pound_and_thousands_are_read(runtime: Runtime) -> None:
    """`-£5.00` (a spreadsheet's currency format) was refused as 'not an amount'; `£1,234.50` was read."""
    text = (
        HEADER
        + 'txn_1,gbp,"£1,234.50",£0.00,"£1,234.50",charge,ch_1,gift,po_1,ch_1,pi_1,,\n'
        + "txn_2,gbp,-£5.00,£0.00,-£5.00,refund,re_1,refund,po_1,ch_1,,re_1,\n"
    )
    with runtime.unit_of_work() as uow:
        (result,) = import_stripe_report(uow, text)
    assert result.lines_added == 2
    _, lines = payout_lines(runtime, "po_1")
    assert [line.amount for line in lines] == [123450, -500]


def test_an_empty_amount_is_refused_not_read_as_nothing(runtime: Runtime) -> None:
    """A row cut short (gross and net empty) was stored as a line of £0.00 and the payout could still reconcile."""
    text = (
        HEADER
        + "txn_1,gbp,35.00,0.73,34.27,charge,ch_1,gift,po_1,ch_1,pi_1,,\n"
        + "txn_2,gbp,,,,charge,ch_2,gift,po_1,ch_2,pi_2,,\n"
    )
    with pytest.raises(InvalidImport, match="row 3: gross is empty"), runtime.unit_of_work() as uow:
        import_stripe_report(uow, text)
    assert no_payouts(runtime)


def test_a_spreadsheets_blank_rows_are_skipped_and_rows_are_counted_as_the_spreadsheet_shows_them(
    runtime: Runtime,
) -> None:
    """A file saved from a spreadsheet ends with rows of empty cells (`,,,,`): the whole import was refused
    ('automatic_payout_id is empty'). And a blank line made every later error name the wrong row."""
    good = HEADER + "txn_1,gbp,35.00,0.73,34.27,charge,ch_1,gift,po_1,ch_1,pi_1,,\n" + ",,,,,,,,,,,,\n,,,,,,,,,,,,\n"
    with runtime.unit_of_work() as uow:
        (result,) = import_stripe_report(uow, good)
    assert result.lines_added == 2

    bad = (
        HEADER
        + "txn_1,gbp,35.00,0.73,34.27,charge,ch_1,gift,po_2,ch_1,pi_1,,\n\n"
        + "txn_2,gbp,x,0,0,charge,ch_2,gift,po_2,ch_2,pi_2,,\n"
    )
    with pytest.raises(InvalidImport, match="row 4: gross 'x' is not an amount"), runtime.unit_of_work() as uow:
        import_stripe_report(uow, bad)


def test_a_repeated_row_of_a_stripe_report_is_one_line_and_the_payout_adds_up(runtime: Runtime) -> None:
    """The same balance transaction twice (two reports pasted together) was stored once, but the payout amount,
    taken from the lines, counted it twice: a false discrepancy of the repeated line."""
    donor = make.supporter(runtime)
    make.gift(runtime, donor, 3500, stripe_charge_id="ch_1")
    row = "txn_1,gbp,35.00,0.73,34.27,charge,ch_1,gift,po_1,ch_1,pi_1,,\n"
    with runtime.unit_of_work() as uow:
        (result,) = import_stripe_report(uow, HEADER + row + row)
    assert (result.lines_added, result.amount_from) == (2, "lines")
    assert (str(result.match.reconciliation), result.match.discrepancy) == ("reconciled", 0)
    payout, _ = payout_lines(runtime, "po_1")
    assert payout.amount == 3427

    changed = row.replace("35.00,0.73,34.27", "36.00,0.73,35.27")
    with (
        pytest.raises(InvalidImport, match="row 3: balance transaction txn_1 is also row 2"),
        runtime.unit_of_work() as uow,
    ):
        import_stripe_report(uow, HEADER.replace("po_1", "po_9") + row.replace("po_1", "po_9") + changed)


def test_a_payout_in_another_currency_is_refused_with_what_is_wrong(runtime: Runtime) -> None:
    """A currency we do not keep was reported as 'gross ... is not an amount'; a payout whose rows disagree on the
    currency, or whose currency differs from the payout recorded from the provider, was silently given the last
    row's currency."""
    usd = HEADER + "txn_1,usd,35.00,0.73,34.27,charge,ch_1,gift,po_1,ch_1,pi_1,,\n"
    with pytest.raises(InvalidImport, match="row 2: currency 'usd' is not one we keep"), runtime.unit_of_work() as uow:
        import_stripe_report(uow, usd)
    mixed = (
        HEADER
        + "txn_1,gbp,35.00,0.73,34.27,charge,ch_1,gift,po_1,ch_1,pi_1,,\n"
        + "txn_2,eur,10.00,0.00,10.00,charge,ch_2,gift,po_1,ch_2,pi_2,,\n"
    )
    with (
        pytest.raises(InvalidImport, match="row 3: currency EUR is not the payout's GBP"),
        runtime.unit_of_work() as uow,
    ):
        import_stripe_report(uow, mixed)
    assert no_payouts(runtime)

    with runtime.unit_of_work() as uow:
        import_stripe_report(uow, HEADER + "txn_1,gbp,35.00,0.73,34.27,charge,ch_1,gift,po_1,ch_1,pi_1,,\n")
    eur = HEADER + "txn_3,eur,10.00,0.00,10.00,charge,ch_3,gift,po_1,ch_3,pi_3,,\n"
    with (
        pytest.raises(InvalidImport, match="payout po_1 is recorded in GBP, the file says EUR"),
        runtime.unit_of_work() as uow,
    ):
        import_stripe_report(uow, eur)
    payout, lines = payout_lines(runtime, "po_1")
    assert (payout.currency, len(lines)) == ("GBP", 2)


def test_a_line_stripe_does_not_call_a_charge_is_never_taken_for_the_gift(runtime: Runtime) -> None:
    """A `charge_failure` (the money of a charge taken back) names the charge: it became a negative `gift` line
    matched to the gift, so the payout could look reconciled. Like any category we do not reconcile it is `other`,
    unmatched, for finance to look at."""
    donor = make.supporter(runtime)
    make.gift(runtime, donor, 3500, stripe_charge_id="ch_1")
    text = (
        HEADER
        + "txn_1,gbp,35.00,0.00,35.00,charge,ch_1,gift,po_1,ch_1,pi_1,,\n"
        + "txn_2,gbp,-35.00,0.00,-35.00,charge_failure,ch_1,failed,po_1,ch_1,pi_1,,\n"
    )
    with runtime.unit_of_work() as uow:
        (result,) = import_stripe_report(uow, text, payout_amounts={"po_1": 0})
    _, lines = payout_lines(runtime, "po_1")
    assert [(line.kind, line.gift_id is not None, line.matched_at is not None) for line in lines] == [
        ("gift", True, True),
        ("other", False, False),
    ]
    assert (str(result.match.reconciliation), result.match.unmatched) == ("unreconciled", 1)


GC_HEADER = "payout_id,payout_amount,arrival_date,reference,type,amount,payment_id,refund_id\n"


def test_a_gocardless_payment_paid_out_twice_in_one_payout_is_matched_once(runtime: Runtime) -> None:
    """A repeated row of an export (or a payment listed twice) settled the same gift twice; with no payout amount
    in the file the payout even read reconciled, and the journal would credit the donation twice."""
    donor = make.supporter(runtime)
    gift = make.gift(runtime, donor, 1000, gocardless_payment_id="PM01")
    row = "PO01,,,,payment_paid_out,1000.0,PM01,\n"
    # A row repeated exactly is now refused as a duplicate (test_s17q_payout_import_followups); the same payment
    # paid out twice with other figures is still stored, and matched once.
    with runtime.unit_of_work() as uow:
        (result,) = import_gocardless_export(uow, GC_HEADER + row + row.replace("1000.0", "900.0"))
    _, lines = payout_lines(runtime, "PO01")
    assert [(line.kind, line.gift_id, line.matched_at is not None) for line in lines] == [
        ("gift", gift, True),
        ("payment", None, False),
    ]
    assert (str(result.match.reconciliation), result.match.unmatched) == ("unreconciled", 1)


def test_an_unknown_gocardless_item_naming_a_payment_is_not_a_gift(runtime: Runtime) -> None:
    donor = make.supporter(runtime)
    make.gift(runtime, donor, 1000, gocardless_payment_id="PM02")
    text = GC_HEADER + "PO02,0,,,payment_paid_out,1000.0,PM02,\n" + "PO02,0,,,some_new_item,-1000.0,PM02,\n"
    with runtime.unit_of_work() as uow:
        (result,) = import_gocardless_export(uow, text)
    _, lines = payout_lines(runtime, "PO02")
    assert [(line.kind, line.matched_at is not None) for line in lines] == [("gift", True), ("other", False)]
    assert str(result.match.reconciliation) == "unreconciled"


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "1e999999", "-sNaN", "1,000.0", "£10.00"])
def test_a_gocardless_amount_that_is_not_decimal_pence_names_its_row(runtime: Runtime, amount: str) -> None:
    """`NaN`, `Infinity` and `1e999999` passed the check and crashed the import with a traceback."""
    text = GC_HEADER + "PO03,,,,payment_paid_out,1000.0,PM03,\n" + f'PO03,,,,gocardless_fee,"{amount}",PM03,\n'
    with pytest.raises(InvalidImport, match=r"row 3: amount .* is not decimal pence"), runtime.unit_of_work() as uow:
        import_gocardless_export(uow, text)
    assert no_payouts(runtime)


def test_gocardless_arrival_date_in_uk_format_and_rows_that_disagree(runtime: Runtime) -> None:
    """A date as a UK spreadsheet writes it (`05/03/2026`) was refused; rows of one payout that disagree on its
    amount were silently read as the last row's amount."""
    text = GC_HEADER + "PO04,1000,05/03/2026,REF,payment_paid_out,1000.0,PM04,\n"
    with runtime.unit_of_work() as uow:
        import_gocardless_export(uow, text)
    payout, _ = payout_lines(runtime, "PO04")
    assert str(payout.arrival_date) == "2026-03-05"

    text = GC_HEADER + "PO05,1000,,,payment_paid_out,600.0,PM05,\n" + "PO05,900,,,payment_paid_out,400.0,PM06,\n"
    with (
        pytest.raises(InvalidImport, match="row 3: payout_amount '900' is not the payout's 1000 on row 2"),
        runtime.unit_of_work() as uow,
    ):
        import_gocardless_export(uow, text)
    bad_date = GC_HEADER + "PO06,,2026-13-01,,payment_paid_out,600.0,PM05,\n"
    with pytest.raises(InvalidImport, match="row 2: arrival_date '2026-13-01'"), runtime.unit_of_work() as uow:
        import_gocardless_export(uow, bad_date)


def test_windows_line_endings_a_bom_and_importing_again_change_nothing(
    runtime: Runtime, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    donor = make.supporter(runtime)
    make.gift(runtime, donor, 1000, gocardless_payment_id="PM07")
    export = tmp_path / "gc.csv"
    body = (
        GC_HEADER
        + "PO07,986,2026-03-05,REF,payment_paid_out,1000.0,PM07,\nPO07,986,2026-03-05,REF,gocardless_fee,-14.4,PM07,\n"
    )
    export.write_bytes(b"\xef\xbb\xbf" + body.replace("\n", "\r\n").encode())

    first = run_giving(["payouts", "import-gocardless", str(export), "--json"], settings, monkeypatch, tmp_path)
    again = run_giving(["payouts", "import-gocardless", str(export), "--json"], settings, monkeypatch, tmp_path)

    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    (one,) = json.loads(first.stdout)["items"]
    (two,) = json.loads(again.stdout)["items"]
    assert (one["lines_added"], one["status"], two["lines_added"], two["status"]) == (2, "reconciled", 0, "reconciled")
    _, lines = payout_lines(runtime, "PO07")
    assert [(line.kind, line.amount) for line in lines] == [("gift", 1000), ("fee", -14)]


def test_a_row_for_a_gift_not_recorded_yet_waits_and_is_matched_when_it_is(runtime: Runtime) -> None:
    from payments.payouts import on_money_recorded

    text = GC_HEADER + "PO08,1000,,,payment_paid_out,1000.0,PM08,\n"
    with runtime.unit_of_work() as uow:
        (result,) = import_gocardless_export(uow, text)
    assert (str(result.match.reconciliation), result.match.unmatched) == ("unreconciled", 1)
    donor = make.supporter(runtime)
    gift = make.gift(runtime, donor, 1000, gocardless_payment_id="PM08")
    with runtime.unit_of_work() as uow:
        on_money_recorded(uow, ["PM08"])
    payout, lines = payout_lines(runtime, "PO08")
    assert [(line.kind, line.gift_id) for line in lines] == [("gift", gift)]
    assert str(payout.reconciliation) == "reconciled"


def test_a_gocardless_payout_in_a_currency_we_do_not_keep_is_refused_and_a_blank_cell_says_nothing(
    runtime: Runtime,
) -> None:
    """Only the Stripe import checked the currency: a GoCardless `usd` payout was stored. A blank currency cell,
    which the figures' check skips, was taken for pounds and refused a euro payout whose other rows said EUR."""
    header = "payout_id,type,amount,payment_id,refund_id,currency,payout_amount,arrival_date,reference\n"
    with pytest.raises(InvalidImport, match="row 2: currency 'usd' is not one we keep"), runtime.unit_of_work() as uow:
        import_gocardless_export(uow, header + "PO123,payment_paid_out,1000,PM1,,usd,1000,2026-03-05,REF\n")
    assert no_payouts(runtime)
    with runtime.unit_of_work() as uow:
        import_gocardless_export(
            uow,
            header
            + "PO124,payment_paid_out,1000,PM2,,EUR,986,2026-03-05,REF\n"
            + "PO124,gocardless_fee,-14,PM2,,,986,2026-03-05,REF\n",
        )
    payout, lines = payout_lines(runtime, "PO124")
    assert (payout.currency, [line.amount for line in lines]) == ("EUR", [1000, -14])
