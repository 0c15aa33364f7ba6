"""The shop's stock, returns, partner statement and journal VAT under the cases a review found wrong: two orders paid
at once, two returns recorded at once, a statement to the last date there is, net sales rounded like the share, and
VAT given back by several partial refunds of one order."""

from __future__ import annotations

import csv
import io
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.db import UnitOfWork
from core.errors import BadRequest
from core.runtime import Runtime
from core.settings import Settings
from payments import shop
from payments.models import Order, OrderLine, RefundStatus, Sku
from payments.payouts import record_stripe_payout
from tests.fakes.provider_server import FakeProvider
from tests.payments import factories_money as make
from tests.payments.payout_fakes import balance_transaction, money_settings, run_giving, serve_balance_transactions
from tests.payments.test_payouts import stripe_payout_event


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return money_settings(
        database_url, tmp_path, fake_stripe, fake_gocardless, shop={"low_stock_threshold": 3, "vat_rate_bp": 2000}
    )


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def stock_of(runtime: Runtime, code: str) -> int:
    with runtime.read_session() as session:
        return session.exec(select(Sku).where(Sku.sku == code)).one().stock


def postgres_only(runtime: Runtime) -> None:
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("row locks between connections: PostgreSQL (SQLite's BEGIN IMMEDIATE serialises writers)")


def race(runtime: Runtime, first: Callable[[UnitOfWork], Any], second: Callable[[UnitOfWork], Any]) -> dict[str, str]:
    """Run `first` in a unit of work and hold it open (uncommitted) while `second` starts in another connection and
    does the same work; then let `first` commit. Each outcome is "ok", "refused: ..." (BadRequest) or "error: ...".
    """
    first_done, first_may_commit = threading.Event(), threading.Event()
    outcome: dict[str, str] = {}

    def run(name: str, work: Callable[[UnitOfWork], Any], hold: bool) -> None:
        try:
            with runtime.unit_of_work() as uow:
                work(uow)
                uow.session.flush()
                if hold:
                    first_done.set()
                    first_may_commit.wait(10)
            outcome[name] = "ok"
        except BadRequest as exc:
            outcome[name] = f"refused: {exc}"
        except BaseException as exc:  # reported to the test
            outcome[name] = f"error: {exc!r}"
        finally:
            first_done.set()

    a = threading.Thread(target=run, args=("first", first, True))
    a.start()
    assert first_done.wait(10)
    b = threading.Thread(target=run, args=("second", second, False))
    b.start()
    time.sleep(0.5)  # the second has read what it reads and waits on the first's row locks (or has lost the update)
    first_may_commit.set()
    a.join(10)
    b.join(10)
    return outcome


def take_stock_of(order_id: Any) -> Callable[[UnitOfWork], None]:
    def work(uow: UnitOfWork) -> None:
        order = uow.session.get(Order, order_id)
        assert order is not None
        shop.take_stock(uow, order)

    return work


def test_two_orders_paid_at_the_same_time_each_take_their_shirts_from_stock(runtime: Runtime) -> None:
    """Stock is taken with one atomic `stock = stock - n`: the second order waits for the first and takes from
    what it left, where a read-then-write lost one sale."""
    postgres_only(runtime)
    make.product(runtime, "TEE-RACE", 1500, {"M": 10, "L": 10})
    donor = make.supporter(runtime)
    # Several SKUs, listed in opposite orders: stock rows are taken in SKU order, so the two never deadlock.
    first = make.order(
        runtime,
        donor,
        [
            {"sku": "TEE-RACE-M", "quantity": 1, "unit_price": 1500},
            {"sku": "TEE-RACE-L", "quantity": 2, "unit_price": 1500},
        ],
    )
    second = make.order(
        runtime,
        donor,
        [
            {"sku": "TEE-RACE-L", "quantity": 3, "unit_price": 1500},
            {"sku": "TEE-RACE-M", "quantity": 4, "unit_price": 1500},
        ],
    )
    outcome = race(runtime, take_stock_of(first), take_stock_of(second))
    assert outcome == {"first": "ok", "second": "ok"}
    assert (stock_of(runtime, "TEE-RACE-M"), stock_of(runtime, "TEE-RACE-L")) == (5, 5)


