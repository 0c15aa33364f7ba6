"""Payout reconciliation driven through the real Stripe and GoCardless SDKs against the fake provider servers,
read back through `GET /api/payouts`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import Settings
from payments.models import Payout, PayoutLine
from payments.payouts import on_money_recorded, record_gocardless_payout, record_stripe_payout, rematch
from tests.fakes.provider_server import FakeProvider
from tests.payments import factories_money as make
from tests.payments.payout_fakes import (
    balance_transaction,
    fixture,
    money_settings,
    serve_balance_transactions,
    serve_gocardless_payout,
)


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return money_settings(database_url, tmp_path, fake_stripe, fake_gocardless)


def stripe_payout_event() -> dict[str, Any]:
    return copy.deepcopy(fixture("stripe/event_payout_paid.constructed.json")["data"]["object"])


def expanded_fixture_transactions() -> list[dict[str, Any]]:
    """The constructed payout's balance transactions with `source` expanded, as `expand[]=data.source` returns."""
    sources = {
        "ch_test_Shirt01": {"id": "ch_test_Shirt01", "object": "charge", "payment_intent": "pi_test_Shirt01"},
        "ch_test_Renewal01": {"id": "ch_test_Renewal01", "object": "charge", "payment_intent": "pi_test_Renewal01"},
        "re_test_Shirt01": {"id": "re_test_Shirt01", "object": "refund", "charge": "ch_test_Shirt01"},
        "dp_test_01": {"id": "dp_test_01", "object": "dispute", "charge": "ch_test_Disputed01"},
        "po_test_Daily01": {"id": "po_test_Daily01", "object": "payout"},
    }
    rows = fixture("stripe/payout_balance_transactions.constructed.json")["data"]
    for row in rows:
        row["source"] = sources[row["source"]]
    return rows


def record(runtime: Runtime, fn: Any, *args: Any) -> None:
    with runtime.unit_of_work() as uow:
        fn(uow, *args)


def api_payout(client: TestClient, token: str, provider_payout_id: str) -> dict[str, Any]:
    listing = client.get("/api/payouts", headers={"Authorization": f"Bearer {token}"})
    assert listing.status_code == 200
    (summary,) = [p for p in listing.json()["items"] if p["provider_payout_id"] == provider_payout_id]
    detail = client.get(f"/api/payouts/{summary['id']}", headers={"Authorization": f"Bearer {token}"})
    assert detail.status_code == 200
    return dict(detail.json())


def stripe_money(runtime: Runtime) -> dict[str, Any]:
    """The gifts, order, refund and dispute the constructed Stripe payout settles."""
    donor = make.supporter(runtime)
    order = make.order(
        runtime,
        donor,
        [{"sku": "TEE-LMHR-M", "quantity": 1, "unit_price": 1500}],
        donation=2000,
        stripe_charge_id="ch_test_Shirt01",
        stripe_payment_intent_id="pi_test_Shirt01",
    )
    # The basket's donation line is a gift of the order (found through the order, it carries no charge id).
    basket_gift = make.gift(runtime, donor, 2000, order_id=order, stripe_checkout_session_id="cs_test_Shirt01")
    regular = make.regular_gift(runtime, donor, 1000, stripe_subscription_id="sub_test_1")
    # A regular instalment recorded with its payment intent only: matched through the expanded charge.
    instalment = make.gift(runtime, donor, 1000, regular_gift_id=regular, stripe_payment_intent_id="pi_test_Renewal01")
    disputed = make.gift(runtime, donor, 1000, stripe_charge_id="ch_test_Disputed01")
    refund = make.refund(
        runtime, donor, 1500, order_id=order, stripe_refund_id="re_test_Shirt01", stripe_charge_id="ch_test_Shirt01"
    )
    dispute = make.dispute(
        runtime, donor, 1000, gift_id=disputed, stripe_dispute_id="dp_test_01", stripe_charge_id="ch_test_Disputed01"
    )
    return {
        "order": order,
        "basket_gift": basket_gift,
        "regular": regular,
        "instalment": instalment,
        "refund": refund,
        "dispute": dispute,
    }


