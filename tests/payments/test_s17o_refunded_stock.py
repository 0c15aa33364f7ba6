"""Shirts of a basket refunded in full before it was posted never left: they go back into stock, exactly once
whatever the order of the refund events and however often they arrive; a refund that failed after succeeding takes
them again; a return of the same shirts recorded later gives nothing back twice; a basket posted before its refund
gives nothing back without a return. An erasure holds (and asks staff to refund) only baskets whose goods are not
refunded already. A real basket through POST /shop/checkout, signed Stripe webhooks, the fake Stripe."""

from __future__ import annotations

import copy
import random

from sqlmodel import select

from core.runtime import Runtime
from crm.models import ReviewItem
from giving import privacy
from payments.models import Order, Sku
from tests.payments import factories_money as make
from tests.payments.test_basket_refund_fixes import Basket, auth, basket, settings
from tests.webhooks.support import EventsWorker, app_client, catalogue, deliver, install, reading, worker

__all__ = ["app_client", "basket", "catalogue", "settings", "worker"]

SKU = "TEE-LMHR-M"


def stock(runtime: Runtime) -> int:
    with reading(runtime) as session:
        return session.exec(select(Sku).where(Sku.sku == SKU)).one().stock


def returns(basket: Basket, quantity: int) -> int:
    token = make.staff_token(basket.runtime, "fundraiser")
    response = basket.client.post(
        f"/api/orders/{basket.order_id}/returns",
        json={"lines": [{"sku": SKU, "quantity": quantity}]},
        headers=auth(token),
    )
    return response.status_code


def test_shirts_of_a_basket_refunded_in_full_before_posting_go_back_into_stock_once(
    basket: Basket, worker: EventsWorker
) -> None:
    before = stock(basket.runtime)
    basket.buy({SKU: "2"}, donation="5")
    basket.deliver(worker)
    assert stock(basket.runtime) == before - 2
    basket.refund(1800)  # half the goods: a goodwill refund, the shirts are kept
    basket.deliver(worker)
    assert stock(basket.runtime) == before - 2
    basket.refund(1800)  # all the goods (the donation kept): nothing sold, the shirts never left
    basket.deliver(worker)
    assert stock(basket.runtime) == before
    # A return of the same shirts recorded afterwards is kept, and gives nothing back twice.
    assert returns(basket, 2) == 200
    assert stock(basket.runtime) == before
    with reading(basket.runtime) as session:
        order = session.get(Order, basket.order_id)
        assert order is not None and order.status == "partially_refunded"


def test_refund_events_in_any_order_and_delivered_again_give_the_shirts_back_once(
    basket: Basket, worker: EventsWorker
) -> None:
    before = stock(basket.runtime)
    basket.buy({SKU: "3"})
    basket.deliver(worker)
    assert stock(basket.runtime) == before - 3
    basket.refund(1800)
    basket.refund(3600)
    deliveries = list(basket.scenario.deliveries)
    install(basket.scenario, basket.fake_stripe, basket.fake_gocardless)
    deliver(basket.client, deliveries, rng=random.Random(7))
    worker.join()
    assert stock(basket.runtime) == before
    deliver(basket.client, list(reversed(deliveries)))
    worker.join()
    assert stock(basket.runtime) == before


def test_a_refund_that_failed_after_succeeding_takes_the_shirts_again(basket: Basket, worker: EventsWorker) -> None:
    before = stock(basket.runtime)
    basket.buy({SKU: "2"})
    basket.deliver(worker)
    refund = basket.refund(3600)
    basket.deliver(worker)
    assert stock(basket.runtime) == before
    refund["status"] = "failed"  # the buyer's bank sent it back: the sale stands again
    basket.scenario._stripe("refund.updated", copy.deepcopy(refund))
    basket.deliver(worker)
    with reading(basket.runtime) as session:
        order = session.get(Order, basket.order_id)
        assert order is not None and order.status == "paid"
    assert stock(basket.runtime) == before - 2


def test_a_basket_posted_before_its_refund_gives_nothing_back_without_a_return(
    basket: Basket, worker: EventsWorker
) -> None:
    before = stock(basket.runtime)
    basket.buy({SKU: "2"})
    basket.deliver(worker)
    token = make.staff_token(basket.runtime, "fundraiser")
    posted = basket.client.post(f"/api/orders/{basket.order_id}/fulfil", headers=auth(token))
    assert posted.status_code == 200, posted.text
    basket.refund(3600)
    basket.deliver(worker)
    assert stock(basket.runtime) == before - 2
    assert returns(basket, 2) == 200  # the shirts came back by post
    assert stock(basket.runtime) == before


def test_an_erasure_does_not_ask_staff_to_refund_a_basket_whose_goods_are_refunded_already(
    basket: Basket, worker: EventsWorker
) -> None:
    basket.buy({SKU: "1"}, donation="5")
    basket.deliver(worker)
    basket.refund(1800)  # the shirt refunded; the donation kept
    basket.deliver(worker)
    with basket.runtime.unit_of_work() as uow:
        result = privacy.erase_supporter(uow, basket.runtime.settings, basket.supporter_id)
    assert "orders_held" not in result.changed
    with reading(basket.runtime) as session:
        items = session.exec(select(ReviewItem)).all()
    assert [item for item in items if str(basket.order_id) in str(item.data)] == []
