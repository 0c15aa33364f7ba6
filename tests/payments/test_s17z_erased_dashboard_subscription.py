"""A subscription staff made in the provider's dashboard for a supporter whose data was erased (its webhook arrives
after the erasure): it is adopted as a regular gift stopped at once, through the cancellation erasures use, and
nothing personal is recorded. Real signed webhooks, real SDKs, the fake providers; SQLite and PostgreSQL."""

from __future__ import annotations

import copy

import dramatiq
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from giving import privacy
from payments.models import RegularGift, RegularGiftStatus
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import BASE_TIME, DAY, Scenario, seed_supporter
from tests.payments.test_erased_checkouts import assert_no_words, erase
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    deliver,
    drain,
    install,
    jobs_worker,
    post_gocardless,
    post_stripe,
    reading,
    settings,
    worker,
)
from tests.webhooks.test_s13k_recurring_payments import (
    _dashboard_events,
    _dashboard_subscription,
    _stripe_dashboard_subscription,
)

__all__ = ["app_client", "catalogue", "jobs_worker", "settings", "worker"]


def test_stripe_dashboard_subscription_of_an_erased_supporter_is_cancelled_at_once(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Dashboard Erin")
    ours = scenario.stripe_monthly(supporter, 1500, paid=1)
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    drain(runtime, worker, jobs_worker)
    with reading(runtime) as session:
        customer = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == ours)).one()
    assert customer.stripe_customer_id
    # Staff add a subscription in the Stripe dashboard; its event reaches us after the supporter's erasure.
    extra, _ = _stripe_dashboard_subscription(scenario, customer.stripe_customer_id, 700)
    erase(runtime, supporter)
    created = scenario._stripe(
        "customer.subscription.created", copy.deepcopy(scenario.stripe.subscriptions[extra]), created=BASE_TIME + DAY
    )
    assert post_stripe(app_client, created).status_code == 200
    drain(runtime, worker, jobs_worker)

    with reading(runtime) as session:
        regular = session.exec(select(RegularGift).where(RegularGift.stripe_subscription_id == extra)).one()
    assert regular.status == RegularGiftStatus.CANCELLED
    assert regular.cancel_requested_by == privacy.ERASURE_REQUEST
    assert len(fake_stripe.requests_to("DELETE", rf"/v1/subscriptions/{extra}")) == 1
    assert scenario.stripe.subscriptions[extra]["status"] == "canceled"
    assert regular.donor == {}
    assert_no_words(runtime, supporter)


def test_gocardless_dashboard_subscription_of_an_erased_supporter_is_cancelled_at_once(
    runtime: Runtime,
    worker: EventsWorker,
    jobs_worker: dramatiq.Worker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Dashboard Dana")
    ours = scenario.gocardless_monthly(supporter, 1000, payments=("paid_out",))
    mandate_id = scenario.gocardless.subscriptions[ours]["links"]["mandate"]
    extra, payment_id = _dashboard_subscription(scenario, mandate_id, 500, "2026-02-16")
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    drain(runtime, worker, jobs_worker)
    # The dashboard subscription's events reach us only after the supporter's erasure.
    erase(runtime, supporter)
    events = _dashboard_events(extra, payment_id, mandate_id, payment_first=False)[:1]
    assert post_gocardless(app_client, events).status_code == 200
    drain(runtime, worker, jobs_worker)

    with reading(runtime) as session:
        regular = session.exec(select(RegularGift).where(RegularGift.gocardless_subscription_id == extra)).one()
    assert regular.status == RegularGiftStatus.CANCELLED
    assert regular.cancel_requested_by == privacy.ERASURE_REQUEST
    # Asked at least once: the erasure's own job (ending what the supporter still has running) may run beside the
    # adoption's cancellation and ask too; GoCardless answers the second as already cancelled.
    assert len(fake_gocardless.requests_to("POST", rf"/subscriptions/{extra}/actions/cancel")) >= 1
    assert scenario.gocardless.subscriptions[extra]["status"] == "cancelled"
    assert regular.donor == {}
    assert_no_words(runtime, supporter)