def test_stripe_payout_with_charges_partial_refund_lost_dispute_and_fees(
    runtime: Runtime, client: TestClient, fake_stripe: FakeProvider
) -> None:
    ids = stripe_money(runtime)
    serve_balance_transactions(fake_stripe, {"po_test_Daily01": expanded_fixture_transactions()})
    token = make.staff_token(runtime, "finance")

    record(runtime, record_stripe_payout, stripe_payout_event(), "payout.paid")

    (request,) = fake_stripe.requests_to("GET", r"/v1/balance_transactions")
    assert request.param("payout") == "po_test_Daily01"
    assert request.query.get("expand[0]") == ["data.source"] or request.query.get("expand[]") == ["data.source"]
    body = api_payout(client, token, "po_test_Daily01")
    assert body["provider"] == "stripe"
    assert body["amount"] == {"amount": 392, "currency": "GBP"}
    assert body["status"] == "reconciled"
    assert body["discrepancy"] == {"amount": 0, "currency": "GBP"}
    summary = [
        (line["kind"], line["amount"]["amount"], line["source_id"], line.get("fee_for")) for line in body["lines"]
    ]
    assert summary == [
        ("order", 3500, "ch_test_Shirt01", None),
        ("fee", -73, "ch_test_Shirt01", "ch_test_Shirt01"),
        ("gift", 1000, "ch_test_Renewal01", None),
        ("fee", -35, "ch_test_Renewal01", "ch_test_Renewal01"),
        ("refund", -1500, "re_test_Shirt01", None),
        ("dispute", -1000, "dp_test_01", None),
        ("fee", -1500, "dp_test_01", "dp_test_01"),
    ]
    assert sum(amount for _, amount, _, _ in summary) == 392
    order_line, order_fee, gift_line, gift_fee, refund_line, dispute_line, dispute_fee = body["lines"]
    assert order_line["order_id"] == str(ids["order"]) and order_line["gift_id"] == str(ids["basket_gift"])
    assert order_line["fee"] == {"amount": 73, "currency": "GBP"}
    assert order_line["net"] == {"amount": 3427, "currency": "GBP"}
    assert order_fee["order_id"] == str(ids["order"])
    assert gift_line["gift_id"] == str(ids["instalment"]) and gift_line["regular_gift_id"] == str(ids["regular"])
    assert gift_fee["gift_id"] == str(ids["instalment"])
    assert refund_line["refund_id"] == str(ids["refund"])
    assert dispute_line["dispute_id"] == str(ids["dispute"]) and dispute_fee["dispute_id"] == str(ids["dispute"])
    assert all(line["provider_line_id"] != "txn_test_5" for line in body["lines"]), "the payout's own line"
    assert body["unmatched"] == []


def test_reconciliation_waits_until_stripe_says_it_is_complete(
    runtime: Runtime, client: TestClient, fake_stripe: FakeProvider
) -> None:
    stripe_money(runtime)
    serve_balance_transactions(fake_stripe, {"po_test_Daily01": expanded_fixture_transactions()})
    payout = stripe_payout_event()
    payout["reconciliation_status"] = "in_progress"

    record(runtime, record_stripe_payout, payout, "payout.paid")
    assert fake_stripe.requests_to("GET", r"/v1/balance_transactions") == []
    token = make.staff_token(runtime, "finance")
    pending = api_payout(client, token, "po_test_Daily01")
    assert (pending["status"], pending["reconciliation"], pending["lines"]) == ("unreconciled", "pending", [])

    payout["reconciliation_status"] = "completed"
    record(runtime, record_stripe_payout, payout, "payout.reconciliation_completed")
    # Delivered again: nothing is fetched or changed twice.
    record(runtime, record_stripe_payout, payout, "payout.reconciliation_completed")
    assert len(fake_stripe.requests_to("GET", r"/v1/balance_transactions")) == 1
    assert api_payout(client, token, "po_test_Daily01")["status"] == "reconciled"


