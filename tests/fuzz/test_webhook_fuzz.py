"""Fuzzed webhook deliveries (hypothesis): whatever the body and headers, a delivery that is not a correctly signed,
readable event of this installation's mode is refused with a 4xx, and nothing is stored or enqueued."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from core.runtime import Runtime
from tests.fakes.signing import gocardless_signature, stripe_headers
from tests.fixtures.app import GOCARDLESS_WEBHOOK_SECRET, STRIPE_WEBHOOK_SECRET
from tests.scale.harness import stripe_signature

SHARED = Path(__file__).resolve().parents[2].parent / "shared"

FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

STRIPE_EVENT: dict[str, Any] = json.loads(
    (SHARED / "fixtures" / "stripe" / "event_checkout_session_completed.constructed.json").read_text()
)
GOCARDLESS_BODY = (SHARED / "fixtures" / "gocardless" / "webhook_body.gocardless-pro-python.raw.txt").read_bytes()

# Header values an HTTP client can send (visible ASCII and spaces): anything else never reaches the app.
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=300)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
bodies = st.binary(max_size=2000) | json_values.map(lambda value: json.dumps(value).encode())


def stored(runtime: Runtime) -> tuple[int, int]:
    with runtime.engine.connect() as conn:
        events = conn.execute(sa.text("SELECT count(*) FROM inbound_events")).scalar_one()
        jobs = conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one()
    return events, jobs


def assert_refused(response: Any, statuses: set[int], runtime: Runtime) -> None:
    request = response.request
    note(f"{request.method} {request.url.path} {dict(request.headers)} {request.content[:500]!r}")
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert stored(runtime) == (0, 0)
    assert runtime.broker.queues["webhooks"].qsize() == 0  # type: ignore[attr-defined]


# --- Stripe ---------------------------------------------------------------------------------------------------------


@FUZZ
@given(body=bodies, signature=st.none() | header_text)
def test_stripe_refuses_any_unsigned_body(client: TestClient, runtime: Runtime, body: bytes, signature: str | None):
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    response = client.post("/webhooks/stripe", content=body, headers=headers)
    assert_refused(response, {400}, runtime)


@FUZZ
@given(body=bodies)
def test_stripe_refuses_a_signed_body_that_is_not_an_event(client: TestClient, runtime: Runtime, body: bytes):
    headers = {"Stripe-Signature": stripe_signature(body), "Content-Type": "application/json"}
    response = client.post("/webhooks/stripe", content=body, headers=headers)
    assert_refused(response, {400}, runtime)


def _break(event: dict[str, Any], how: str, value: Any) -> dict[str, Any]:
    broken = copy.deepcopy(event)
    if how == "drop":
        broken.pop(value, None)
    elif how == "retype":
        broken[value[0]] = value[1]
    elif how == "no_object":
        broken["data"] = value
    return broken


event_mutations = st.one_of(
    st.tuples(st.just("drop"), st.sampled_from(["id", "type", "object", "data"])),
    st.tuples(
        st.just("retype"),
        st.tuples(st.sampled_from(["id", "type", "object"]), st.none() | st.integers() | st.lists(st.none()))
        | st.just(("id", "")),
    ),
    st.tuples(st.just("no_object"), st.none() | st.just({}) | st.dictionaries(st.just("object"), json_values)),
)


@FUZZ
@given(mutation=event_mutations)
def test_stripe_refuses_a_signed_event_missing_what_it_needs(
    client: TestClient, runtime: Runtime, mutation: tuple[str, Any]
):
    how, value = mutation
    note(f"mutation {mutation!r}")
    event = _break(STRIPE_EVENT, how, value)
    if how == "retype" and value[0] == "object" and value[1] == "event":
        return  # not broken
    if how == "no_object" and isinstance(value, dict) and isinstance(value.get("object"), dict):
        return  # a data.object after all
    body = json.dumps(event).encode()
    response = client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))
    assert_refused(response, {400}, runtime)


@FUZZ
@given(age=st.integers(min_value=301, max_value=10**8), secret=st.sampled_from([STRIPE_WEBHOOK_SECRET, "whsec_other"]))
def test_stripe_refuses_a_stale_signature_or_another_secret(
    client: TestClient, runtime: Runtime, age: int, secret: str
):
    body = json.dumps(STRIPE_EVENT).encode()
    stale = secret == STRIPE_WEBHOOK_SECRET
    headers = stripe_headers(body, secret=secret, timestamp=int(time.time()) - age if stale else None)
    response = client.post("/webhooks/stripe", content=body, headers=headers)
    assert_refused(response, {400}, runtime)


# --- GoCardless -----------------------------------------------------------------------------------------------------


@FUZZ
@given(body=bodies | st.just(GOCARDLESS_BODY), signature=st.none() | header_text)
def test_gocardless_refuses_any_unsigned_body(client: TestClient, runtime: Runtime, body: bytes, signature: str | None):
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        if signature == gocardless_signature(body, GOCARDLESS_WEBHOOK_SECRET):
            return
        headers["Webhook-Signature"] = signature
    response = client.post("/webhooks/gocardless", content=body, headers=headers)
    assert_refused(response, {498}, runtime)


gocardless_broken = st.one_of(
    bodies.filter(lambda body: b'"events"' not in body),
    json_values.map(lambda value: json.dumps({"events": value}).encode()).filter(
        lambda body: body != b'{"events": []}'
    ),
    st.lists(st.dictionaries(st.sampled_from(["id", "action", "created_at"]), json_values), min_size=1, max_size=3).map(
        lambda events: json.dumps({"events": events}).encode()
    ),
)


@FUZZ
@given(body=gocardless_broken)
def test_gocardless_refuses_a_signed_body_that_is_not_a_batch_of_events(
    client: TestClient, runtime: Runtime, body: bytes
):
    headers = {"Webhook-Signature": gocardless_signature(body), "Content-Type": "application/json"}
    response = client.post("/webhooks/gocardless", content=body, headers=headers)
    assert_refused(response, {400}, runtime)
