"""The endpoints' refusals at edges found in review: a bad signature or a malformed body is a 4xx with nothing
stored, never a 500."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from tests.fakes.scenarios import fixture, gocardless_event, stripe_event
from tests.fakes.signing import gocardless_signature, stripe_headers
from tests.webhooks.support import catalogue, settings
from webhooks.models import InboundEvent

__all__ = ["catalogue", "settings"]


@pytest.fixture
def web(runtime: Runtime) -> Iterator[TestClient]:
    """The app as a provider sees it: an unhandled error is the 500 it answers, not an exception in the test."""
    from giving.app import create_app

    with TestClient(create_app(runtime=runtime, start_inline_worker=False), raise_server_exceptions=False) as c:
        yield c


def stored(runtime: Runtime) -> list[InboundEvent]:
    with runtime.read_session() as session:
        rows = list(session.exec(select(InboundEvent)).all())
        session.expunge_all()
        return rows


def an_event(**values: Any) -> dict[str, Any]:
    session = fixture("stripe/event_checkout_session_completed.constructed.json")["data"]["object"]
    event = stripe_event("checkout.session.completed", session, created=int(time.time()) - 60)
    event.update(values)
    return event


def test_a_non_ascii_stripe_signature_is_a_400_not_a_500(web: TestClient, runtime: Runtime) -> None:
    """A bad signature is 400 (contract), whatever its bytes; GoCardless's endpoint already guards the same case."""
    body = json.dumps(an_event()).encode()
    header = f"t={int(time.time())},v1=" + "é" * 64
    response = web.post(
        "/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": header.encode("latin-1"), "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert stored(runtime) == []


def test_a_signed_stripe_event_with_an_impossible_created_is_not_a_500(web: TestClient, runtime: Runtime) -> None:
    """`created` far outside any date: the event is malformed (400), nothing stored."""
    body = json.dumps(an_event(created=10**12)).encode()
    response = web.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert response.status_code == 400, response.text
    assert stored(runtime) == []


def _chunks(data: bytes, size: int = 64 * 1024):
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_a_chunked_body_over_one_megabyte_is_refused_413(web: TestClient, runtime: Runtime) -> None:
    """No Content-Length (chunked transfer): the limit still answers 413 and nothing is stored."""
    event = an_event()
    event["data"]["object"]["metadata"] = {"padding": "x" * 1_100_000}
    body = json.dumps(event).encode()
    response = web.post("/webhooks/stripe", content=_chunks(body), headers=stripe_headers(body))
    assert response.status_code == 413, response.text
    gc_body = json.dumps(
        {"events": [gocardless_event("payments", "confirmed", {"payment": "PM1"}, created=1)], "pad": "x" * 1_100_000}
    ).encode()
    response = web.post(
        "/webhooks/gocardless", content=_chunks(gc_body), headers={"Webhook-Signature": gocardless_signature(gc_body)}
    )
    assert response.status_code == 413, response.text
    assert stored(runtime) == []