def test_every_page_of_a_large_stripe_payout_is_read(runtime: Runtime, fake_stripe: FakeProvider) -> None:
    donor = make.supporter(runtime)
    transactions = []
    for n in range(230):
        make.gift(runtime, donor, 500, stripe_charge_id=f"ch_page_{n:03d}")
        transactions.append(
            balance_transaction(f"txn_page_{n:03d}", 500, 20, {"id": f"ch_page_{n:03d}", "object": "charge"})
        )
    transactions.append(balance_transaction("txn_po", -230 * 480, 0, "po_big", category="payout"))
    serve_balance_transactions(fake_stripe, {"po_big": transactions})
    payout = {"id": "po_big", "amount": 230 * 480, "currency": "gbp", "status": "paid", "arrival_date": 1767225600}

    record(runtime, record_stripe_payout, payout, "payout.reconciliation_completed")

    assert len(fake_stripe.requests_to("GET", r"/v1/balance_transactions")) == 3
    with runtime.read_session() as session:
        row = session.exec(select(Payout).where(Payout.provider_payout_id == "po_big")).one()
        assert (row.reconciliation, row.discrepancy) == ("reconciled", 0)
        lines = session.exec(select(PayoutLine).where(PayoutLine.payout_id == row.id)).all()
        assert len(lines) == 460


def test_payout_that_arrives_before_its_gifts_is_matched_when_they_are_recorded(
    runtime: Runtime, client: TestClient, fake_stripe: FakeProvider
) -> None:
    serve_balance_transactions(fake_stripe, {"po_test_Daily01": expanded_fixture_transactions()})
    token = make.staff_token(runtime, "finance")

    record(runtime, record_stripe_payout, stripe_payout_event(), "payout.paid")
    early = api_payout(client, token, "po_test_Daily01")
    assert early["status"] == "unreconciled"
    assert early["discrepancy"]["amount"] == 0, "the lines add up; they are only unmatched"
    assert len(early["unmatched"]) == 7
    assert {line["kind"] for line in early["lines"]} == {"charge", "fee", "refund", "dispute"}
    assert all(
        not any(key in line for key in ("gift_id", "order_id", "refund_id", "dispute_id")) for line in early["lines"]
    )

    ids = stripe_money(runtime)
    record(runtime, on_money_recorded, ["ch_somewhere_else", "PM0OTHER"])
    assert api_payout(client, token, "po_test_Daily01")["status"] == "unreconciled", "no line waits for those"
    # The webhook processing says what it recorded (here: the instalment, known by its payment intent).
    record(runtime, on_money_recorded, ["pi_test_Renewal01"])

    late = api_payout(client, token, "po_test_Daily01")
    assert late["status"] == "reconciled" and late["unmatched"] == []
    assert late["lines"][0]["order_id"] == str(ids["order"])
    assert late["lines"][2]["gift_id"] == str(ids["instalment"])


def test_payout_that_does_not_add_up_is_unreconciled_with_its_discrepancy(
    runtime: Runtime, client: TestClient, fake_stripe: FakeProvider
) -> None:
    stripe_money(runtime)
    transactions = expanded_fixture_transactions()
    # A line the payout settles but the listing lost, and one we know nothing about.
    transactions = [row for row in transactions if row["id"] != "txn_test_2"]
    transactions.insert(0, balance_transaction("txn_stranger", 700, 30, {"id": "ch_unknown", "object": "charge"}))
    serve_balance_transactions(fake_stripe, {"po_test_Daily01": transactions})
    token = make.staff_token(runtime, "finance")

    record(runtime, record_stripe_payout, stripe_payout_event(), "payout.paid")

    body = api_payout(client, token, "po_test_Daily01")
    assert body["status"] == "unreconciled"
    # 392 paid; lines: 392 - 965 (missing instalment) + 670 (unknown charge) = 97.
    assert body["discrepancy"] == {"amount": 392 - 97, "currency": "GBP"}
    assert body["unmatched"] == ["txn_stranger", "txn_stranger:fee"]
    stranger = body["lines"][0]
    assert stranger["kind"] == "charge" and "gift_id" not in stranger and not stranger["matched"]


