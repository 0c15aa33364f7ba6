"""A monthly Direct Debit on Bacs: GoCardless refuses a `subscription_request` in the billing request (it supports one
only for ACH and PAD), so the billing request sets up the mandate only and our code creates the subscription on
`billing_requests.fulfilled`. A fulfilled billing request that did link a subscription (an older checkout's) is still
taken as it is."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import GoCardlessSettings
from giving.demo.world import GoCardlessWorld as DemoGoCardless
from payments.errors import ProviderRefused
from payments.models import Checkout, RegularGift
from payments.providers.gocardless import GoCardlessGateway
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Scenario, seed_supporter
from tests.payments.checkout_support import donate
from tests.webhooks.support import (
    EventsWorker,
    actual_ledger,
    app_client,
    catalogue,
    deliver,
    install,
    post_gocardless,
    reading,
    settings,
    stuck_events,
    worker,
)

__all__ = ["app_client", "catalogue", "settings", "worker"]

BACS_WITH_SUBSCRIPTION = {
    "mandate_request": {"currency": "GBP", "scheme": "bacs", "metadata": {"checkout_id": "c"}},
    "subscription_request": {"amount": 800, "currency": "GBP", "interval_unit": "monthly", "name": "Monthly donation"},
    "metadata": {"checkout_id": "c"},
}


@pytest.fixture
def demo_gocardless() -> Iterator[FakeProvider]:
    """The demo's stand-in for GoCardless (giving/demo/world.py) on its own server."""
    server = FakeProvider().start()
    DemoGoCardless(server)
    yield server
    server.stop()


@pytest.mark.parametrize("which", ["fake_gocardless", "demo_gocardless"])
def test_both_fakes_refuse_a_subscription_request_on_bacs_as_gocardless_does(
    request: pytest.FixtureRequest, which: str
) -> None:
    server: FakeProvider = request.getfixturevalue(which)
    server.route("POST", r"/billing_requests", lambda r: (201, {"billing_requests": {"id": "BRQ1"}}))
    gateway = GoCardlessGateway(GoCardlessSettings(access_token="gc_test", base_url=server.url))

    with pytest.raises(ProviderRefused) as refused:
        gateway.create_billing_request(BACS_WITH_SUBSCRIPTION, idempotency_key="k1")

    assert "subscription_request" in str(refused.value)
    # The mandate alone is accepted.
    plain = {key: value for key, value in BACS_WITH_SUBSCRIPTION.items() if key != "subscription_request"}
    assert gateway.create_billing_request(plain, idempotency_key="k2")["id"]


def fulfilled_event(world: DemoGoCardless, request_id: str) -> dict[str, Any]:
    links = world.billing_request(request_id)["links"]
    at = dt.datetime(2026, 3, 2, 10, tzinfo=dt.UTC)
    return world.event("billing_requests", "fulfilled", {"billing_request": request_id, **links}, at, origin="api")


def test_a_monthly_direct_debit_form_ends_in_the_subscription_our_code_creates(
    runtime: Runtime, worker: EventsWorker, app_client: TestClient, fake_gocardless: FakeProvider
) -> None:
    world = DemoGoCardless(fake_gocardless)  # a stateful GoCardless behind the real SDK, with GoCardless's rules

    response = donate(app_client, method="direct_debit", frequency="monthly", amount="8")

    assert response.status_code == 303, response.text
    [request_id] = world.billing_requests
    assert world.billing_request(request_id)["subscription_request"] is None
    world.fulfil(request_id, dt.datetime(2026, 3, 2, 10, tzinfo=dt.UTC), first_charge=dt.date(2026, 3, 9))
    # The event, then another for the same billing request: one subscription all the same.
    for _ in range(2):
        assert post_gocardless(app_client, [fulfilled_event(world, request_id)]).status_code == 200
        worker.join()

    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        checkout = session.exec(select(Checkout)).one()
        regular = session.exec(select(RegularGift)).one()
    [subscription] = world.subscriptions.values()
    assert subscription["amount"] == 800
    assert subscription["metadata"]["checkout_id"] == str(checkout.id)
    assert subscription["start_date"] == "2026-03-09"  # the mandate's first possible charge date
    keys = {r.headers["idempotency-key"] for r in fake_gocardless.requests_to("POST", r"/subscriptions")}
    assert keys == {f"checkout:{checkout.id}:subscription"}
    assert checkout.status == "completed"
    assert (regular.gocardless_subscription_id, regular.amount, regular.checkout_id) == (
        subscription["id"],
        800,
        checkout.id,
    )
    assert regular.gocardless_mandate_id == subscription["links"]["mandate"]


def test_an_older_billing_request_that_linked_its_subscription_is_still_accepted(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Ola")
    subscription_id = scenario.gocardless_monthly(supporter, 1100, payments=("paid_out",), subscription_request=True)
    install(scenario, fake_stripe, fake_gocardless)

    deliver(app_client, scenario.deliveries)
    worker.join()

    assert stuck_events(runtime) == []
    assert actual_ledger(runtime, scenario.expected) == scenario.expected
    assert fake_gocardless.requests_to("POST", r"/subscriptions") == []  # the linked one is taken, none created
    with reading(runtime) as session:
        regular = session.exec(select(RegularGift)).one()
    assert (regular.gocardless_subscription_id, regular.amount) == (subscription_id, 1100)
