"""A shop basket paid after its supporter's data was erased (found in review): the erasure left no address to post
the shirts to, yet the order was an ordinary paid order, on the packing list and fulfillable. Now the money is
recorded as before (it is real and must reconcile), but the order is held: it says it has no address, it is left
off the packing list, marking it posted is refused, and a review item asks staff to refund it."""

from __future__ import annotations

import uuid

import dramatiq
import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from crm.models import ReviewItem
from giving import privacy
from payments import shop
from payments.models import Order
from payments.shop import OrderNotFulfillable
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Scenario, seed_supporter
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    deliver,
    drain,
    install,
    jobs_worker,
    reading,
    settings,
    worker,
)

__all__ = ["app_client", "catalogue", "jobs_worker", "settings", "worker"]


def _order(runtime: Runtime, session_id: str) -> Order:
    with reading(runtime) as session:
        return session.exec(select(Order).where(Order.stripe_checkout_session_id == session_id)).one()


def test_a_basket_paid_after_the_erasure_is_held_for_want_of_an_address(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    supporter = seed_supporter(runtime, "Vera")
    scenario = Scenario(runtime)
    session_id = scenario.shop_basket(supporter, quantity=2, donation=500)
    install(scenario, fake_stripe, fake_gocardless)
    with runtime.unit_of_work() as uow:
        privacy.erase_supporter(uow, runtime.settings, supporter)
    # The donor paid a moment before the erasure closed the page: Stripe's completion arrives now.
    deliver(app_client, scenario.deliveries)
    drain(runtime, worker, jobs_worker)

    order = _order(runtime, session_id)
    assert order.status == "paid"  # the money is recorded: it is real and must reconcile
    with reading(runtime) as session:
        body = shop.order_json(session, order)
        packing = shop.list_orders(session, unfulfilled=True)
        items = session.exec(select(ReviewItem).where(ReviewItem.supporter_id == supporter)).all()
    assert (body["held"], body["fulfilled"]) == ("no_address", False)
    assert str(order.id) not in [item["id"] for item in packing]
    assert [(item.kind, item.data.get("order_id"), item.resolved_at) for item in items] == [
        ("order_needs_address", str(order.id), None)
    ]
    assert "erased" in items[0].detail and "Refund it at Stripe" in items[0].detail
    with pytest.raises(OrderNotFulfillable, match="no address"), runtime.unit_of_work() as uow:
        shop.mark_fulfilled(uow, order.id)
    assert _order(runtime, session_id).fulfilled_at is None

    # Delivered again: one review item still.
    deliver(app_client, scenario.deliveries[:1])
    drain(runtime, worker, jobs_worker)
    with reading(runtime) as session:
        assert len(session.exec(select(ReviewItem).where(ReviewItem.supporter_id == supporter)).all()) == 1


def test_an_ordinary_paid_basket_is_not_held(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    supporter = seed_supporter(runtime, "Wren")
    scenario = Scenario(runtime)
    session_id = scenario.shop_basket(supporter, quantity=1, donation=0)
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    worker.join()
    order = _order(runtime, session_id)
    with reading(runtime) as session:
        assert shop.order_json(session, order)["held"] is None
        assert str(order.id) in [item["id"] for item in shop.list_orders(session, unfulfilled=True)]
    with runtime.unit_of_work() as uow:
        assert shop.mark_fulfilled(uow, uuid.UUID(str(order.id))).fulfilled_at is not None


def test_a_basket_paid_but_not_posted_when_the_erasure_came_is_held_with_a_review_item(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """Paid before the erasure, not posted yet: the erasure takes the address, so the shirts cannot go. The order is
    held as one paid after it, and the erasure raises the same review item (once, however often it is erased)."""
    supporter = seed_supporter(runtime, "Vera")
    scenario = Scenario(runtime)
    session_id = scenario.shop_basket(supporter, quantity=1, donation=0)
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    drain(runtime, worker, jobs_worker)
    order = _order(runtime, session_id)
    assert order.status == "paid" and order.fulfilled_at is None
    with reading(runtime) as session:
        assert session.exec(select(ReviewItem).where(ReviewItem.supporter_id == supporter)).all() == []

    for _ in range(2):
        with runtime.unit_of_work() as uow:
            result = privacy.erase_supporter(uow, runtime.settings, supporter)
    with reading(runtime) as session:
        body = shop.order_json(session, _order(runtime, session_id))
        items = session.exec(select(ReviewItem).where(ReviewItem.supporter_id == supporter)).all()
    assert body["held"] == "no_address"
    assert [(item.kind, item.data.get("order_id")) for item in items] == [("order_needs_address", str(order.id))]
    assert "not posted when the supporter's data was erased" in items[0].detail
    assert result.changed.get("orders_held") == 1