def test_rematching_changes_nothing_that_was_right(runtime: Runtime, fake_stripe: FakeProvider) -> None:
    stripe_money(runtime)
    serve_balance_transactions(fake_stripe, {"po_test_Daily01": expanded_fixture_transactions()})
    record(runtime, record_stripe_payout, stripe_payout_event(), "payout.paid")

    def snapshot() -> list[tuple[Any, ...]]:
        with runtime.read_session() as session:
            payout = session.exec(select(Payout)).one()
            lines = session.exec(select(PayoutLine).order_by(PayoutLine.provider_line_id)).all()
            return [
                (payout.reconciliation, payout.discrepancy, payout.reconciled_at, payout.updated_at),
                *((line.kind, line.gift_id, line.order_id, line.matched_at) for line in lines),
            ]

    before = snapshot()
    with runtime.unit_of_work() as uow:
        results = rematch(uow)
    assert [r.changed_lines for r in results] == [0]
    record(runtime, record_stripe_payout, stripe_payout_event(), "payout.paid")
    assert snapshot() == before


def gocardless_payout(amount: int) -> dict[str, Any]:
    payout = copy.deepcopy(fixture("gocardless/payout_with_items.constructed.json")["payouts"])
    payout.update({"id": "PO0TEST0002", "amount": amount, "currency": "GBP"})
    # The constructed payout carries a sample `fx` block (EUR): these payouts reach the bank in sterling.
    payout.pop("fx", None)
    return payout


def test_gocardless_payout_with_a_chargeback_a_late_failure_and_fees(
    runtime: Runtime, client: TestClient, fake_gocardless: FakeProvider
) -> None:
    donor = make.supporter(runtime)
    paid = [make.gift(runtime, donor, 1000, gocardless_payment_id=f"PM0PAID{n}") for n in range(3)]
    charged_back_gift = make.gift(runtime, donor, 1500, gocardless_payment_id="PM0CHARGEDBACK", status="reversed")
    failed_gift = make.gift(runtime, donor, 500, gocardless_payment_id="PM0LATEFAIL", status="reversed")
    chargeback = make.dispute(
        runtime, donor, 1500, gift_id=charged_back_gift, gocardless_payment_id="PM0CHARGEDBACK", kind="chargeback"
    )
    late_failure = make.dispute(
        runtime, donor, 500, gift_id=failed_gift, gocardless_payment_id="PM0LATEFAIL", kind="late_failure"
    )
    items = [
        *(
            {"type": "payment_paid_out", "amount": "1000.0", "links": {"payment": f"PM0PAID{n}"}, "taxes": []}
            for n in range(3)
        ),
        # Fees in tenths of a penny: 3 x 20.5 = 61.5; the payout total rounds once.
        *(
            {"type": "gocardless_fee", "amount": "-20.5", "links": {"payment": f"PM0PAID{n}"}, "taxes": []}
            for n in range(3)
        ),
        {"type": "payment_charged_back", "amount": "-1500.0", "links": {"payment": "PM0CHARGEDBACK"}, "taxes": []},
        {"type": "payment_failed", "amount": "-500.0", "links": {"payment": "PM0LATEFAIL"}, "taxes": []},
        {"type": "app_fee", "amount": "-10.0", "links": {"payment": "PM0PAID0"}, "taxes": []},
    ]
    # 3000 - 61.5 - 1500 - 500 - 10 = 928.5 -> 929 (half up, once).
    serve_gocardless_payout(fake_gocardless, gocardless_payout(929), items, page_size=4)
    token = make.staff_token(runtime, "finance")

    record(runtime, record_gocardless_payout, "PO0TEST0002", "paid")

    assert len(fake_gocardless.requests_to("GET", r"/payout_items")) == 3, "every page"
    body = api_payout(client, token, "PO0TEST0002")
    assert (body["provider"], body["status"], body["discrepancy"]["amount"]) == ("gocardless", "reconciled", 0)
    kinds = [(line["kind"], line["amount"]["amount"]) for line in body["lines"]]
    assert kinds[:3] == [("gift", 1000)] * 3
    assert sorted(amount for kind, amount in kinds[3:6]) == [-21, -20, -20], "whole pennies adding up to 61.5 rounded"
    assert kinds[6:] == [("chargeback", -1500), ("late_failure", -500), ("fee", -10)]
    assert sum(amount for _, amount in kinds) == 929
    assert [line["gift_id"] for line in body["lines"][:3]] == [str(g) for g in paid]
    assert body["lines"][3]["fee_for"] == "PM0PAID0" and body["lines"][3]["gift_id"] == str(paid[0])
    assert body["lines"][6]["dispute_id"] == str(chargeback) and body["lines"][6]["gift_id"] == str(charged_back_gift)
    assert body["lines"][7]["dispute_id"] == str(late_failure)
    assert body["lines"][3]["amount_exact"] == "-20.5"


