"""`GET /metrics` in one process: webhook deliveries counted by outcome and reason, and the gauges computed from
the database at scrape time (events by status, documents, deliveries, claims)."""

from __future__ import annotations

import json

from starlette.testclient import TestClient

from tests.fakes.signing import stripe_headers
from tests.scale.test_processes import parse_metrics

EVENT = {
    "id": "evt_metrics_1",
    "object": "event",
    "type": "charge.succeeded",
    "created": 1767225600,
    "livemode": False,
    "data": {"object": {"id": "ch_metrics", "object": "charge"}},
}


def scrape(client: TestClient) -> dict[str, float]:
    # Without a metrics token, /metrics answers only this machine: scrape the same app from a loopback address.
    response = TestClient(client.app, client=("127.0.0.1", 50000)).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse_metrics(response.text)


def test_metrics_count_webhook_deliveries_and_read_the_backlog_from_the_database(client: TestClient) -> None:
    accepted = 'giving_deliveries_accepted_total{provider="stripe"}'
    duplicate = 'giving_deliveries_duplicate_total{provider="stripe"}'
    refused = 'giving_deliveries_refused_total{provider="stripe",reason="signature"}'
    before = scrape(client)
    body = json.dumps(EVENT).encode()
    assert client.post("/webhooks/stripe", content=body, headers=stripe_headers(body)).status_code == 200
    assert client.post("/webhooks/stripe", content=body, headers=stripe_headers(body)).status_code == 200
    bad = {"Stripe-Signature": "t=1,v1=00", "Content-Type": "application/json"}
    assert client.post("/webhooks/stripe", content=body, headers=bad).status_code == 400
    after = scrape(client)
    assert after[accepted] - before.get(accepted, 0) == 1
    assert after[duplicate] - before.get(duplicate, 0) == 1
    assert after[refused] - before.get(refused, 0) == 1
    # No worker runs here: the stored event waits, and the scrape reads that from the database.
    assert after['giving_events{status="pending"}'] == 1
    assert after["giving_database_up"] == 1
    assert after["giving_broker_up"] == 1
    assert after["giving_oldest_pending_event_age_seconds"] >= 0
    assert after['giving_http_requests_total{route="/webhooks/stripe",status="2xx"}'] >= 2
