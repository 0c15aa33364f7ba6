"""The journal of money that came back: a failed Stripe payout's money paid out again in a later payout (its
`payout_failure` line), and a refund that failed after it was recorded (Stripe's `refund_failure`, GoCardless's
`refund_funds_returned`). Payouts are recorded through the real code, their lines listed through the real SDKs
from the fake provider servers, and the journal read back from `giving export journal`."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from core.runtime import Runtime
from core.settings import Settings
from payments.models import PayoutLine, RefundStatus
from payments.payouts import record_gocardless_payout, record_stripe_payout
from tests.fakes.provider_server import FakeProvider
from tests.payments import factories_money as make
from tests.payments.payout_fakes import (
    balance_transaction,
    money_settings,
    run_giving,
    serve_balance_transactions,
    serve_gocardless_payout,
)
from tests.payments.test_payouts import (
    expanded_fixture_transactions,
    gocardless_payout,
    stripe_money,
    stripe_payout_event,
)

FAILED = "po_test_Daily01"  # the constructed payout: 392p
MARCH_2 = 1772409600  # 2026-03-02 00:00 UTC
MARCH_5 = 1772668800  # 2026-03-05 00:00 UTC


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return money_settings(database_url, tmp_path, fake_stripe, fake_gocardless, shop={"vat_rate_bp": 2000})


def export(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict[str, Any]]:
    result = run_giving(
        ["export", "journal", "--from", "2009-01-01", "--to", "2030-12-31"], settings, monkeypatch, tmp_path
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    for row in rows:
        row["signed"] = int(Decimal(row["debit"] or "0") * 100) - int(Decimal(row["credit"] or "0") * 100)
    return rows


def by_account(rows: list[dict[str, Any]], entry: str | None = None) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for row in rows:
        if entry is None or row["entry"] == entry:
            totals[row["account"]] += row["signed"]
    return {account: total for account, total in totals.items() if total or entry is not None}


def stripe_paid(runtime: Runtime, payout_id: str, amount: int, arrival: int, **fields: Any) -> None:
    payout = {**stripe_payout_event(), "id": payout_id, "amount": amount, "arrival_date": arrival, **fields}
    with runtime.unit_of_work() as uow:
        record_stripe_payout(uow, payout, "payout.paid")


def stripe_failed(runtime: Runtime, payout_id: str, amount: int, arrival: int) -> None:
    payout = {
        **stripe_payout_event(),
        "id": payout_id,
        "amount": amount,
        "arrival_date": arrival,
        "status": "failed",
        "failure_code": "account_closed",
    }
    with runtime.unit_of_work() as uow:
        record_stripe_payout(uow, payout, "payout.failed")


def paid_out_again(failed_payout_id: str, amount: int, repaid_id: str) -> list[dict[str, Any]]:
    """A later payout: the failed payout's money back (Stripe's `payout_failure`), a new £10.00 gift with its fee."""
    return [
        balance_transaction(
            "txn_back",
            amount,
            0,
            {"id": failed_payout_id, "object": "payout"},
            category="payout_reversal",
            bt_type="payout_failure",
        ),
        balance_transaction("txn_new_gift", 1000, 35, {"id": "ch_test_New01", "object": "charge"}),
        balance_transaction("txn_repaid", -(amount + 965), 0, repaid_id, category="payout"),
    ]


# ---------------------------------------------------------------------------------------------------------------------
# A failed Stripe payout's money paid out again.
# ---------------------------------------------------------------------------------------------------------------------


def test_a_failed_payouts_money_paid_out_again_posts_what_the_failed_payout_settled(
    runtime: Runtime,
    settings: Settings,
    fake_stripe: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The failed payout never reached the bank, so the journal posts nothing for it; its money reaches the bank in
    the later payout, whose `payout_failure` line therefore posts the donations, sales, refund, dispute and fees
    the failed payout carried (not suspense), and the later payout's entry balances with nothing in suspense."""
    stripe_money(runtime)
    make.gift(runtime, make.supporter(runtime), 1000, stripe_charge_id="ch_test_New01", appeal="boats")
    serve_balance_transactions(
        fake_stripe, {FAILED: expanded_fixture_transactions(), "po_repaid": paid_out_again(FAILED, 392, "po_repaid")}
    )
    stripe_paid(runtime, FAILED, 392, MARCH_2)
    stripe_failed(runtime, FAILED, 392, MARCH_2)
    stripe_paid(runtime, "po_repaid", 1357, MARCH_5)

    rows = export(settings, monkeypatch, tmp_path)

    assert {row["entry"] for row in rows} == {"payout:stripe:po_repaid"}, "the failed payout posts nothing"
    assert {row["date"] for row in rows} == {"2026-03-05"}
    assert by_account(rows, "payout:stripe:po_repaid") == {
        "Bank: Stripe payouts": 1357,
        "Donations: boats": -1000,
        # What the failed payout settled, in the bank now:
        "Trading income: shirts": -1500,
        "Donations: General": -2000 - 1000,  # the basket's donation and the regular instalment
        "Refunds: shirts": 1500,
        "Chargebacks and disputes": 1000,
        "Processing fees: Stripe": 35 + 73 + 35 + 1500,
    }
    again = [row for row in rows if row["account"] == "Trading income: shirts"]
    assert [(row["source_id"], row["provider_payout_id"]) for row in again] == [("ch_test_Shirt01", "po_repaid")]
    assert FAILED in again[0]["description"]


