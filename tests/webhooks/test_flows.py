"""Every flow through the real endpoints: signed deliveries in, the ledger out."""

from __future__ import annotations

from starlette.testclient import TestClient

from core.runtime import Runtime
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import standard_scenario
from tests.webhooks.support import (
    EventsWorker,
    actual_ledger,
    app_client,
    catalogue,
    deliver,
    install,
    settings,
    stuck_events,
    worker,
)

__all__ = ["app_client", "catalogue", "settings", "worker"]


def test_standard_scenario_in_order(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = standard_scenario(runtime)
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    worker.join()
    assert stuck_events(runtime) == []
    assert actual_ledger(runtime, scenario.expected) == scenario.expected
