"""Found in review (s16m): a signed body nested deeper than Python's JSON parser recurses (valid JSON, but not a body
we can read) raised RecursionError out of the endpoints: a 500, where the contract answers a malformed body with 400
(and keeps 5xx for "could not be stored", which the provider retries for days). Now both endpoints refuse it as
malformed, with nothing stored."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from tests.fakes.signing import gocardless_signature, stripe_headers
from tests.webhooks.support import catalogue, settings
from webhooks.models import InboundEvent

__all__ = ["catalogue", "settings"]

DEPTH = 100_000


@pytest.fixture
def web(runtime: Runtime) -> Iterator[TestClient]:
    """The app as a provider sees it: an unhandled error is the 500 it answers, not an exception in the test."""
    from giving.app import create_app

    with TestClient(create_app(runtime=runtime, start_inline_worker=False), raise_server_exceptions=False) as c:
        yield c


def _nothing_stored(runtime: Runtime) -> bool:
    with runtime.read_session() as session:
        return session.exec(select(InboundEvent)).all() == []


def test_a_signed_stripe_body_nested_too_deep_is_a_400(web: TestClient, runtime: Runtime) -> None:
    body = b'{"object": "event", "id": "evt_deep", "type": "charge.refunded", "data": {"object": {"x": '
    body += b"[" * DEPTH + b"]" * DEPTH + b"}}}"
    response = web.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "MalformedEvent"
    assert _nothing_stored(runtime)


def test_a_signed_gocardless_body_nested_too_deep_is_a_400(web: TestClient, runtime: Runtime) -> None:
    body = b'{"events": [{"id": "EVdeep", "resource_type": "payments", "action": "confirmed", "details": '
    body += b"[" * DEPTH + b"]" * DEPTH + b"}]}"
    response = web.post("/webhooks/gocardless", content=body, headers={"Webhook-Signature": gocardless_signature(body)})
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "MalformedEvent"
    assert _nothing_stored(runtime)
