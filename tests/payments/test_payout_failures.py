"""Payouts whose money did not reach the bank: a Stripe payout that failed after it was paid, its money paid out
again in a later payout (a `payout_failure` balance transaction), a GoCardless payout that bounced, and `giving
reconcile --fetch` waiting for Stripe to finish a payout's reconciliation. Signed deliveries go through the real
endpoints and worker, the real SDKs talk to the fake provider servers, and results are read back through
`GET /api/payouts` and `giving reconcile`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import Settings
from payments.payouts import record_stripe_payout
from tests.fakes.provider_server import FakeProvider, RecordedRequest
from tests.fakes.scenarios import BASE_TIME, DAY, gocardless_event, unique
from tests.payments import factories_money as make
from tests.payments.payout_fakes import (
    balance_transaction,
    fixture,
    run_giving,
    serve_balance_transactions,
    serve_gocardless_payout,
)
from tests.payments.test_payouts import expanded_fixture_transactions, gocardless_payout, record, stripe_money
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    post_gocardless,
    post_stripe,
    settings,
    stuck_events,
    worker,
)

__all__ = ["app_client", "catalogue", "settings", "worker"]

FAILED_PAYOUT = "po_test_Daily01"  # the constructed payout: 392p, reconciled by `stripe_money`


def stripe_payout_event(event_type: str, created: int, **payout: Any) -> dict[str, Any]:
    """A `payout.*` event whose payout is the constructed one with `payout`'s fields."""
    event = fixture("stripe/event_payout_paid.constructed.json")
    event.update({"id": unique("evt_"), "type": event_type, "created": created})
    event["data"]["object"].update(payout)
    return dict(event)


def failed_event(payout_id: str = FAILED_PAYOUT) -> dict[str, Any]:
    return stripe_payout_event(
        "payout.failed",
        BASE_TIME + DAY,
        id=payout_id,
        status="failed",
        failure_code="account_closed",
        failure_message="The bank account has been closed",
    )


def deliver_stripe(client: TestClient, worker: EventsWorker, runtime: Runtime, event: dict[str, Any]) -> None:
    assert post_stripe(client, event).status_code == 200
    worker.join()
    assert stuck_events(runtime) == []


def deliver_gocardless(client: TestClient, worker: EventsWorker, runtime: Runtime, payout_id: str) -> None:
    """A `payouts` `paid` event (only ids, as GoCardless sends): processing fetches the payout as it is now."""
    event = gocardless_event("payouts", "paid", {"payout": payout_id}, created=BASE_TIME)
    assert post_gocardless(client, [event]).status_code == 200
    worker.join()
    assert stuck_events(runtime) == []