def test_a_failed_payout_whose_lines_were_never_loaded_posts_its_money_as_lines_not_loaded(
    runtime: Runtime,
    settings: Settings,
    fake_stripe: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A payout that failed before Stripe finished its reconciliation has no lines: what its money settled is not
    known, which is what `Suspense: payout lines not loaded` says (the line itself is matched, not unknown)."""
    make.gift(runtime, make.supporter(runtime), 1000, stripe_charge_id="ch_test_New01")
    serve_balance_transactions(fake_stripe, {"po_repaid": paid_out_again("po_gone", 5000, "po_repaid")})
    stripe_failed(runtime, "po_gone", 5000, MARCH_2)
    stripe_paid(runtime, "po_repaid", 5965, MARCH_5)

    rows = export(settings, monkeypatch, tmp_path)

    assert by_account(rows, "payout:stripe:po_repaid") == {
        "Bank: Stripe payouts": 5965,
        "Donations: General": -1000,
        "Processing fees: Stripe": 35,
        "Suspense: payout lines not loaded": -5000,
    }
    (suspense,) = [row for row in rows if row["account"].startswith("Suspense")]
    assert "po_gone" in suspense["description"] and suspense["source_id"] == "po_gone"


def test_a_failed_payout_that_paid_out_an_earlier_failure_again_posts_both(
    runtime: Runtime,
    settings: Settings,
    fake_stripe: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Money that failed twice: the last payout posts what both failed payouts settled, once each."""
    stripe_money(runtime)
    make.gift(runtime, make.supporter(runtime), 1000, stripe_charge_id="ch_test_New01", appeal="boats")
    make.gift(runtime, make.supporter(runtime), 2000, stripe_charge_id="ch_test_Third01", appeal="winter")
    second = paid_out_again(FAILED, 392, "po_second")
    third = [
        balance_transaction("txn_back2", 1357, 0, {"id": "po_second", "object": "payout"}, category="payout_reversal"),
        balance_transaction("txn_third", 2000, 0, {"id": "ch_test_Third01", "object": "charge"}),
        balance_transaction("txn_third_payout", -3357, 0, "po_third", category="payout"),
    ]
    serve_balance_transactions(
        fake_stripe, {FAILED: expanded_fixture_transactions(), "po_second": second, "po_third": third}
    )
    stripe_paid(runtime, FAILED, 392, MARCH_2)
    stripe_failed(runtime, FAILED, 392, MARCH_2)
    stripe_paid(runtime, "po_second", 1357, MARCH_5)
    stripe_failed(runtime, "po_second", 1357, MARCH_5)
    stripe_paid(runtime, "po_third", 3357, MARCH_5 + 86400)

    rows = export(settings, monkeypatch, tmp_path)

    assert {row["entry"] for row in rows} == {"payout:stripe:po_third"}
    assert by_account(rows, "payout:stripe:po_third") == {
        "Bank: Stripe payouts": 3357,
        "Donations: winter": -2000,
        "Donations: boats": -1000,
        "Trading income: shirts": -1500,
        "Donations: General": -3000,
        "Refunds: shirts": 1500,
        "Chargebacks and disputes": 1000,
        "Processing fees: Stripe": 35 + 73 + 35 + 1500,
    }


# ---------------------------------------------------------------------------------------------------------------------
# A refund that failed after it was recorded: its money came back.
# ---------------------------------------------------------------------------------------------------------------------


def test_a_stripe_refund_that_failed_gives_its_money_back_to_the_refunds_it_reversed(
    runtime: Runtime,
    settings: Settings,
    fake_stripe: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A £15.00 shirt (£2.50 VAT) and a £5.00 donation refunded in one payout; the refund failed and Stripe put its
    money back (a `refund_failure` balance transaction naming the refund) in the next: that line reverses the
    refund's shirts, VAT and donation, not suspense, and over both payouts the refund nets to nothing."""
    donor = make.supporter(runtime)
    order = make.order(
        runtime,
        donor,
        [{"sku": "TEE-PLAIN-M", "quantity": 1, "unit_price": 1500, "vat_amount": 250}],
        donation=500,
        stripe_charge_id="ch_test_Back01",
    )
    gift = make.gift(runtime, donor, 500, order_id=order, appeal="winter")
    make.refund(
        runtime,
        donor,
        2000,
        order_id=order,
        gift_id=gift,
        order_amount=1500,
        gift_amount=500,
        status=RefundStatus.FAILED,
        stripe_refund_id="re_test_Back01",
    )
    refund = {"id": "re_test_Back01", "object": "refund", "charge": "ch_test_Back01"}
    serve_balance_transactions(
        fake_stripe,
        {
            "po_sale": [
                balance_transaction("txn_sale", 2000, 0, {"id": "ch_test_Back01", "object": "charge"}),
                balance_transaction("txn_refund", -2000, 0, refund, category="refund"),
            ],
            "po_back": [
                balance_transaction("txn_back", 2000, 0, refund, category="refund_failure"),
            ],
        },
    )
    stripe_paid(runtime, "po_sale", 0, MARCH_2)
    stripe_paid(runtime, "po_back", 2000, MARCH_5)
    with runtime.read_session() as session:
        back = session.exec(select(PayoutLine).where(PayoutLine.provider_line_id == "txn_back")).one()
    assert back.kind == "refund_returned"  # what the line is, in the payouts' own listing too (not "other")

    rows = export(settings, monkeypatch, tmp_path)

    assert by_account(rows, "payout:stripe:po_back") == {
        "Bank: Stripe payouts": 2000,
        "Refunds: shirts": -1250,
        "VAT output": -250,
        "Refunds: donations": -500,
    }
    assert by_account(rows) == {
        "Bank: Stripe payouts": 2000,
        "Trading income: shirts": -1250,
        "VAT output": -250,
        "Donations: winter": -500,
    }


def test_a_gocardless_refund_whose_funds_were_returned_reverses_the_refund(
    runtime: Runtime,
    settings: Settings,
    fake_gocardless: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """GoCardless's `refund_funds_returned` item names the refund: it reverses `Refunds: donations`."""
    donor = make.supporter(runtime)
    gift = make.gift(runtime, donor, 1000, gocardless_payment_id="PM0BACK1", appeal="boats")
    make.refund(runtime, donor, 1000, gift_id=gift, status=RefundStatus.FAILED, gocardless_refund_id="RF0BACK1")
    items = [
        {"type": "payment_paid_out", "amount": "1000.0", "links": {"payment": "PM0BACK1"}},
        {"type": "refund", "amount": "-1000.0", "links": {"payment": "PM0BACK1", "refund": "RF0BACK1"}},
        {"type": "refund_funds_returned", "amount": "1000.0", "links": {"payment": "PM0BACK1", "refund": "RF0BACK1"}},
    ]
    serve_gocardless_payout(fake_gocardless, gocardless_payout(1000), items)
    with runtime.unit_of_work() as uow:
        record_gocardless_payout(uow, "PO0TEST0002", "paid")

    rows = export(settings, monkeypatch, tmp_path)

    assert by_account(rows, "payout:gocardless:PO0TEST0002") == {
        "Bank: GoCardless payouts": 1000,
        "Donations: boats": -1000,
        "Refunds: donations": 1000 - 1000,
    }
