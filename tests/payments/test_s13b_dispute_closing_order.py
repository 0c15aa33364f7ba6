"""A dispute decided once but reported by two closing events (`charge.dispute.closed` sent twice with different
`created`, or a `charge.dispute.created` already decided and a `charge.dispute.closed`): the closing history item
is dated by the earliest of them, whatever order they are processed in (found in review). `closed_at` already took
the earliest; the history item kept the time of whichever closing event was processed first."""

from __future__ import annotations

import copy
import datetime as dt

import pytest
from starlette.testclient import TestClient

from core.runtime import Runtime
from payments.models import DisputeStatus
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Scenario, seed_supporter, stripe_event
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    deliver,
    history,
    install,
    post_stripe,
    settings,
    stuck_events,
    worker,
)
from tests.webhooks.test_s12_dispute_history_dates import closing_items, utc_of

__all__ = ["app_client", "catalogue", "settings", "worker"]


@pytest.mark.parametrize("outcome", ["lost", "won"])
def test_two_closing_events_of_one_decision_date_the_history_item_by_the_earlier_whatever_the_order(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
    outcome: str,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Wilma")
    scenario.one_off_card_gift(supporter, 2500, dispute=outcome, with_payment_intent_event=False)
    install(scenario, fake_stripe, fake_gocardless)
    dispute_id = next(iter(scenario.stripe.disputes))
    closing = next(d.event for d in scenario.deliveries if d.event["type"] == "charge.dispute.closed")
    # The same decision reported again an hour later (a second `charge.dispute.closed`, its own id and `created`).
    again = stripe_event(
        "charge.dispute.closed", copy.deepcopy(scenario.stripe.disputes[dispute_id]), created=scenario.tick(3_600)
    )
    others = [d for d in scenario.deliveries if d.event["id"] != closing["id"]]
    deliver(app_client, others)
    worker.join()
    for event in [again, closing]:  # the later one is processed first
        assert post_stripe(app_client, event).status_code == 200
        worker.join()
    assert stuck_events(runtime) == []

    row, dates = closing_items(runtime, dispute_id, outcome)
    assert (row.status, row.closed_at) == (DisputeStatus(outcome), utc_of(closing["created"]))
    assert dates == [utc_of(closing["created"])]
    disputes = [i for i in history(runtime, supporter) if i["type"] == "dispute"]
    assert len(disputes) == 2
    assert sorted(i["amount"] for i in disputes) == ([-2500, 2500] if outcome == "lost" else [0, 2500])


def test_a_later_closing_event_processed_last_leaves_the_earlier_date(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Xavier")
    scenario.one_off_card_gift(supporter, 2500, dispute="lost", with_payment_intent_event=False)
    install(scenario, fake_stripe, fake_gocardless)
    dispute_id = next(iter(scenario.stripe.disputes))
    closing = next(d.event for d in scenario.deliveries if d.event["type"] == "charge.dispute.closed")
    again = stripe_event(
        "charge.dispute.closed", copy.deepcopy(scenario.stripe.disputes[dispute_id]), created=scenario.tick(3_600)
    )
    deliver(app_client, scenario.deliveries)
    worker.join()
    assert post_stripe(app_client, again).status_code == 200
    worker.join()
    assert stuck_events(runtime) == []

    row, dates = closing_items(runtime, dispute_id, "lost")
    assert (row.status, row.closed_at) == (DisputeStatus.LOST, utc_of(closing["created"]))
    assert dates == [utc_of(closing["created"])]


def test_revising_a_history_item_with_a_time_only_moves_it_earlier(runtime: Runtime) -> None:
    from crm import service as crm_service
    from tests.crm.helpers import make_supporter

    supporter_id = make_supporter(runtime)
    first = dt.datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=dt.UTC)
    with runtime.unit_of_work() as uow:
        crm_service.record_history(
            uow, supporter_id, type="dispute", summary="Card dispute lost", at=first, dedupe_key="dispute:d1:lost"
        )
    for at, expected in [
        (first + dt.timedelta(hours=1), first),  # later: the time stays
        (first - dt.timedelta(microseconds=1), first - dt.timedelta(microseconds=1)),  # earlier: moved back
        (None, first - dt.timedelta(microseconds=1)),  # no time given: the time stays
    ]:
        with runtime.unit_of_work() as uow:
            assert crm_service.revise_history(uow, "dispute:d1:lost", summary="Card dispute lost", data={}, at=at)
        with runtime.read_session() as session:
            _, rows, _ = crm_service.history(session, supporter_id)
            assert [row.at for row in rows] == [expected]
