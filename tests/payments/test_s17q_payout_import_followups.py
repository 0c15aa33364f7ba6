"""Payout CSV imports, follow-ups (helper J2): one balance transaction in two payouts, repeated GoCardless rows,
month-first dates, accounting negatives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import col, select

from core.runtime import Runtime
from core.settings import Settings
from payments.imports import InvalidImport, import_gocardless_export, import_stripe_report
from payments.models import Payout, PayoutLine
from payments.payouts import record_stripe_payout
from tests.fakes.provider_server import FakeProvider
from tests.payments import factories_money as make
from tests.payments.payout_fakes import money_settings, run_giving, serve_balance_transactions
from tests.payments.test_payouts import expanded_fixture_transactions, stripe_money, stripe_payout_event

HEADER = (
    "balance_transaction_id,currency,gross,fee,net,reporting_category,source_id,description,automatic_payout_id,"
    "charge_id,payment_intent_id,refund_id,dispute_id\n"
)
GC_HEADER = "payout_id,payout_amount,arrival_date,reference,type,amount,payment_id,refund_id\n"


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return money_settings(database_url, tmp_path, fake_stripe, fake_gocardless)


def lines_by_payout(runtime: Runtime) -> dict[str, list[tuple[str, str, bool]]]:
    """provider payout id -> [(line id, kind, matched)] in the provider's order."""
    with runtime.read_session() as session:
        rows = session.exec(
            select(Payout.provider_payout_id, PayoutLine.provider_line_id, PayoutLine.kind, PayoutLine.matched_at)
            .join(Payout, col(Payout.id) == col(PayoutLine.payout_id))
            .order_by(col(Payout.provider_payout_id), col(PayoutLine.position))
        ).all()
    out: dict[str, list[tuple[str, str, bool]]] = {}
    for payout_id, line_id, kind, matched_at in rows:
        out.setdefault(payout_id, []).append((line_id, kind, matched_at is not None))
    return out


def payout_ids(runtime: Runtime) -> list[str]:
    with runtime.read_session() as session:
        return sorted(session.exec(select(Payout.provider_payout_id)).all())


# 1. A balance transaction belongs to one payout.


