"""Found in review (s16m): `giving events replay` of an event processed months ago, whose raw body had since been
pruned (`[web] keep_webhook_bodies_days`), rewrote its row as `ignored` ("the body was pruned") with a new
`processed_at`: the record that the event had recorded its gift was replaced by one saying it never acted, and the
event counts moved from processed to ignored. With no body there is nothing to run again: the row is left as it was,
and the replay says why."""

from __future__ import annotations

import datetime as dt

from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from giving import privacy
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Scenario, seed_supporter
from tests.webhooks.support import catalogue, install, post_gocardless, reading, settings
from webhooks import service as webhooks_service
from webhooks.models import EventStatus, InboundEvent

__all__ = ["catalogue", "settings"]


def _event_row(runtime: Runtime, external_id: str) -> InboundEvent:
    with reading(runtime) as session:
        return session.exec(select(InboundEvent).where(InboundEvent.external_id == external_id)).one()


def test_replaying_a_processed_event_whose_body_was_pruned_leaves_its_record_as_it_was(
    runtime: Runtime, client: TestClient, catalogue: None, fake_stripe: FakeProvider, fake_gocardless: FakeProvider
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Xan")
    scenario.gocardless_monthly(supporter, 700, payments=("paid_out",))
    install(scenario, fake_stripe, fake_gocardless)
    fulfilled = next(
        d
        for d in scenario.deliveries
        if (d.event["resource_type"], d.event["action"]) == ("billing_requests", "fulfilled")
    )
    assert post_gocardless(client, [fulfilled.event]).status_code == 200
    event_id = _event_row(runtime, fulfilled.event_id).id
    assert webhooks_service.run_event(runtime, event_id).status == EventStatus.PROCESSED
    before = _event_row(runtime, fulfilled.event_id)
    with runtime.unit_of_work() as uow:
        assert privacy.prune_webhook_bodies(uow, keep_days=90, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=91))
    result = webhooks_service.run_event(runtime, event_id, force=True)  # `giving events replay`
    assert "pruned" in result.note
    after = _event_row(runtime, fulfilled.event_id)
    assert after.body is None
    assert (after.status, after.processed_at, after.last_error, after.attempts) == (
        EventStatus.PROCESSED,
        before.processed_at,
        before.last_error,
        before.attempts,
    )
    assert result.status == EventStatus.PROCESSED