def read_payout(client: TestClient, runtime: Runtime, provider_payout_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the payout's item in `GET /api/payouts`, `GET /api/payouts/{id}`)."""
    headers = {"Authorization": f"Bearer {make.staff_token(runtime, 'finance')}"}
    listing = client.get("/api/payouts", headers=headers)
    assert listing.status_code == 200
    (summary,) = [p for p in listing.json()["items"] if p["provider_payout_id"] == provider_payout_id]
    detail = client.get(f"/api/payouts/{provider_payout_id}", headers=headers)
    assert detail.status_code == 200
    return summary, detail.json()


def state(body: dict[str, Any]) -> tuple[Any, ...]:
    return body["status"], body["reconciliation"], body["payout_status"], body["reconciled_at"] is not None


def giving_reconcile(args: list[str], settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    result = run_giving(["reconcile", "--json", *args], settings, monkeypatch, tmp_path)
    assert result.exit_code == 0, result.output
    return {item["provider_payout_id"]: item for item in json.loads(result.stdout)["items"]}


# ---------------------------------------------------------------------------------------------------------------------
# 1. A Stripe payout that failed after it was paid (and reconciled) reads unreconciled everywhere.
# ---------------------------------------------------------------------------------------------------------------------


def test_a_payout_that_failed_after_it_was_paid_and_reconciled_reads_unreconciled(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    stripe_money(runtime)
    serve_balance_transactions(fake_stripe, {FAILED_PAYOUT: expanded_fixture_transactions()})
    deliver_stripe(app_client, worker, runtime, stripe_payout_event("payout.paid", BASE_TIME))
    summary, detail = read_payout(app_client, runtime, FAILED_PAYOUT)
    assert state(summary) == state(detail) == ("reconciled", "reconciled", "paid", True)

    deliver_stripe(app_client, worker, runtime, failed_event())

    summary, detail = read_payout(app_client, runtime, FAILED_PAYOUT)
    # The money never reached the bank: whatever its lines say, the payout is not reconciled.
    assert state(summary) == state(detail) == ("unreconciled", "unreconciled", "failed", False)
    assert detail["unmatched"] == [] and detail["discrepancy"]["amount"] == 0, "its lines are still what it settled"
    cli = giving_reconcile([], settings, monkeypatch, tmp_path)[FAILED_PAYOUT]
    assert state(cli) == ("unreconciled", "unreconciled", "failed", False)
    assert state(read_payout(app_client, runtime, FAILED_PAYOUT)[1]) == state(detail), "re-matching agrees"


# ---------------------------------------------------------------------------------------------------------------------
# 2. Stripe pays a failed payout's money out again in a later payout: its `payout_failure` line settles the failure.
# ---------------------------------------------------------------------------------------------------------------------


def repaid_transactions(failed_payout_id: str, repaid_id: str) -> list[dict[str, Any]]:
    """A later payout: the failed payout's 392p back (Stripe's `payout_failure`), a new 10.00 gift, its own line."""
    return [
        balance_transaction(
            "txn_back",
            392,
            0,
            {"id": failed_payout_id, "object": "payout"},
            category="payout_reversal",
            bt_type="payout_failure",
        ),
        balance_transaction("txn_new_gift", 1000, 35, {"id": "ch_test_New01", "object": "charge"}),
        balance_transaction("txn_repaid", -1357, 0, repaid_id, category="payout"),
    ]


def test_a_later_payout_that_pays_out_a_failed_payouts_money_again_reconciles(
    runtime: Runtime, worker: EventsWorker, app_client: TestClient, fake_stripe: FakeProvider
) -> None:
    stripe_money(runtime)
    gift = make.gift(runtime, make.supporter(runtime), 1000, stripe_charge_id="ch_test_New01")
    serve_balance_transactions(
        fake_stripe,
        {FAILED_PAYOUT: expanded_fixture_transactions(), "po_repaid": repaid_transactions(FAILED_PAYOUT, "po_repaid")},
    )
    deliver_stripe(app_client, worker, runtime, stripe_payout_event("payout.paid", BASE_TIME))
    deliver_stripe(app_client, worker, runtime, failed_event())

    repaid = stripe_payout_event("payout.paid", BASE_TIME + 2 * DAY, id="po_repaid", amount=1357)
    deliver_stripe(app_client, worker, runtime, repaid)

    failed_summary, _ = read_payout(app_client, runtime, FAILED_PAYOUT)
    summary, body = read_payout(app_client, runtime, "po_repaid")
    assert (summary["status"], body["status"], body["reconciliation"]) == ("reconciled", "reconciled", "reconciled")
    assert body["discrepancy"]["amount"] == 0 and body["unmatched"] == []
    back, new_gift, fee = body["lines"]
    assert (back["kind"], back["amount"]["amount"], back["source_id"]) == ("payout_failure", 392, FAILED_PAYOUT)
    assert back["matched"] and back["failed_payout_id"] == failed_summary["id"]
    assert not any(key in back for key in ("gift_id", "order_id", "refund_id", "dispute_id"))
    assert (new_gift["kind"], new_gift["gift_id"], fee["kind"]) == ("gift", str(gift), "fee")


def test_a_payout_failure_line_stays_unmatched_until_the_failure_it_settles_is_recorded(
    runtime: Runtime, worker: EventsWorker, app_client: TestClient, fake_stripe: FakeProvider
) -> None:
    make.gift(runtime, make.supporter(runtime), 1000, stripe_charge_id="ch_test_New01")
    serve_balance_transactions(fake_stripe, {"po_repaid": repaid_transactions("po_gone", "po_repaid")})
    # We know `po_gone` only as paid (its reconciliation not finished yet): a paid payout's money is not back.
    paid = stripe_payout_event("payout.paid", BASE_TIME, id="po_gone", reconciliation_status="in_progress")
    deliver_stripe(app_client, worker, runtime, paid)
    deliver_stripe(
        app_client,
        worker,
        runtime,
        stripe_payout_event("payout.paid", BASE_TIME + 2 * DAY, id="po_repaid", amount=1357),
    )

    _, early = read_payout(app_client, runtime, "po_repaid")
    assert (early["status"], early["discrepancy"]["amount"], early["unmatched"]) == ("unreconciled", 0, ["txn_back"])
    assert early["lines"][0]["kind"] == "payout_failure" and "failed_payout_id" not in early["lines"][0]

    # Recording the failure matches the later payout that was waiting for it.
    deliver_stripe(app_client, worker, runtime, failed_event("po_gone"))

    gone, _ = read_payout(app_client, runtime, "po_gone")
    _, late = read_payout(app_client, runtime, "po_repaid")
    assert (late["status"], late["unmatched"]) == ("reconciled", [])
    assert late["lines"][0]["failed_payout_id"] == gone["id"]


# ---------------------------------------------------------------------------------------------------------------------
# 3. A GoCardless payout that bounced is failed; paid again, it is paid; a pending fetch never takes it back.
# ---------------------------------------------------------------------------------------------------------------------


def test_a_gocardless_payout_that_bounced_is_failed_until_it_is_paid_again(
    runtime: Runtime, worker: EventsWorker, app_client: TestClient, fake_gocardless: FakeProvider
) -> None:
    gift = make.gift(runtime, make.supporter(runtime), 1000, gocardless_payment_id="PM0BOUNCE1")
    items = [
        {"type": "payment_paid_out", "amount": "1000.0", "links": {"payment": "PM0BOUNCE1"}, "taxes": []},
        {"type": "gocardless_fee", "amount": "-42.0", "links": {"payment": "PM0BOUNCE1"}, "taxes": []},
    ]
    payout = gocardless_payout(958)

    def as_now(status: str) -> None:
        serve_gocardless_payout(fake_gocardless, {**payout, "status": status}, items)

    as_now("paid")
    deliver_gocardless(app_client, worker, runtime, payout["id"])
    summary, body = read_payout(app_client, runtime, payout["id"])
    assert state(summary) == ("reconciled", "reconciled", "paid", True)
    assert [line.get("gift_id") for line in body["lines"]] == [str(gift), str(gift)]

    # The bank rejected it; a `paid` event processed now fetches it as bounced (the fetch is the current state).
    as_now("bounced")
    deliver_gocardless(app_client, worker, runtime, payout["id"])
    summary, body = read_payout(app_client, runtime, payout["id"])
    assert state(summary) == state(body) == ("unreconciled", "unreconciled", "failed", False)

    as_now("paid")
    deliver_gocardless(app_client, worker, runtime, payout["id"])
    assert state(read_payout(app_client, runtime, payout["id"])[0]) == ("reconciled", "reconciled", "paid", True)

    # A pending read (a fetch racing GoCardless's own update) never takes a paid payout back.
    as_now("pending")
    deliver_gocardless(app_client, worker, runtime, payout["id"])
    assert state(read_payout(app_client, runtime, payout["id"])[0]) == ("reconciled", "reconciled", "paid", True)
    assert len(fake_gocardless.requests_to("GET", r"/payout_items")) == 1, "lines are loaded once"


def test_a_gocardless_payout_that_bounced_before_it_was_ever_paid_loads_its_lines_once_paid(
    runtime: Runtime, worker: EventsWorker, app_client: TestClient, fake_gocardless: FakeProvider
) -> None:
    make.gift(runtime, make.supporter(runtime), 1000, gocardless_payment_id="PM0BOUNCE2")
    items = [{"type": "payment_paid_out", "amount": "1000.0", "links": {"payment": "PM0BOUNCE2"}, "taxes": []}]
    payout = gocardless_payout(1000)
    serve_gocardless_payout(fake_gocardless, {**payout, "status": "bounced"}, items)
    deliver_gocardless(app_client, worker, runtime, payout["id"])
    summary, body = read_payout(app_client, runtime, payout["id"])
    assert state(summary) == ("unreconciled", "unreconciled", "failed", False)
    assert body["lines"] == [] and fake_gocardless.requests_to("GET", r"/payout_items") == []

    serve_gocardless_payout(fake_gocardless, {**payout, "status": "paid"}, items)
    deliver_gocardless(app_client, worker, runtime, payout["id"])
    summary, body = read_payout(app_client, runtime, payout["id"])
    assert state(summary) == ("reconciled", "reconciled", "paid", True)
    assert [line["kind"] for line in body["lines"]] == ["gift"]


# ---------------------------------------------------------------------------------------------------------------------
# 4. `giving reconcile --fetch` loads a Stripe payout's lines only once Stripe has completed its reconciliation.
# ---------------------------------------------------------------------------------------------------------------------


def test_reconcile_fetch_loads_a_stripe_payouts_lines_only_once_its_reconciliation_is_complete(
    runtime: Runtime,
    fake_stripe: FakeProvider,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    stripe_money(runtime)
    serve_balance_transactions(fake_stripe, {FAILED_PAYOUT: expanded_fixture_transactions()})
    payout = stripe_payout_event("payout.paid", BASE_TIME, reconciliation_status="in_progress")["data"]["object"]
    record(runtime, record_stripe_payout, payout, "payout.paid")  # its `reconciliation_completed` never arrives
    stripe_side = {**payout}

    def retrieve(request: RecordedRequest) -> tuple[int, Any]:
        return 200, stripe_side

    fake_stripe.route("GET", rf"/v1/payouts/{FAILED_PAYOUT}", retrieve)

    early = giving_reconcile(["--fetch"], settings, monkeypatch, tmp_path)[FAILED_PAYOUT]
    assert len(fake_stripe.requests_to("GET", rf"/v1/payouts/{FAILED_PAYOUT}")) == 1
    assert fake_stripe.requests_to("GET", r"/v1/balance_transactions") == [], "Stripe's list is not final yet"
    assert state(early) == ("unreconciled", "pending", "paid", False)

    stripe_side["reconciliation_status"] = "completed"
    late = giving_reconcile(["--fetch"], settings, monkeypatch, tmp_path)[FAILED_PAYOUT]
    assert len(fake_stripe.requests_to("GET", r"/v1/balance_transactions")) == 1
    assert state(late) == ("reconciled", "reconciled", "paid", True) and late["unmatched_lines"] == 0

    giving_reconcile(["--fetch"], settings, monkeypatch, tmp_path)
    assert len(fake_stripe.requests_to("GET", rf"/v1/payouts/{FAILED_PAYOUT}")) == 2, "loaded: nothing to fetch"
    assert len(fake_stripe.requests_to("GET", r"/v1/balance_transactions")) == 1
