"""Payouts from CSV exports (`giving payouts import-stripe|import-gocardless`) and `giving reconcile`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import col, select

from core.runtime import Runtime
from core.settings import Settings
from payments.models import Payout, PayoutLine
from payments.payouts import record_stripe_payout
from tests.fakes.provider_server import FakeProvider
from tests.payments import factories_money as make
from tests.payments.payout_fakes import money_settings, run_giving, serve_balance_transactions
from tests.payments.test_payouts import expanded_fixture_transactions, stripe_money, stripe_payout_event

# Stripe's itemised payout reconciliation report for the constructed payout (amounts in pounds, extra columns and a
# column order of Stripe's own; fee as Stripe writes it, positive).
STRIPE_REPORT = """\
balance_transaction_id,created_utc,available_on_utc,currency,gross,fee,net,reporting_category,source_id,description,\
automatic_payout_id,automatic_payout_effective_at_utc,charge_id,payment_intent_id,refund_id,dispute_id,invoice_id
txn_test_1,2026-03-01 10:00:00,2026-03-03 00:00:00,gbp,35.00,0.73,34.27,charge,ch_test_Shirt01,donation+shirt,\
po_test_Daily01,2026-03-04 00:00:00,ch_test_Shirt01,pi_test_Shirt01,,,
txn_test_2,2026-03-01 11:00:00,2026-03-03 00:00:00,gbp,10.00,0.35,9.65,charge,ch_test_Renewal01,monthly gift,\
po_test_Daily01,2026-03-04 00:00:00,ch_test_Renewal01,pi_test_Renewal01,,,in_1
txn_test_3,2026-03-01 12:00:00,2026-03-03 00:00:00,gbp,-15.00,0.00,-15.00,refund,re_test_Shirt01,REFUND FOR CHARGE,\
po_test_Daily01,2026-03-04 00:00:00,ch_test_Shirt01,,re_test_Shirt01,,
txn_test_4,2026-03-01 13:00:00,2026-03-03 00:00:00,gbp,-10.00,15.00,-25.00,dispute,dp_test_01,Chargeback withdrawal,\
po_test_Daily01,2026-03-04 00:00:00,ch_test_Disputed01,,,dp_test_01,
"""


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return money_settings(database_url, tmp_path, fake_stripe, fake_gocardless)


def lines_of(runtime: Runtime, provider_payout_id: str) -> list[PayoutLine]:
    with runtime.read_session() as session:
        payout = session.exec(select(Payout).where(Payout.provider_payout_id == provider_payout_id)).one()
        lines = list(
            session.exec(select(PayoutLine).where(PayoutLine.payout_id == payout.id).order_by(col(PayoutLine.position)))
        )
        session.expunge_all()  # keep them readable after the read session rolls back
        return lines


def test_stripe_report_import_matches_like_the_api(
    runtime: Runtime, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ids = stripe_money(runtime)
    report = tmp_path / "payout_reconciliation.csv"
    report.write_text(STRIPE_REPORT)

    result = run_giving(
        ["payouts", "import-stripe", str(report), "--payout-amount", "po_test_Daily01=392", "--json"],
        settings,
        monkeypatch,
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    (summary,) = json.loads(result.stdout)["items"]
    assert summary == {
        "provider_payout_id": "po_test_Daily01",
        "lines_added": 7,
        "amount_from": "given",
        "status": "reconciled",
        "discrepancy": {"amount": 0, "currency": "GBP"},
        "unmatched": 0,
    }
    lines = lines_of(runtime, "po_test_Daily01")
    assert [(line.kind, line.amount) for line in lines] == [
        ("order", 3500),
        ("fee", -73),
        ("gift", 1000),
        ("fee", -35),
        ("refund", -1500),
        ("dispute", -1000),
        ("fee", -1500),
    ]
    assert lines[2].gift_id == ids["instalment"], "matched through the report's payment_intent_id"

    again = run_giving(["payouts", "import-stripe", str(report), "--json"], settings, monkeypatch, tmp_path)
    assert json.loads(again.stdout)["items"][0]["lines_added"] == 0
    assert json.loads(again.stdout)["items"][0]["amount_from"] == "provider"


def test_stripe_report_and_api_describe_the_same_lines(
    runtime: Runtime, settings: Settings, fake_stripe: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stripe_money(runtime)
    serve_balance_transactions(fake_stripe, {"po_test_Daily01": expanded_fixture_transactions()})
    with runtime.unit_of_work() as uow:
        record_stripe_payout(uow, stripe_payout_event(), "payout.paid")
    before = [(line.id, line.matched_at) for line in lines_of(runtime, "po_test_Daily01")]
    report = tmp_path / "report.csv"
    report.write_text(STRIPE_REPORT)

    result = run_giving(["payouts", "import-stripe", str(report)], settings, monkeypatch, tmp_path)

    assert result.exit_code == 0, result.output
    assert "0 line(s) added, reconciled" in result.stdout
    assert [(line.id, line.matched_at) for line in lines_of(runtime, "po_test_Daily01")] == before


def test_a_payout_amount_that_contradicts_the_provider_is_refused(
    runtime: Runtime, settings: Settings, fake_stripe: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The amount Stripe reported reaching the bank is a fact: a file (or a typo on the command line) giving another
    refuses the import whole, instead of overwriting it and making the payout look reconciled or not at random."""
    stripe_money(runtime)
    serve_balance_transactions(fake_stripe, {"po_test_Daily01": []})
    with runtime.unit_of_work() as uow:
        record_stripe_payout(uow, stripe_payout_event(), "payout.paid")
    with runtime.read_session() as session:
        reported = session.exec(select(Payout).where(Payout.provider_payout_id == "po_test_Daily01")).one().amount
    report = tmp_path / "report.csv"
    report.write_text(STRIPE_REPORT)

    wrong = run_giving(
        ["payouts", "import-stripe", str(report), "--payout-amount", f"po_test_Daily01={reported + 100}"],
        settings,
        monkeypatch,
        tmp_path,
    )
    assert wrong.exit_code == 1
    assert f"the file gives £{(reported + 100) / 100:,.2f}, but Stripe reported £{reported / 100:,.2f}" in wrong.stderr
    with runtime.read_session() as session:
        payout = session.exec(select(Payout).where(Payout.provider_payout_id == "po_test_Daily01")).one()
        assert payout.amount == reported
        assert session.exec(select(PayoutLine).where(PayoutLine.payout_id == payout.id)).all() == []

    agreeing = run_giving(
        ["payouts", "import-stripe", str(report), "--payout-amount", f"po_test_Daily01={reported}", "--json"],
        settings,
        monkeypatch,
        tmp_path,
    )
    assert agreeing.exit_code == 0, agreeing.output
    item = json.loads(agreeing.stdout)["items"][0]
    assert item["amount_from"] == "given" and item["lines_added"] == len(lines_of(runtime, "po_test_Daily01")) > 0


