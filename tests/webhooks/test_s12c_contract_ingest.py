"""contract.md, Providers: `POST /webhooks/stripe` answers 400 for a malformed body and `5xx` only when the event
could not be stored; `POST /webhooks/gocardless` answers 2xx once the batch is stored and 400 for a malformed body.
An id longer than any provider gives (and than the column that keeps it) is a malformed event, not a 500 that the
provider would send again for days."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from tests.fakes.scenarios import fixture, gocardless_event, stripe_event
from tests.webhooks.support import catalogue, post_gocardless, post_stripe, settings
from webhooks.models import InboundEvent

__all__ = ["catalogue", "settings"]

TOO_LONG = "x" * 300


def stored(runtime: Runtime) -> list[tuple[str, str]]:
    with runtime.read_session() as session:
        return [(row.provider, row.external_id) for row in session.exec(select(InboundEvent)).all()]


def an_event(event_id: str) -> dict[str, Any]:
    session = fixture("stripe/event_checkout_session_completed.constructed.json")["data"]["object"]
    event = stripe_event("checkout.session.completed", session, created=int(time.time()))
    event["id"] = event_id
    return event


def test_a_stripe_event_id_too_long_to_keep_is_a_400_not_a_500(client: TestClient, runtime: Runtime) -> None:
    response = post_stripe(client, an_event("evt_" + TOO_LONG))

    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error", "detail"}
    assert stored(runtime) == []


def test_a_stripe_event_type_too_long_to_keep_is_stored_as_one_we_ignore(client: TestClient, runtime: Runtime) -> None:
    """'2xx once the event is safely stored (also for ... an event type we ignore)': the type is cut to its column."""
    event = an_event("evt_type_too_long")
    event["type"] = "checkout.session." + TOO_LONG
    response = post_stripe(client, event)

    assert response.status_code == 200, response.text
    assert stored(runtime) == [("stripe", "evt_type_too_long")]


def test_a_gocardless_event_id_too_long_to_keep_is_left_out_like_one_without_an_id(
    client: TestClient, runtime: Runtime
) -> None:
    good = gocardless_event("payments", "confirmed", {"payment": "PM1"}, created=1)
    too_long = {**gocardless_event("payments", "confirmed", {"payment": "PM2"}, created=1), "id": "EV" + TOO_LONG}

    answer = post_gocardless(client, [good, too_long])
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"received": 1, "stored": 1}
    assert stored(runtime) == [("gocardless", good["id"])]

    alone = post_gocardless(client, [too_long])
    assert alone.status_code == 400, alone.text
    assert stored(runtime) == [("gocardless", good["id"])]


def test_the_largest_id_a_provider_may_give_is_stored(client: TestClient, runtime: Runtime) -> None:
    event_id = "evt_" + "y" * 251  # 255 characters
    assert post_stripe(client, an_event(event_id)).status_code == 200
    assert stored(runtime) == [("stripe", event_id)]
    assert json.dumps(stored(runtime))


def test_a_stripe_event_id_with_a_nul_is_a_400_not_a_500(client: TestClient, runtime: Runtime) -> None:
    """PostgreSQL refuses NUL in text: an id no provider gives, refused as malformed on every database."""
    response = post_stripe(client, an_event("evt_\x00nul"))

    assert response.status_code == 400, response.text
    assert stored(runtime) == []


def test_a_stripe_event_type_with_a_nul_is_a_400_not_a_500(client: TestClient, runtime: Runtime) -> None:
    event = an_event("evt_type_nul")
    event["type"] = "checkout.session.\x00completed"
    response = post_stripe(client, event)

    assert response.status_code == 400, response.text
    assert stored(runtime) == []


def test_a_gocardless_event_with_a_nul_is_left_out_of_its_batch(client: TestClient, runtime: Runtime) -> None:
    good = gocardless_event("payments", "confirmed", {"payment": "PM1"}, created=1)
    nul_id = {**gocardless_event("payments", "confirmed", {"payment": "PM2"}, created=1), "id": "EV\x00X"}
    nul_action = {**gocardless_event("payments", "confirmed", {"payment": "PM3"}, created=1), "action": "con\x00"}

    answer = post_gocardless(client, [good, nul_id, nul_action])
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"received": 1, "stored": 1}
    assert stored(runtime) == [("gocardless", good["id"])]


@pytest.mark.parametrize("created_at", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00", "not a time"])
def test_a_gocardless_event_at_an_odd_time_is_stored_not_a_500(
    created_at: str, client: TestClient, runtime: Runtime
) -> None:
    """'an event's age is never a reason to refuse it': a time no column can hold is kept as no time."""
    event = {**gocardless_event("payments", "confirmed", {"payment": "PM1"}, created=1), "created_at": created_at}

    answer = post_gocardless(client, [event])
    assert answer.status_code == 200, answer.text
    assert stored(runtime) == [("gocardless", event["id"])]


def test_a_stripe_event_id_with_a_lone_surrogate_is_a_400_not_a_500(client: TestClient, runtime: Runtime) -> None:
    """`"\\ud800"` is valid JSON but no text a database can keep."""
    body = json.dumps(an_event("evt_PLACEHOLDER")).replace("evt_PLACEHOLDER", "evt_\\ud800").encode()
    response = post_stripe(client, body)

    assert response.status_code == 400, response.text
    assert stored(runtime) == []


def test_a_stripe_event_type_with_a_lone_surrogate_is_a_400(client: TestClient, runtime: Runtime) -> None:
    body = json.dumps(an_event("evt_surrogate_type")).replace("checkout.session.completed", "x.\\udfff", 1).encode()
    response = post_stripe(client, body)

    assert response.status_code == 400, response.text
    assert stored(runtime) == []


def test_a_gocardless_event_id_with_a_lone_surrogate_is_left_out(client: TestClient, runtime: Runtime) -> None:
    good = gocardless_event("payments", "confirmed", {"payment": "PM1"}, created=1)
    odd = {**gocardless_event("payments", "confirmed", {"payment": "PM2"}, created=1), "id": "EV_PLACEHOLDER"}
    body = json.dumps({"events": [good, odd]}).replace("EV_PLACEHOLDER", "EV\\ud800").encode()

    answer = post_gocardless(client, body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"received": 1, "stored": 1}
    assert stored(runtime) == [("gocardless", good["id"])]
