"""`GET /api/openapi.json` describes what the endpoints really answer once there is money in the books: gifts, a
refund and a shop basket recorded from signed Stripe deliveries through the real webhook, then read back through the
staff API and checked against the served document's schemas. (test_openapi.py's schemathesis run starts from an
empty database, where no item about money exists to check.)"""

from __future__ import annotations

from typing import Any

import jsonschema_rs
from starlette.testclient import TestClient

from core.runtime import Runtime
from tests.crm.helpers import make_supporter, staff_token
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Scenario, seed_supporter
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    deliver,
    install,
    settings,
    stuck_events,
    worker,
)

__all__ = ["app_client", "catalogue", "settings", "worker"]


def answer_errors(document: dict[str, Any], path: str, method: str, response: Any) -> list[str]:
    """What in `response` breaks the schema the document gives for its operation and status."""
    described = document["paths"][path][method]["responses"][str(response.status_code)]
    schema = {**described["content"]["application/json"]["schema"], "components": document["components"]}
    validator = jsonschema_rs.validator_for(schema)
    return [f"{list(e.instance_path)}: {e.message}" for e in validator.iter_errors(response.json())]


def test_history_items_about_money_match_the_document(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    catalogue: None,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    giver = seed_supporter(runtime, "Gina")
    scenario.one_off_card_gift(giver, 5000, refunds=(1200,))
    shopper = seed_supporter(runtime, "Hal")
    scenario.shop_basket(shopper, quantity=1, donation=500)
    install(scenario, fake_stripe, fake_gocardless)
    deliver(app_client, scenario.deliveries)
    worker.join()
    assert stuck_events(runtime) == []

    staff = staff_token(runtime, "fundraiser")
    document = app_client.get("/api/openapi.json").json()
    types: set[str] = set()
    for supporter in (giver, shopper):
        response = app_client.get(f"/api/supporters/{supporter}/history", headers=staff)
        assert response.status_code == 200, response.text
        items = response.json()["items"]
        types |= {item["type"] for item in items if item.get("provider_ids")}
        assert answer_errors(document, "/api/supporters/{supporter_id}/history", "get", response) == []
    assert {"gift", "refund", "purchase"} <= types


def request_errors(document: dict[str, Any], path: str, method: str, body: dict[str, Any]) -> list[str]:
    """What in `body` the document's request schema for the operation refuses."""
    described = document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    validator = jsonschema_rs.validator_for({**described, "components": document["components"]})
    return [f"{list(e.instance_path)}: {e.message}" for e in validator.iter_errors(body)]


def test_a_paper_declaration_in_its_own_wording_is_a_body_the_document_allows(
    runtime: Runtime, client: TestClient
) -> None:
    """A written declaration on the charity's old paper form: a wording version Giving has not kept yet must come with
    its words (`wording_text`, or 400). The document must allow the body the endpoint needs and accepts, and the
    optional fields sent as null, which the endpoint takes as absent."""
    staff = staff_token(runtime, "fundraiser")
    supporter = make_supporter(runtime)
    document = client.get("/api/openapi.json").json()
    path = "/api/supporters/{supporter_id}/declarations"
    body: dict[str, Any] = {
        "method": "written",
        "made_on": "2026-03-02",
        "scope": "past_4_years_and_future",
        "wording_version": "paper-2019",
    }
    without_words = client.post(f"/api/supporters/{supporter}/declarations", json=body, headers=staff)
    assert without_words.status_code == 400 and "wording_text" in without_words.json()["detail"]
    body |= {"wording_text": "I want Calais Refugee Aid to treat all my donations as Gift Aid donations.", "end": None}
    accepted = client.post(f"/api/supporters/{supporter}/declarations", json=body, headers=staff)
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["wording_text"] == body["wording_text"]
    assert request_errors(document, path, "post", body) == []
    assert answer_errors(document, path, "post", accepted) == []