def test_a_paid_order_may_take_the_stock_below_zero_and_says_so(
    runtime: Runtime, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Stock is checked at the checkout, not reserved: an order paid after the last shirt went is still a sale.
    Its SKU goes negative, a warning is logged and the SKU heads the low-stock list."""
    make.product(runtime, "TEE-LAST", 1500, {"M": 1})
    donor = make.supporter(runtime)
    orders = [make.order(runtime, donor, [{"sku": "TEE-LAST-M", "quantity": 1, "unit_price": 1500}]) for _ in "ab"]
    with caplog.at_level(logging.WARNING, logger="payments.shop"):
        for order_id in orders:
            with runtime.unit_of_work() as uow:
                take_stock_of(order_id)(uow)
    assert stock_of(runtime, "TEE-LAST-M") == -1
    assert [r.getMessage() for r in caplog.records if "oversold" in r.getMessage()] == [
        f"SKU TEE-LAST-M oversold: stock -1 after order {orders[1]} was paid"
    ]
    low = client.get("/api/shop/low-stock", headers=auth(make.staff_token(runtime, "fundraiser"))).json()
    assert low["items"][0]["sku"] == "TEE-LAST-M" and low["items"][0]["stock"] == -1


def returning(order_id: Any, quantity: int) -> Callable[[UnitOfWork], None]:
    def work(uow: UnitOfWork) -> None:
        shop.record_returns(uow, order_id, [{"sku": "TEE-RET-M", "quantity": quantity}])

    return work


def test_two_returns_recorded_at_the_same_time_are_checked_one_after_the_other(runtime: Runtime) -> None:
    """Two shirts sold, both sent back, then one more recorded at the same moment by someone else: the order and
    its lines are locked, so the second sees the first's return and is refused whole."""
    postgres_only(runtime)
    lmhr = make.campaign(runtime, "LMHR", "per_item", 500)
    make.product(runtime, "TEE-RET", 1500, {"M": 8}, lmhr)
    donor = make.supporter(runtime)
    order_id = make.order(
        runtime,
        donor,
        [
            {
                "sku": "TEE-RET-M",
                "quantity": 2,
                "unit_price": 1500,
                "partner_campaign_id": lmhr,
                "partner_share_amount": 1000,
            }
        ],
    )
    outcome = race(runtime, returning(order_id, 2), returning(order_id, 1))
    assert outcome == {"first": "ok", "second": "refused: line TEE-RET-M has 0 shirt(s) left to return, not 1"}
    with runtime.read_session() as session:
        line = session.exec(select(OrderLine).where(OrderLine.order_id == order_id)).one()
        assert (line.refunded_quantity, line.partner_share_amount) == (2, 0)
    assert stock_of(runtime, "TEE-RET-M") == 10


def test_a_partner_statement_to_the_last_date_there_is_covers_everything_from_the_first_date(
    runtime: Runtime, client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`to=9999-12-31` means "no end": 200 with the orders paid from `from` on (it was a 500: the day after the
    last date does not exist), and the command answers the same. The first date there is works too."""
    lmhr = make.campaign(runtime, "LMHR", "per_item", 500)
    make.product(runtime, "TEE-LMHR", 1800, {"M": 10}, lmhr)
    donor = make.supporter(runtime)
    line = {"sku": "TEE-LMHR-M", "quantity": 1, "unit_price": 1800, "partner_campaign_id": lmhr}
    make.order(runtime, donor, [{**line, "partner_share_amount": 500}])  # paid 2 March 2026
    token = make.staff_token(runtime, "finance")
    for start in ("2026-03-02", "0001-01-01"):
        response = client.get(f"/api/shop/partner-statement?from={start}&to=9999-12-31", headers=auth(token))
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["from"], body["to"], body["total_owed"]["amount"]) == (start, "9999-12-31", 500)
        assert body["campaigns"][0]["orders"] == 1
    later = client.get("/api/shop/partner-statement?from=2026-03-03&to=9999-12-31", headers=auth(token)).json()
    assert later["total_owed"]["amount"] == 0
    command = ["shop", "partner-statement", "--from", "2026-03-01", "--to", "9999-12-31", "--json"]
    result = run_giving(command, settings, monkeypatch, tmp_path)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total_owed"]["amount"] == 500


def test_partner_statement_net_sales_round_half_up_like_the_share(runtime: Runtime, client: TestClient) -> None:
    """2 of 3 shirts kept of a line whose net is £25.00: £16.666... of net sales, rounded half up to £16.67 as the
    share of it is (core.money.percent_of), not floored to £16.66."""
    everything = make.campaign(runtime, "ALL", "percent_of_net", 10_000)
    make.product(runtime, "TEE-ALL", 1000, {"M": 10}, everything)
    donor = make.supporter(runtime)
    order_id = make.order(
        runtime,
        donor,
        [
            {
                "sku": "TEE-ALL-M",
                "quantity": 3,
                "unit_price": 1000,
                "vat_amount": 500,
                "partner_campaign_id": everything,
                "partner_share_amount": 2500,
            }
        ],
    )
    token = make.staff_token(runtime, "finance")
    returned = client.post(
        f"/api/orders/{order_id}/returns", json={"lines": [{"sku": "TEE-ALL-M", "quantity": 1}]}, headers=auth(token)
    )
    assert returned.status_code == 200, returned.text
    statement = client.get("/api/shop/partner-statement?from=2026-03-01&to=2026-03-31", headers=auth(token)).json()
    [campaign] = statement["campaigns"]
    assert (campaign["shirts_sold"], campaign["shirts_returned"], campaign["shirts_kept"]) == (3, 1, 2)
    assert campaign["owed"]["amount"] == 1667
    assert campaign["net_sales"]["amount"] == 1667
    assert campaign["lines"][0]["kept"] == 2


def journal_totals(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, int]:
    result = run_giving(
        ["export", "journal", "--from", "2009-01-01", "--to", "2030-12-31"], settings, monkeypatch, tmp_path
    )
    assert result.exit_code == 0, result.output
    totals: dict[str, int] = defaultdict(int)
    for row in csv.DictReader(io.StringIO(result.stdout)):
        totals[row["account"]] += int(Decimal(row["debit"] or "0") * 100) - int(Decimal(row["credit"] or "0") * 100)
    return dict(totals)


def paid_out(runtime: Runtime, fake_stripe: FakeProvider, refunds: list[str], *, total: int = 3000) -> None:
    """One payout holding the order's charge and these refunds of it (£10.00 each)."""
    charge = {"id": "ch_test_Vat01", "object": "charge", "payment_intent": "pi_test_Vat01"}
    rows = [balance_transaction("txn_v0", total, 0, charge)]
    for n, refund_id in enumerate(refunds, start=1):
        source = {"id": refund_id, "object": "refund", "charge": "ch_test_Vat01"}
        rows.append(balance_transaction(f"txn_v{n}", -1000, 0, source, category="refund"))
    serve_balance_transactions(fake_stripe, {"po_test_Daily01": rows})
    event = stripe_payout_event()
    event["amount"] = total - 1000 * len(refunds)
    with runtime.unit_of_work() as uow:
        record_stripe_payout(uow, event, "payout.paid")


def vat_order(runtime: Runtime) -> tuple[Any, Any]:
    donor = make.supporter(runtime)
    order = make.order(
        runtime,
        donor,
        [{"sku": "TEE-PLAIN-M", "quantity": 3, "unit_price": 1000, "vat_amount": 500}],
        stripe_charge_id="ch_test_Vat01",
        stripe_payment_intent_id="pi_test_Vat01",
    )
    return donor, order


def test_three_partial_refunds_of_an_order_give_back_exactly_the_vat_it_charged(
    runtime: Runtime,
    settings: Settings,
    fake_stripe: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Three refunds of £10.00 on a £30.00 order carrying £5.00 VAT: rounded one by one each gave back £1.67
    (£5.01 against £5.00 charged). Rounded on the goods refunded so far, less the VAT already given back: £1.67,
    £1.66, £1.67; each refund's VAT and shirts still add up to its £10.00."""
    donor, order = vat_order(runtime)
    ids = [f"re_test_Vat0{n}" for n in (1, 2, 3)]
    for refund_id in ids:
        make.refund(runtime, donor, 1000, order_id=order, order_amount=1000, stripe_refund_id=refund_id)
    paid_out(runtime, fake_stripe, ids)
    result = run_giving(
        ["export", "journal", "--from", "2009-01-01", "--to", "2030-12-31"], settings, monkeypatch, tmp_path
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    vat_back = [row["debit"] for row in rows if row["account"] == "VAT output" and row["debit"]]
    shirts_back = [row["debit"] for row in rows if row["account"] == "Refunds: shirts"]
    assert (vat_back, shirts_back) == (["1.67", "1.66", "1.67"], ["8.33", "8.34", "8.33"])
    totals = journal_totals(settings, monkeypatch, tmp_path)
    assert totals["Trading income: shirts"] == -2500
    assert totals["VAT output"] == 0  # £5.00 charged, £5.00 given back
    assert totals["Refunds: shirts"] == 2500


def test_a_refund_that_failed_takes_no_vat_from_the_refunds_after_it(
    runtime: Runtime,
    settings: Settings,
    fake_stripe: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A failed refund between the others keeps the VAT of its own place (for its own lines) but is not counted in
    the goods refunded so far: the three that succeeded still give back the order's £5.00 of VAT, whichever payout
    the failed one's money is in."""
    donor, order = vat_order(runtime)
    ids = [f"re_test_Vat0{n}" for n in (1, 2, 3)]
    make.refund(runtime, donor, 1000, order_id=order, order_amount=1000, stripe_refund_id=ids[0])
    make.refund(
        runtime, donor, 1000, order_id=order, status=RefundStatus.FAILED, order_amount=0, stripe_refund_id="re_test_F"
    )
    for refund_id in ids[1:]:
        make.refund(runtime, donor, 1000, order_id=order, order_amount=1000, stripe_refund_id=refund_id)
    paid_out(runtime, fake_stripe, ids)
    totals = journal_totals(settings, monkeypatch, tmp_path)
    assert (totals["VAT output"], totals["Refunds: shirts"]) == (0, 2500)
