"""Review of s14a: an instalment marked paid outside Stripe is paid at Stripe, and Stripe cannot void a paid
invoice. A stray `invoice.voided` (replayed, or from a test clock) processed after the payment changes nothing and
writes no `instalment_voided` item, as for a card payment; processed before it, the payment still wins: the gift
row ends the same (closed as paid outside Stripe) in either order."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from core.runtime import Runtime
from payments.models import GiftStatus, RegularGiftStatus
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import DAY, Scenario
from tests.webhooks.support import EventsWorker, app_client, catalogue, install, settings, stuck_events, worker
from tests.webhooks.test_s14a_invoice_outcomes import (
    _closed,
    _monthly_in_arrears,
    _paid_outside,
    _post,
    _start,
    _state,
    _types,
)

__all__ = ["app_client", "catalogue", "settings", "worker"]


@pytest.mark.parametrize("void_first", [False, True], ids=["paid-then-void", "void-then-paid"])
def test_a_stray_void_never_outranks_a_payment_outside_stripe(
    void_first: bool,
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter, subscription_id, failed = _monthly_in_arrears(scenario, "Stray Stan")
    invoice_id = failed["data"]["object"]["id"]
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker)
    paid = _paid_outside(scenario, failed)
    voided = _closed(failed, "invoice.voided", status="void", at=failed["created"] + 5 * DAY)
    _post(app_client, worker, *([voided, paid, voided] if void_first else [paid, voided, paid]))
    assert stuck_events(runtime) == []
    gift, regular, overdue, _ = _state(runtime, invoice_id, subscription_id)
    assert gift.status == GiftStatus.CANCELLED and "outside Stripe" in gift.failure_reason
    assert regular.status == RegularGiftStatus.ACTIVE and overdue == []
    types = _types(runtime, supporter)
    assert types.count("instalment_paid_outside_stripe") == 1
    # As for a card payment: a void processed first keeps its item, one processed after the payment writes none.
    assert types.count("instalment_voided") == (1 if void_first else 0)
