"""No lost wake-up for an event waiting on a one-off Direct Debit's mandate. A GoCardless payment event processed
while its billing request is still being recorded is not ours yet, so it waits for `gocardless_mandate:<id>`. If
the billing request commits (and wakes no one: the payment event has not written "waiting" yet) before the
payment event checks whether its key is recorded, that check is all that runs it again. It looked for the mandate
on regular gifts only, so after a one-off gift it said "not recorded" and the payment event waited for ever (seen
in a CI run on PostgreSQL)."""

from __future__ import annotations

from starlette.testclient import TestClient

from core.runtime import Runtime
from payments import service as payments_service
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Scenario, seed_supporter
from tests.webhooks.support import EventsWorker, app_client, catalogue, deliver, install, reading, settings, worker

__all__ = ["app_client", "catalogue", "settings", "worker"]


def test_a_one_off_direct_debits_mandate_counts_as_recorded(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter = seed_supporter(runtime, "Uma")
    _, mandate_id, _ = scenario.gocardless_one_off(supporter, 2500)
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)  # the billing request: it records the gift on this mandate
    worker.join()
    with reading(runtime) as session:
        assert payments_service.key_recorded(session, f"gocardless_mandate:{mandate_id}")
