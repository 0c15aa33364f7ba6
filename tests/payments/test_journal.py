"""`giving export journal`: a CSV journal for the accounts that balances to zero for every payout."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.runtime import Runtime
from core.settings import Settings
from payments.payouts import record_gocardless_payout, record_stripe_payout
from tests.fakes.provider_server import FakeProvider
from tests.payments import factories_money as make
from tests.payments.payout_fakes import (
    money_settings,
    run_giving,
    serve_balance_transactions,
    serve_gocardless_payout,
)
from tests.payments.test_payouts import expanded_fixture_transactions, gocardless_payout, stripe_payout_event


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return money_settings(database_url, tmp_path, fake_stripe, fake_gocardless, shop={"vat_rate_bp": 2000})


def pence(text: str) -> int:
    return int(Decimal(text or "0") * 100)


def parse(text: str) -> list[dict[str, Any]]:
    rows = list(csv.DictReader(io.StringIO(text)))
    for row in rows:
        row["signed"] = pence(row["debit"]) - pence(row["credit"])
    return rows


def by_account(rows: list[dict[str, Any]], entry: str) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for row in rows:
        if row["entry"] == entry:
            totals[row["account"]] += row["signed"]
    return dict(totals)


def test_journal_of_a_stripe_and_a_gocardless_payout_balances_per_payout(
    runtime: Runtime,
    settings: Settings,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    donor = make.supporter(runtime)
    lmhr = make.campaign(runtime, "LMHR", "per_item", 500)
    # A VAT-inclusive £15 shirt (VAT £2.50) for a partner campaign, and a £20 donation to the winter appeal.
    order = make.order(
        runtime,
        donor,
        [
            {
                "sku": "TEE-LMHR-M",
                "quantity": 1,
                "unit_price": 1500,
                "vat_amount": 250,
                "partner_campaign_id": lmhr,
                "partner_share_amount": 500,
            }
        ],
        donation=2000,
        stripe_charge_id="ch_test_Shirt01",
    )
    make.gift(runtime, donor, 2000, order_id=order, appeal="winter")
    make.gift(runtime, donor, 1000, stripe_payment_intent_id="pi_test_Renewal01")
    disputed = make.gift(runtime, donor, 1000, stripe_charge_id="ch_test_Disputed01")
    make.refund(runtime, donor, 1500, order_id=order, order_amount=1500, stripe_refund_id="re_test_Shirt01")
    make.dispute(runtime, donor, 1000, gift_id=disputed, stripe_dispute_id="dp_test_01")
    serve_balance_transactions(fake_stripe, {"po_test_Daily01": expanded_fixture_transactions()})

    paid = make.gift(runtime, donor, 1000, gocardless_payment_id="PM0PAID0", appeal="boats")
    back = make.gift(runtime, donor, 500, gocardless_payment_id="PM0BACK", status="reversed")
    make.dispute(runtime, donor, 500, gift_id=back, gocardless_payment_id="PM0BACK", kind="chargeback")
    items = [
        {"type": "payment_paid_out", "amount": "1000.0", "links": {"payment": "PM0PAID0"}},
        {"type": "gocardless_fee", "amount": "-20.5", "links": {"payment": "PM0PAID0"}},
        {"type": "payment_charged_back", "amount": "-500.0", "links": {"payment": "PM0BACK"}},
        {"type": "payment_paid_out", "amount": "300.0", "links": {"payment": "PM0UNKNOWN"}},
    ]
    serve_gocardless_payout(fake_gocardless, gocardless_payout(780), items)  # 779.5 -> 780

    with runtime.unit_of_work() as uow:
        record_stripe_payout(uow, stripe_payout_event(), "payout.paid")
        record_gocardless_payout(uow, "PO0TEST0002", "paid")

    result = run_giving(
        ["export", "journal", "--from", "2009-01-01", "--to", "2030-12-31"], settings, monkeypatch, tmp_path
    )
    assert result.exit_code == 0, result.output
    rows = parse(result.stdout)
    entries = {row["entry"] for row in rows}
    assert entries == {"payout:stripe:po_test_Daily01", "payout:gocardless:PO0TEST0002"}
    for entry in entries:
        assert sum(row["signed"] for row in rows if row["entry"] == entry) == 0, entry

    stripe = by_account(rows, "payout:stripe:po_test_Daily01")
    assert stripe == {
        "Bank: Stripe payouts": 392,
        "Trading income: shirts": -1250,
        "VAT output": -250 + 250,  # VAT on the shirt, given back with its refund
        "Donations: winter": -2000,
        "Donations: General": -1000,
        "Trading: partner shares": 500 - 500,  # given back with the refund of all the goods
        "Partner shares owed: LMHR": -500 + 500,
        "Processing fees: Stripe": 73 + 35 + 1500,
        "Refunds: shirts": 1250,
        "Chargebacks and disputes": 1000,
    }
    gocardless = by_account(rows, "payout:gocardless:PO0TEST0002")
    assert gocardless == {
        "Bank: GoCardless payouts": 780,
        "Donations: boats": -1000,
        "Processing fees: GoCardless": 20,  # 20.5 rounded once with the payout's total
        "Chargebacks and disputes": 500,
        "Suspense: unmatched payout lines": -300,
    }
    assert {row["provider_payout_id"] for row in rows} == {"po_test_Daily01", "PO0TEST0002"}
    assert any(row["reference_id"] == str(paid) for row in rows)

    outside = run_giving(
        ["export", "journal", "--from", "2031-01-01", "--to", "2031-12-31"], settings, monkeypatch, tmp_path
    )
    assert outside.exit_code == 0 and parse(outside.stdout) == []


def test_a_payout_that_does_not_add_up_posts_its_discrepancy_to_suspense(
    runtime: Runtime, settings: Settings, fake_gocardless: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gift = make.gift(runtime, make.supporter(runtime), 1000, gocardless_payment_id="PM0ONE")
    items = [{"type": "payment_paid_out", "amount": "1000.0", "links": {"payment": "PM0ONE"}}]
    serve_gocardless_payout(fake_gocardless, gocardless_payout(1100), items)
    with runtime.unit_of_work() as uow:
        record_gocardless_payout(uow, "PO0TEST0002", "paid")

    out = tmp_path / "journal" / "2014.csv"
    result = run_giving(
        ["export", "journal", "--from", "2014-01-01", "--to", "2014-01-01", "--out", str(out)],
        settings,
        monkeypatch,
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    rows = parse(out.read_text())
    assert by_account(rows, "payout:gocardless:PO0TEST0002") == {
        "Bank: GoCardless payouts": 1100,
        "Donations: General": -1000,
        "Suspense: payout discrepancy": -100,
    }
    assert [row["reference_id"] for row in rows if row["account"] == "Donations: General"] == [str(gift)]


def test_journal_needs_a_valid_period(
    runtime: Runtime, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    result = run_giving(
        ["export", "journal", "--from", "2026-02-30", "--to", "2026-03-01"], settings, monkeypatch, tmp_path
    )
    assert result.exit_code == 1 and "--from must be a date" in result.stderr
    result = run_giving(
        ["export", "journal", "--from", "2026-03-02", "--to", "2026-03-01"], settings, monkeypatch, tmp_path
    )
    assert result.exit_code == 1 and "before" in result.stderr


def test_gift_aid_claimed_is_receivable_in_the_journal(
    runtime: Runtime, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import datetime as dt

    from giftaid.models import Claim, ClaimStatus

    with runtime.unit_of_work() as uow:
        built = Claim(
            through=dt.date(2026, 3, 31),
            total=40_000,
            gift_aid=10_000,
            adjustment=250,
            built_at=dt.datetime(2026, 4, 2, 9, 0, tzinfo=dt.UTC),
        )
        rejected = Claim(
            through=dt.date(2026, 3, 31),
            total=4_000,
            gift_aid=1_000,
            status=ClaimStatus.REJECTED,
            built_at=dt.datetime(2026, 4, 3, 9, 0, tzinfo=dt.UTC),
        )
        uow.session.add_all([built, rejected])
        uow.session.flush()
        claim_id = built.id

    result = run_giving(
        ["export", "journal", "--from", "2026-04-01", "--to", "2026-04-30"], settings, monkeypatch, tmp_path
    )

    assert result.exit_code == 0, result.output
    rows = parse(result.stdout)
    assert by_account(rows, f"giftaid:{claim_id}") == {"Gift Aid receivable": 9_750, "Gift Aid income": -9_750}
    assert {row["entry"] for row in rows} == {f"giftaid:{claim_id}"}, "a rejected claim is not receivable"
    assert rows[0]["date"] == "2026-04-02"


def test_a_payout_still_in_transit_is_not_in_the_journal(runtime: Runtime, fake_stripe: FakeProvider) -> None:
    """Cash basis: an in-transit payout's arrival date is Stripe's estimate and its money is not in the bank yet (it
    may still fail), so it posts nothing until it is paid."""
    import datetime as dt

    from payments import journal

    serve_balance_transactions(fake_stripe, {})
    payout = {
        "id": "po_transit",
        "amount": 5000,
        "currency": "gbp",
        "status": "in_transit",
        "arrival_date": 1767225600,
        "reconciliation_status": "in_progress",
    }
    with runtime.unit_of_work() as uow:
        record_stripe_payout(uow, payout, "payout.created")
    with runtime.read_session() as session:
        assert journal.payout_postings(session, dt.date(2025, 1, 1), dt.date(2026, 12, 31)) == []
    with runtime.unit_of_work() as uow:
        record_stripe_payout(uow, {**payout, "status": "paid"}, "payout.paid")
    with runtime.read_session() as session:
        postings = journal.payout_postings(session, dt.date(2025, 1, 1), dt.date(2026, 12, 31))
    assert ("Bank: Stripe payouts", 5000) in [(p.account, p.amount) for p in postings]
