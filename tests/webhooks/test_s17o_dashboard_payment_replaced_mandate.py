"""A payment staff took in the GoCardless dashboard on a monthly donor's mandate, processed after GoCardless replaced
that mandate (`mandates.replaced`, `links.new_mandate`) and our regular gift moved to the new one: it is the donor's
gift at once, as on any mandate of theirs, found by following the replacement as `sync_gocardless_mandate` does.
Found in review: the owner lookup did not follow replacements, so the payment's events waited a week and gave up.
Signed webhooks through the real endpoint, the fake GoCardless; SQLite and PostgreSQL."""

from __future__ import annotations

import copy

from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from payments.models import Gift, GiftStatus, RegularGift
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import BASE_TIME, DAY, Scenario, fixture, gocardless_event, seed_supporter, unique
from tests.webhooks.support import (
    EventsWorker,
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


def test_a_dashboard_payment_on_a_replaced_mandate_is_the_donors_gift_at_once(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Replaced Rhea")
    # No instalment collected yet: no gift of ours names the old mandate.
    ours = scenario.gocardless_monthly(supporter, 1000, payments=())
    old_mandate = scenario.gocardless.subscriptions[ours]["links"]["mandate"]
    new_mandate = unique("MD")
    scenario.gocardless.mandates[new_mandate] = {
        **copy.deepcopy(scenario.gocardless.mandates[old_mandate]),
        "id": new_mandate,
        "status": "active",
    }
    scenario.gocardless.mandates[old_mandate].update(
        status="cancelled", links={**scenario.gocardless.mandates[old_mandate]["links"], "new_mandate": new_mandate}
    )
    scenario.gocardless.subscriptions[ours]["links"]["mandate"] = new_mandate
    # Staff took an extra gift on the mandate before it was replaced.
    payment_id = unique("PM")
    payment = copy.deepcopy(fixture("gocardless/payments.gocardless-pro-python.json")["get"]["body"]["payments"])
    payment.update(
        {
            "id": payment_id,
            "amount": 2000,
            "currency": "GBP",
            "status": "confirmed",
            "charge_date": "2026-01-20",
            "metadata": {},
            "links": {"mandate": old_mandate},
        }
    )
    scenario.gocardless.payments[payment_id] = payment
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    replaced = gocardless_event(
        "mandates", "replaced", {"mandate": old_mandate, "new_mandate": new_mandate}, created=BASE_TIME + 10 * DAY
    )
    assert post_gocardless(app_client, [replaced]).status_code == 200
    worker.join()
    with reading(runtime) as session:
        regular = session.exec(select(RegularGift).where(RegularGift.gocardless_subscription_id == ours)).one()
    assert regular.gocardless_mandate_id == new_mandate

    confirmed = gocardless_event("payments", "confirmed", {"payment": payment_id}, created=BASE_TIME + 14 * DAY)
    assert post_gocardless(app_client, [confirmed]).status_code == 200
    worker.join()

    assert stuck_events(runtime) == []
    with reading(runtime) as session:
        gift = session.exec(select(Gift).where(Gift.gocardless_payment_id == payment_id)).one()
    assert (gift.supporter_id, gift.status, gift.amount, gift.regular_gift_id) == (
        supporter,
        GiftStatus.PAID,
        2000,
        None,
    )
    assert gift.gocardless_mandate_id == old_mandate


def test_a_dashboard_payment_on_a_mandate_of_nobody_we_know_still_waits(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    """Replaced by a mandate none of our gifts is on either: not ours (yet), so it waits as before."""
    scenario = Scenario(runtime)
    stranger, replacement = unique("MD"), unique("MD")
    mandate = copy.deepcopy(fixture("gocardless/mandates.gocardless-pro-python.json")["get"]["body"]["mandates"])
    scenario.gocardless.mandates[stranger] = {
        **mandate,
        "id": stranger,
        "status": "cancelled",
        "links": {"new_mandate": replacement},
    }
    scenario.gocardless.mandates[replacement] = {**mandate, "id": replacement, "status": "active", "links": {}}
    payment_id = unique("PM")
    payment = copy.deepcopy(fixture("gocardless/payments.gocardless-pro-python.json")["get"]["body"]["payments"])
    payment.update({"id": payment_id, "status": "confirmed", "metadata": {}, "links": {"mandate": stranger}})
    scenario.gocardless.payments[payment_id] = payment
    install(scenario, fake_stripe, fake_gocardless)
    confirmed = gocardless_event("payments", "confirmed", {"payment": payment_id}, created=BASE_TIME + 14 * DAY)
    assert post_gocardless(app_client, [confirmed]).status_code == 200
    worker.join()
    [(_, status, waiting_for, _)] = stuck_events(runtime)
    assert (status, waiting_for) == ("waiting", f"gocardless_mandate:{stranger}")
    with reading(runtime) as session:
        assert session.exec(select(Gift).where(Gift.gocardless_payment_id == payment_id)).all() == []