def test_gocardless_items_that_settle_nothing_we_know_leave_the_payout_unreconciled(
    runtime: Runtime, client: TestClient, fake_gocardless: FakeProvider
) -> None:
    fixture_payout = fixture("gocardless/payout_with_items.constructed.json")
    serve_gocardless_payout(
        fake_gocardless, fixture_payout["payouts"], fixture_payout["payout_items_list"]["payout_items"]
    )
    token = make.staff_token(runtime, "finance")

    record(runtime, record_gocardless_payout, "PO0TEST0001", "paid")
    body = api_payout(client, token, "PO0TEST0001")
    assert (body["status"], body["discrepancy"]["amount"]) == ("unreconciled", 0)
    assert [line["kind"] for line in body["lines"]] == ["payment", "fee"]

    gift = make.gift(runtime, make.supporter(runtime), 1000, gocardless_payment_id="PM0TEST0001")
    record(runtime, on_money_recorded, ["PM0TEST0001"])
    body = api_payout(client, token, "PO0TEST0001")
    assert body["status"] == "reconciled"
    assert [line.get("gift_id") for line in body["lines"]] == [str(gift), str(gift)]


def test_payouts_api_needs_finance(runtime: Runtime, client: TestClient) -> None:
    assert client.get("/api/payouts").status_code == 401
    fundraiser = make.staff_token(runtime, "fundraiser")
    response = client.get("/api/payouts", headers={"Authorization": f"Bearer {fundraiser}"})
    assert response.status_code == 403
    assert response.json()["error"] == "Forbidden"
    admin = make.staff_token(runtime, "admin")
    missing = client.get("/api/payouts/po_nothing", headers={"Authorization": f"Bearer {admin}"})
    assert missing.status_code == 404


def test_payouts_list_is_newest_first_and_pages(runtime: Runtime, client: TestClient) -> None:
    import datetime as dt

    from payments.models import PayoutStatus, Provider
    from payments.payouts import upsert_payout

    with runtime.unit_of_work() as uow:
        for day in (3, 1, 2):
            upsert_payout(
                uow,
                Provider.STRIPE,
                f"po_day{day}",
                amount=100 * day,
                currency="gbp",
                status=PayoutStatus.PAID,
                arrival_date=dt.date(2026, 3, day),
            )
    token = make.staff_token(runtime, "finance")
    headers = {"Authorization": f"Bearer {token}"}
    every = client.get("/api/payouts", headers=headers).json()
    assert [p["provider_payout_id"] for p in every["items"]] == ["po_day3", "po_day2", "po_day1"]
    assert "next" not in every
    first = client.get("/api/payouts?limit=2", headers=headers).json()
    assert [p["provider_payout_id"] for p in first["items"]] == ["po_day3", "po_day2"]
    rest = client.get(first["next"], headers=headers).json()
    assert [p["provider_payout_id"] for p in rest["items"]] == ["po_day1"]
    assert client.get("/api/payouts?limit=0", headers=headers).status_code == 400


def test_a_late_created_snapshot_never_takes_a_paid_payout_back_to_pending(
    runtime: Runtime, fake_stripe: FakeProvider
) -> None:
    serve_balance_transactions(fake_stripe, {"po_test_Daily01": []})
    paid = stripe_payout_event()
    paid["reconciliation_status"] = "in_progress"
    record(runtime, record_stripe_payout, paid, "payout.paid")
    created = {**paid, "status": "pending"}
    record(runtime, record_stripe_payout, created, "payout.created")
    with runtime.read_session() as session:
        payout = session.exec(select(Payout)).one()
        assert payout.status == "paid" and payout.paid_at is not None