def test_a_balance_transaction_already_in_another_payout_refuses_the_file_naming_the_row(
    runtime: Runtime, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Monday's report imported; then a report whose `automatic_payout_id` a spreadsheet filled down, so Monday's
    charge also sits in Tuesday's payout. It was stored in both, matched and settled in both, and both payouts read
    reconciled: the gift's money counted twice. The second file is refused whole, naming the row."""
    donor = make.supporter(runtime)
    make.gift(runtime, donor, 3500, stripe_charge_id="ch_1")
    make.gift(runtime, donor, 1000, stripe_charge_id="ch_2")
    monday = HEADER + "txn_1,gbp,35.00,0.73,34.27,charge,ch_1,gift,po_mon,ch_1,pi_1,,\n"
    with runtime.unit_of_work() as uow:
        import_stripe_report(uow, monday)

    tuesday = tmp_path / "tuesday.csv"
    tuesday.write_text(
        HEADER
        + "txn_2,gbp,10.00,0.35,9.65,charge,ch_2,gift,po_tue,ch_2,pi_2,,\n"
        + "txn_1,gbp,35.00,0.73,34.27,charge,ch_1,gift,po_tue,ch_1,pi_1,,\n"
    )
    result = run_giving(["payouts", "import-stripe", str(tuesday)], settings, monkeypatch, tmp_path)

    assert result.exit_code == 1
    assert "row 3: balance transaction txn_1 is already in payout po_mon" in result.output
    assert payout_ids(runtime) == ["po_mon"]
    assert lines_by_payout(runtime)["po_mon"] == [("txn_1", "gift", True), ("txn_1:fee", "fee", True)]


def test_one_file_giving_a_balance_transaction_two_payouts_names_both_rows(runtime: Runtime) -> None:
    row = "txn_1,gbp,35.00,0.73,34.27,charge,ch_1,gift,{},ch_1,pi_1,,\n"
    text = HEADER + row.format("po_mon") + row.format("po_tue")
    with (
        pytest.raises(InvalidImport, match="row 3: balance transaction txn_1 is in payout po_tue, but row 2 puts it"),
        runtime.unit_of_work() as uow,
    ):
        import_stripe_report(uow, text)
    assert payout_ids(runtime) == []


@pytest.mark.parametrize("given", [True, False])
def test_stripes_own_list_takes_a_balance_transaction_a_file_put_in_another_payout(
    runtime: Runtime, fake_stripe: FakeProvider, given: bool
) -> None:
    """A file put the basket's charge in the wrong payout (filled down); then Stripe reported the payout it really
    belongs to, with it in the list. It was stored in both and settled in both. Stripe's list is the fact: the line
    is taken out of the payout the file put it in, which is matched again: unreconciled if its amount was given,
    else its amount (the sum of its lines) is the sum of the lines left."""
    stripe_money(runtime)
    make.gift(runtime, make.supporter(runtime), 1000, stripe_charge_id="ch_other")
    wrong = (
        HEADER
        + "txn_test_1,gbp,35.00,0.73,34.27,charge,ch_test_Shirt01,x,po_wrong,ch_test_Shirt01,,,\n"
        + "txn_other,gbp,10.00,0.00,10.00,charge,ch_other,x,po_wrong,ch_other,,,\n"
    )
    with runtime.unit_of_work() as uow:
        import_stripe_report(uow, wrong, payout_amounts={"po_wrong": 4427} if given else None)
    serve_balance_transactions(fake_stripe, {"po_test_Daily01": expanded_fixture_transactions()})

    with runtime.unit_of_work() as uow:
        record_stripe_payout(uow, stripe_payout_event(), "payout.paid")

    lines = lines_by_payout(runtime)
    assert "txn_test_1" in [line_id for line_id, _, _ in lines["po_test_Daily01"]]
    assert lines["po_wrong"] == [("txn_other", "gift", True)]
    with runtime.read_session() as session:
        states = {
            p.provider_payout_id: (str(p.reconciliation), p.discrepancy, p.amount)
            for p in session.exec(select(Payout)).all()
        }
    assert states["po_test_Daily01"] == ("reconciled", 0, 392)
    assert states["po_wrong"] == (("unreconciled", 3427, 4427) if given else ("reconciled", 0, 1000))


# 2. Repeated GoCardless rows.


def test_a_gocardless_fee_row_repeated_exactly_is_refused_as_a_duplicate(runtime: Runtime) -> None:
    """A fee row pasted twice was stored as a second fee on the payment; with no payout amount in the file the
    payout's amount was the sum of its lines, so it read reconciled with the fee counted twice."""
    donor = make.supporter(runtime)
    make.gift(runtime, donor, 1000, gocardless_payment_id="PM1")
    fee = "PO1,,,,gocardless_fee,-20.5,PM1,\n"
    text = GC_HEADER + "PO1,,,,payment_paid_out,1000.0,PM1,\n" + fee + fee
    with (
        pytest.raises(InvalidImport, match=r"row 4: .*gocardless_fee of -20\.5 on PM1 is row 3 again"),
        runtime.unit_of_work() as uow,
    ):
        import_gocardless_export(uow, text)
    assert payout_ids(runtime) == []


def test_fees_of_the_same_amount_on_different_payments_are_each_stored(runtime: Runtime) -> None:
    donor = make.supporter(runtime)
    make.gift(runtime, donor, 1000, gocardless_payment_id="PM1")
    make.gift(runtime, donor, 1000, gocardless_payment_id="PM2")
    text = (
        GC_HEADER
        + "PO1,,,,payment_paid_out,1000.0,PM1,\n"
        + "PO1,,,,gocardless_fee,-20.5,PM1,\n"
        + "PO1,,,,payment_paid_out,1000.0,PM2,\n"
        + "PO1,,,,gocardless_fee,-20.5,PM2,\n"
    )
    with runtime.unit_of_work() as uow:
        (result,) = import_gocardless_export(uow, text)
    assert (result.lines_added, str(result.match.reconciliation)) == (4, "reconciled")


# 3. Day or month first.


def test_a_month_first_gocardless_file_is_refused_and_an_ambiguous_one_says_it_read_day_first(
    runtime: Runtime, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A file whose dates a spreadsheet wrote month first: `03/05/2026` (5 March) was read as 3 May without a word,
    moving the payout to another month in the journal. One date with a second number over 12 (`03/15/2026`) shows
    the file is month first: it is refused whole. A file where no date tells is read day first, and says so."""
    donor = make.supporter(runtime)
    make.gift(runtime, donor, 1000, gocardless_payment_id="PM1")
    make.gift(runtime, donor, 1000, gocardless_payment_id="PM2")
    month_first = (
        GC_HEADER + "PO1,1000,03/05/2026,R1,payment_paid_out,1000.0,PM1,\n"
        "PO2,1000,03/15/2026,R2,payment_paid_out,1000.0,PM2,\n"
    )
    with (
        pytest.raises(InvalidImport, match=r"row 3: arrival_date '03/15/2026' is written month first"),
        runtime.unit_of_work() as uow,
    ):
        import_gocardless_export(uow, month_first)
    assert payout_ids(runtime) == []

    ambiguous = tmp_path / "export.csv"
    ambiguous.write_text(GC_HEADER + "PO1,1000,03/05/2026,R1,payment_paid_out,1000.0,PM1,\n")
    result = run_giving(["payouts", "import-gocardless", str(ambiguous), "--json"], settings, monkeypatch, tmp_path)
    assert result.exit_code == 0, result.output
    (item,) = json.loads(result.stdout)["items"]
    assert "day first" in item["dates"]
    with runtime.read_session() as session:
        payout = session.exec(select(Payout).where(Payout.provider_payout_id == "PO1")).one()
        assert payout.arrival_date.isoformat() == "2026-05-03"  # type: ignore[union-attr]
    text = run_giving(["payouts", "import-gocardless", str(ambiguous)], settings, monkeypatch, tmp_path)
    assert "read day first" in text.stdout


# 4. Accounting negatives.


@pytest.mark.parametrize("written", ["(15.00)", "£(15.00)", "(£15.00)"])
def test_an_accounting_negative_is_read_as_a_negative(runtime: Runtime, written: str) -> None:
    """A spreadsheet's accounting format writes -15.00 as (15.00) or £(15.00): it was refused as not an amount."""
    donor = make.supporter(runtime)
    make.gift(runtime, donor, 3500, stripe_charge_id="ch_1")
    text = (
        HEADER
        + "txn_1,gbp,35.00,0.73,34.27,charge,ch_1,gift,po_1,ch_1,pi_1,,\n"
        + f'txn_2,gbp,"{written}",0.00,"{written}",other_adjustment,,adj,po_1,,,,\n'
    )
    with runtime.unit_of_work() as uow:
        (result,) = import_stripe_report(uow, text)
    with runtime.read_session() as session:
        amounts = session.exec(select(PayoutLine.amount).order_by(col(PayoutLine.position))).all()
    assert list(amounts) == [3500, -73, -1500]
    assert result.match.discrepancy == 0


@pytest.mark.parametrize("written", ["(-15.00)", "-(15.00)", "(15.00", "15.00)", "()"])
def test_a_half_written_accounting_negative_is_still_refused(runtime: Runtime, written: str) -> None:
    text = HEADER + f'txn_2,gbp,"{written}",0.00,-15.00,other_adjustment,,adj,po_1,,,,\n'
    with pytest.raises(InvalidImport, match=r"row 2: gross .* is not an amount"), runtime.unit_of_work() as uow:
        import_stripe_report(uow, text)
