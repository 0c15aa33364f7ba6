"""A Direct Debit payment GoCardless retried that failed again (found in review, h11): the second failure's history
item was dropped as a repeat of the first (one item per payment), so the supporter's history said only "GoCardless
will retry" for a payment that had failed for good, and the gift and the plan kept the first attempt's bank reason.
Each failure is its own item (as each Stripe invoice attempt is), and the latest failure's reason stands, whatever
order the two failures are processed in and however often they are delivered."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from payments.models import Gift, GiftStatus, RegularGift, RegularGiftStatus
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import BASE_TIME, DAY, Scenario, fixture, gocardless_event, seed_supporter, unique
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    deliver,
    history,
    install,
    post_gocardless,
    reading,
    settings,
    stuck_events,
    worker,
)

__all__ = ["app_client", "catalogue", "settings", "worker"]

FIRST = "The customer's account had insufficient funds. (ARUDD-0)"
FINAL = "The customer's bank asked us to refer to the payer. (ARUDD-B)"


def _failed(payment_id: str, *, days: int, description: str, code: str, retry: bool) -> dict[str, Any]:
    return gocardless_event(
        "payments",
        "failed",
        {"payment": payment_id},
        created=BASE_TIME + days * DAY,
        origin="bank",
        cause="insufficient_funds" if retry else "refer_to_payer",
        reason_code=code,
        description=description,
        will_attempt_retry=retry,
    )


@pytest.mark.parametrize("order", ["as_they_happened", "final_failure_first"])
def test_a_retried_payment_that_failed_again_says_so(
    order: str,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Retry Rosa")
    subscription_id = scenario.gocardless_monthly(supporter, 1000, payments=())
    mandate_id = scenario.gocardless.subscriptions[subscription_id]["links"]["mandate"]
    payment_id = unique("PM")
    payment = copy.deepcopy(fixture("gocardless/payments.gocardless-pro-python.json")["get"]["body"]["payments"])
    payment.update(
        {
            "id": payment_id,
            "amount": 1000,
            "currency": "GBP",
            "status": "failed",
            "charge_date": "2026-01-05",
            "links": {"mandate": mandate_id, "subscription": subscription_id},
        }
    )
    scenario.gocardless.payments[payment_id] = payment
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    worker.join()

    first = _failed(
        payment_id, days=1, description="The customer's account had insufficient funds.", code="ARUDD-0", retry=True
    )
    final = _failed(
        payment_id,
        days=9,
        description="The customer's bank asked us to refer to the payer.",
        code="ARUDD-B",
        retry=False,
    )
    if order == "as_they_happened":
        assert post_gocardless(app_client, [first]).status_code == 200
        worker.join()
        payment.update(status="pending_submission", charge_date="2026-01-12")
        resubmitted = gocardless_event(
            "payments", "resubmission_requested", {"payment": payment_id}, created=BASE_TIME + 2 * DAY
        )
        assert post_gocardless(app_client, [resubmitted]).status_code == 200
        worker.join()
        payment["status"] = "failed"
        assert post_gocardless(app_client, [final]).status_code == 200
    else:  # the first failure's delivery was delayed until after the retry had failed too
        payment.update(status="failed", charge_date="2026-01-12")
        assert post_gocardless(app_client, [final]).status_code == 200
        worker.join()
        assert post_gocardless(app_client, [first]).status_code == 200
    worker.join()
    assert post_gocardless(app_client, [first, final]).status_code == 200  # GoCardless delivers both again
    worker.join()
    assert stuck_events(runtime) == []

    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.gocardless_payment_id == payment_id)).one()
        regular = session.exec(
            select(RegularGift).where(RegularGift.gocardless_subscription_id == subscription_id)
        ).one()
    assert (gift.status, gift.failure_reason) == (GiftStatus.FAILED, FINAL)
    assert (regular.status, regular.failure_reason) == (RegularGiftStatus.IN_ARREARS, FINAL)
    failures = [item["summary"] for item in history(runtime, supporter) if item["type"] == "payment_failed"]
    assert failures == [
        f"Payment of £10.00 failed: {FIRST} (GoCardless will retry)",
        f"Payment of £10.00 failed: {FINAL}",
    ]
