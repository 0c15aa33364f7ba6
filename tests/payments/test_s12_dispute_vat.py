"""A shop basket lost in a dispute (found in review): the journal posted the whole dispute to `Chargebacks and
disputes`, so the VAT on the sale stayed owed in `VAT output` although the money went back to the buyer. A lost
dispute takes the goods back as a refund does (goods first, after the refunds): the VAT inside that part is given
back, rounded once per order with the refunds'."""

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
from payments.models import DisputeStatus, OrderStatus
from payments.payouts import record_stripe_payout
from tests.fakes.provider_server import FakeProvider
from tests.payments import factories_money as make
from tests.payments.payout_fakes import balance_transaction, money_settings, run_giving, serve_balance_transactions
from tests.payments.test_payouts import stripe_payout_event


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return money_settings(database_url, tmp_path, fake_stripe, fake_gocardless, shop={"vat_rate_bp": 2000})


CHARGE = {"id": "ch_test_Vat01", "object": "charge", "payment_intent": "pi_test_Vat01"}


def basket(runtime: Runtime, **fields: Any) -> tuple[Any, Any, Any]:
    """Three shirts (£30.00 with £5.00 VAT) and a £5.00 donation, paid by one charge."""
    donor = make.supporter(runtime)
    order = make.order(
        runtime,
        donor,
        [{"sku": "TEE-PLAIN-M", "quantity": 3, "unit_price": 1000, "vat_amount": 500}],
        donation=500,
        stripe_charge_id="ch_test_Vat01",
        stripe_payment_intent_id="pi_test_Vat01",
        **fields,
    )
    gift = make.gift(runtime, donor, 500, order_id=order, stripe_payment_intent_id="pi_test_Vat01")
    return donor, order, gift


def pay_out(runtime: Runtime, fake_stripe: FakeProvider, rows: list[dict[str, Any]]) -> None:
    serve_balance_transactions(fake_stripe, {"po_test_Daily01": rows})
    event = stripe_payout_event()
    event["amount"] = sum(row["net"] for row in rows)
    with runtime.unit_of_work() as uow:
        record_stripe_payout(uow, event, "payout.paid")


def dispute_row(dispute_id: str, amount: int) -> dict[str, Any]:
    source = {"id": dispute_id, "object": "dispute", "charge": "ch_test_Vat01"}
    return balance_transaction(f"txn_{dispute_id}", -amount, 1500, source, category="dispute")


def journal(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[dict[str, int], list[Any]]:
    result = run_giving(
        ["export", "journal", "--from", "2009-01-01", "--to", "2030-12-31"], settings, monkeypatch, tmp_path
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    totals: dict[str, int] = defaultdict(int)
    for row in rows:
        totals[row["account"]] += int(Decimal(row["debit"] or "0") * 100) - int(Decimal(row["credit"] or "0") * 100)
    return dict(totals), rows


def test_a_basket_lost_in_a_dispute_gives_back_the_vat_on_the_sale(
    runtime: Runtime, settings: Settings, fake_stripe: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    donor, order, gift = basket(runtime)
    make.dispute(runtime, donor, 3500, order_id=order, gift_id=gift, stripe_dispute_id="dp_test_Vat01")
    pay_out(
        runtime, fake_stripe, [balance_transaction("txn_sale", 3500, 0, CHARGE), dispute_row("dp_test_Vat01", 3500)]
    )

    totals, rows = journal(settings, monkeypatch, tmp_path)
    assert totals["Trading income: shirts"] == -2500
    assert totals["VAT output"] == 0  # £5.00 charged on the sale, £5.00 no longer owed
    assert totals["Chargebacks and disputes"] == 3500 - 500
    assert totals["Donations: General"] == -500
    vat_back = [row for row in rows if row["account"] == "VAT output" and row["debit"]]
    assert [(r["debit"], r["source_id"]) for r in vat_back] == [("5.00", "dp_test_Vat01")]
    for entry in {row["entry"] for row in rows}:
        assert (
            sum(
                int(Decimal(r["debit"] or "0") * 100) - int(Decimal(r["credit"] or "0") * 100)
                for r in rows
                if r["entry"] == entry
            )
            == 0
        )


def test_a_dispute_after_a_refund_gives_back_only_the_vat_left_once(
    runtime: Runtime, settings: Settings, fake_stripe: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A £10.00 refund of one shirt first (£1.67 VAT back), then the rest of the basket (£25.00) lost in a dispute:
    its goods part is the £20.00 of goods left, with the £3.33 of VAT left in it; the donation is the rest."""
    donor, order, gift = basket(runtime, status=OrderStatus.PARTIALLY_REFUNDED)
    make.refund(runtime, donor, 1000, order_id=order, order_amount=1000, stripe_refund_id="re_test_Vat01")
    make.dispute(runtime, donor, 2500, order_id=order, gift_id=gift, stripe_dispute_id="dp_test_Vat02")
    refund_source = {"id": "re_test_Vat01", "object": "refund", "charge": "ch_test_Vat01"}
    pay_out(
        runtime,
        fake_stripe,
        [
            balance_transaction("txn_sale", 3500, 0, CHARGE),
            balance_transaction("txn_refund", -1000, 0, refund_source, category="refund"),
            dispute_row("dp_test_Vat02", 2500),
        ],
    )

    totals, _ = journal(settings, monkeypatch, tmp_path)
    assert totals["VAT output"] == 0
    assert totals["Refunds: shirts"] == 1000 - 167
    assert totals["Chargebacks and disputes"] == 2500 - 333


def test_a_dispute_still_open_or_won_leaves_the_vat_owed(
    runtime: Runtime, settings: Settings, fake_stripe: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The money is withdrawn while the dispute is open: the sale may still stand, so its VAT stays owed."""
    donor, order, gift = basket(runtime)
    make.dispute(
        runtime, donor, 3500, order_id=order, gift_id=gift, stripe_dispute_id="dp_test_Vat03", status=DisputeStatus.OPEN
    )
    pay_out(
        runtime, fake_stripe, [balance_transaction("txn_sale", 3500, 0, CHARGE), dispute_row("dp_test_Vat03", 3500)]
    )

    totals, _ = journal(settings, monkeypatch, tmp_path)
    assert totals["VAT output"] == -500
    assert totals["Chargebacks and disputes"] == 3500
