"""A double click that reaches Stripe while the first click's request is still being processed there: Stripe
refuses the second with 409 `idempotency_key_in_use` (same key, nothing saved for it). The second must still end
on the first's Checkout session; if Stripe is still at work after our bound, the donor gets a clear "please try
again" page (503) that keeps the checkout's key, never a second session. The real SDK talks to the fake Stripe of
tests/fakes/stripe_checkout.py over HTTP."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import Settings
from payments.models import Checkout
from tests.fakes.provider_server import FakeProvider
from tests.fakes.stripe_checkout import StripeCheckoutSessions
from tests.payments.checkout_support import checkout_settings, donate

# The SDK itself sends a refused request three times (max_network_retries=2): a double click that still meets the
# first request after those is one only our own waiting can bring to the first's session.
SDK_TRIES = 3


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return checkout_settings(
        database_url, tmp_path, fake_stripe.url, fake_gocardless.url, web={"form_rate_per_minute": 1000}
    )


@pytest.fixture
def sessions(fake_stripe: FakeProvider) -> StripeCheckoutSessions:
    return StripeCheckoutSessions(fake_stripe)


def wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def checkout_row(runtime: Runtime, ref: str) -> Checkout:
    with runtime.read_session() as session:
        checkout = session.get(Checkout, uuid.UUID(ref))
        assert checkout is not None
        session.expunge(checkout)
        return checkout


def first_click(client: TestClient, ref: str, answers: list[Any]) -> threading.Thread:
    thread = threading.Thread(target=lambda: answers.append(donate(client, checkout_ref=ref)))
    thread.start()
    return thread


def test_a_double_click_meeting_stripe_still_at_work_goes_to_the_first_clicks_session(
    client: TestClient, runtime: Runtime, sessions: StripeCheckoutSessions
) -> None:
    ref = str(uuid.uuid4())
    sessions.hold()
    first: list[Any] = []
    thread = first_click(client, ref, first)
    try:
        assert sessions.started.wait(20)  # the first click's request is at Stripe, still running
        second: list[Any] = []
        clicked = threading.Thread(target=lambda: second.append(donate(client, checkout_ref=ref)))
        clicked.start()
        # Stripe stays busy past everything the SDK tries by itself.
        wait_for(lambda: len(sessions.conflicts) >= SDK_TRIES)
    finally:
        sessions.release()
    thread.join(30)
    clicked.join(30)

    [one], [two] = first, second
    assert one.status_code == 303, one.status_code
    assert two.status_code == 303, (two.status_code, "busy" if two.status_code == 503 else "")
    assert one.headers["location"] == two.headers["location"] == "https://checkout.stripe.test/c/pay/cs_test_0001"
    assert len(sessions.sessions) == 1
    assert {r.headers["idempotency-key"] for r in sessions.create_requests} == {f"checkout:{ref}:session"}
    checkout = checkout_row(runtime, ref)
    assert (checkout.status, checkout.stripe_checkout_session_id, checkout.provider_attempt) == (
        "open",
        "cs_test_0001",
        0,
    )


def test_stripe_still_at_work_after_our_bound_is_a_try_again_page_that_keeps_the_key(
    client: TestClient, runtime: Runtime, sessions: StripeCheckoutSessions
) -> None:
    ref = str(uuid.uuid4())
    sessions.hold()
    first: list[Any] = []
    thread = first_click(client, ref, first)
    try:
        assert sessions.started.wait(20)
        started = time.monotonic()
        busy = donate(client, checkout_ref=ref)  # Stripe never finishes the first request meanwhile
        waited = time.monotonic() - started

        assert busy.status_code == 503, busy.status_code
        # Not a failure of the checkout: the first request may still make its session, under the same key (before,
        # the 409 was an "answered" failure that moved the checkout to its next key: a second session).
        checkout = checkout_row(runtime, ref)
        assert (checkout.status, checkout.provider_attempt) == ("pending", 0)
        assert len(sessions.conflicts) > SDK_TRIES and waited < 15  # we waited beyond the SDK's own retries
        assert busy.headers.get("retry-after")
        assert "already being set up" in busy.text
        assert f'name="checkout_ref" value="{ref}"' in busy.text  # "Try again" sends the same form
    finally:
        sessions.release()
    thread.join(30)
    assert first[0].status_code == 303

    again = donate(client, checkout_ref=ref)  # the page's "Try again"
    assert again.status_code == 303
    assert again.headers["location"] == first[0].headers["location"]
    assert len(sessions.sessions) == 1
    assert {r.headers["idempotency-key"] for r in sessions.create_requests} == {f"checkout:{ref}:session"}
    assert checkout_row(runtime, ref).provider_attempt == 0