def test_a_payout_first_imported_from_a_file_is_protected_once_the_provider_reports_it(
    runtime: Runtime, settings: Settings, fake_stripe: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Found in review: the report arrived before Stripe's event, so the payout was made from the file; once Stripe
    reports it, its amount is Stripe's, and a later file contradicting it is refused like any other."""
    stripe_money(runtime)
    serve_balance_transactions(fake_stripe, {"po_test_Daily01": []})
    report = tmp_path / "report.csv"
    report.write_text(STRIPE_REPORT)
    command = ["payouts", "import-stripe", str(report), "--payout-amount"]
    first = run_giving([*command, "po_test_Daily01=392"], settings, monkeypatch, tmp_path)
    assert first.exit_code == 0, first.output
    with runtime.unit_of_work() as uow:
        record_stripe_payout(uow, stripe_payout_event(), "payout.paid")
    with runtime.read_session() as session:
        payout = session.exec(select(Payout).where(Payout.provider_payout_id == "po_test_Daily01")).one()
        reported, source = payout.amount, payout.source
    assert source == "api"

    wrong = run_giving([*command, f"po_test_Daily01={reported + 100}"], settings, monkeypatch, tmp_path)
    assert wrong.exit_code == 1 and "nothing was imported" in wrong.stderr
    with runtime.read_session() as session:
        payout = session.exec(select(Payout).where(Payout.provider_payout_id == "po_test_Daily01")).one()
        assert payout.amount == reported


def test_a_bad_stripe_report_is_refused_whole(
    runtime: Runtime, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    report = tmp_path / "bad.csv"
    report.write_text(STRIPE_REPORT.replace("-15.00,0.00,-15.00", "-15.00,0.00,-14.00"))
    result = run_giving(["payouts", "import-stripe", str(report)], settings, monkeypatch, tmp_path)
    assert result.exit_code == 1
    assert "row 4: gross -15.00 - fee 0.00 is not net -14.00" in result.stderr
    with runtime.read_session() as session:
        assert session.exec(select(Payout)).all() == []
    report.write_text("id,amount\ntxn_1,3.00\n")
    result = run_giving(["payouts", "import-stripe", str(report)], settings, monkeypatch, tmp_path)
    assert result.exit_code == 1 and "no column balance_transaction_id" in result.stderr


def test_gocardless_export_import_with_a_late_failure(
    runtime: Runtime, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    donor = make.supporter(runtime)
    gift = make.gift(runtime, donor, 1000, gocardless_payment_id="PM0CSV1")
    failed = make.gift(runtime, donor, 400, gocardless_payment_id="PM0CSV2", status="reversed")
    late = make.dispute(runtime, donor, 400, gift_id=failed, gocardless_payment_id="PM0CSV2", kind="late_failure")
    refund = make.refund(runtime, donor, 200, gift_id=gift, gocardless_refund_id="RF0CSV1")
    export = tmp_path / "gocardless.csv"
    export.write_text(
        "payout_id,payout_amount,arrival_date,reference,type,amount,payment_id,refund_id,mandate_id\n"
        "PO0CSV,385,2026-03-05,GC-REF-1,payment_paid_out,1000.0,PM0CSV1,,MD1\n"
        "PO0CSV,385,2026-03-05,GC-REF-1,gocardless_fee,-14.5,PM0CSV1,,MD1\n"
        "PO0CSV,385,2026-03-05,GC-REF-1,payment_failed,-400.0,PM0CSV2,,MD2\n"
        "PO0CSV,385,2026-03-05,GC-REF-1,refund,-200.0,PM0CSV1,RF0CSV1,MD1\n"
    )

    result = run_giving(["payouts", "import-gocardless", str(export)], settings, monkeypatch, tmp_path)

    assert result.exit_code == 0, result.output
    # 1000 - 14.5 - 400 - 200 = 385.5 -> 386 paid? The export says 385: a penny out, unreconciled.
    assert "PO0CSV: 4 line(s) added, unreconciled, discrepancy -£0.01, 0 unmatched" in result.stdout
    lines = lines_of(runtime, "PO0CSV")
    assert [(line.kind, line.amount) for line in lines] == [
        ("gift", 1000),
        ("fee", -14),
        ("late_failure", -400),
        ("refund", -200),
    ]
    assert (lines[2].dispute_id, lines[3].refund_id, lines[1].gift_id) == (late, refund, gift)
    with runtime.read_session() as session:
        payout = session.exec(select(Payout).where(Payout.provider_payout_id == "PO0CSV")).one()
        assert (payout.source, payout.reference, str(payout.arrival_date)) == ("csv", "GC-REF-1", "2026-03-05")


def test_giving_reconcile_reruns_matching(
    runtime: Runtime, settings: Settings, fake_stripe: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    serve_balance_transactions(fake_stripe, {"po_test_Daily01": expanded_fixture_transactions()})
    with runtime.unit_of_work() as uow:
        record_stripe_payout(uow, stripe_payout_event(), "payout.paid")
    # Money recorded by a path that never told the payouts (e.g. typed in by staff).
    stripe_money(runtime)

    result = run_giving(["reconcile", "--json"], settings, monkeypatch, tmp_path)

    assert result.exit_code == 0, result.output
    (item,) = json.loads(result.stdout)["items"]
    assert (item["provider_payout_id"], item["status"], item["unmatched_lines"]) == ("po_test_Daily01", "reconciled", 0)
    table = run_giving(["reconcile"], settings, monkeypatch, tmp_path)
    assert "po_test_Daily01" in table.stdout and "reconciled" in table.stdout and "£3.92" in table.stdout
    assert "1 payout(s), 0 not reconciled" in table.stderr


def test_a_gocardless_refund_item_naming_only_its_payment_stays_a_refund(runtime: Runtime) -> None:
    """A `payment_refunded` item without its refund id is money going back, not the payment: it stays a refund line,
    unmatched until its refund is known, and the payout is unreconciled (it used to become a negative gift matched to
    the gift, and the payout looked reconciled)."""
    from payments.imports import import_gocardless_export

    donor = make.supporter(runtime)
    gift = make.gift(runtime, donor, 1000, gocardless_payment_id="PM0REF1")
    export = (
        "payout_id,payout_amount,type,amount,payment_id,refund_id\n"
        "PO0REV1,0,payment_paid_out,1000.0,PM0REF1,\n"
        "PO0REV1,0,payment_refunded,-1000.0,PM0REF1,\n"
    )
    with runtime.unit_of_work() as uow:
        import_gocardless_export(uow, export)
    with runtime.read_session() as session:
        payout = session.exec(select(Payout).where(Payout.provider_payout_id == "PO0REV1")).one()
        lines = session.exec(select(PayoutLine).where(PayoutLine.payout_id == payout.id)).all()
        kinds = sorted((line.kind, line.amount, line.gift_id, line.matched_at is not None) for line in lines)
        assert kinds == [("gift", 1000, gift, True), ("refund", -1000, None, False)]
        assert payout.reconciliation == "unreconciled"


def test_a_gocardless_export_saved_by_a_spreadsheet_in_windows_1252_is_read(
    runtime: Runtime, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Excel on Windows saves "CSV" in Windows-1252 (£ is the byte 0xA3): the import was a UnicodeDecodeError
    traceback."""
    donor = make.supporter(runtime)
    make.gift(runtime, donor, 1000, gocardless_payment_id="PM0CP1")
    export = tmp_path / "gocardless.csv"
    export.write_bytes(
        "payout_id,payout_amount,arrival_date,reference,type,amount,payment_id,refund_id,mandate_id\n"
        "PO0CP,1000,2026-03-05,Gift £10,payment_paid_out,1000,PM0CP1,,MD1\n".encode("cp1252")
    )

    result = run_giving(["payouts", "import-gocardless", str(export)], settings, monkeypatch, tmp_path)

    assert result.exit_code == 0, result.output
    assert "PO0CP: 1 line(s) added, reconciled, discrepancy £0.00, 0 unmatched" in result.stdout
    with runtime.read_session() as session:
        assert session.exec(select(Payout).where(Payout.provider_payout_id == "PO0CP")).one().reference == "Gift £10"
