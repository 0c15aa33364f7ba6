"""A Stripe that does not answer while a donor waits on the donate or shop form (session 12 review).

The SDK client waited 80 seconds for an answer and tried three times: four minutes before the donor saw anything,
long after a proxy in front of Giving (typically 60 seconds) or the browser had given up with a page of its own, and
with a web thread held all that time. Creating the Checkout Session now gives up well inside a minute, and the donor
gets the "try again" page (docs/checkout.md), the same idempotency key kept."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from core.settings import GoCardlessSettings, StripeSettings
from payments.errors import ProviderUnavailable
from payments.providers.gocardless import GoCardlessGateway
from payments.providers.stripe import StripeGateway
from tests.fakes.provider_server import FakeProvider, RecordedRequest

# What a donor can be kept waiting for a Checkout Session, Stripe's SDK retries included: a reverse proxy's usual
# 60 seconds, less a margin for our own work.
DONOR_PATIENCE = 45.0
STRIPE_ANSWERS_AFTER = 60.0


class SlowStripe:
    """Answers a new Checkout Session only after STRIPE_ANSWERS_AFTER seconds (or when released)."""

    def __init__(self, server: FakeProvider):
        self.released = threading.Event()
        self.server = server
        server.route("POST", r"/v1/checkout/sessions", self.answer)

    def answer(self, request: RecordedRequest) -> tuple[int, object]:
        self.released.wait(STRIPE_ANSWERS_AFTER)
        url = "https://checkout.stripe.test/c/pay/cs_test_slow"
        return 200, {"id": "cs_test_slow", "object": "checkout.session", "url": url}


@pytest.fixture
def slow_stripe(fake_stripe: FakeProvider) -> Iterator[SlowStripe]:
    stripe = SlowStripe(fake_stripe)
    yield stripe
    stripe.released.set()  # let the server's threads finish before it stops


def test_a_stripe_that_does_not_answer_is_given_up_on_while_the_donor_still_waits(
    fake_stripe: FakeProvider, slow_stripe: SlowStripe
) -> None:
    settings = StripeSettings(secret_key=SecretStr("sk_test_slow"), api_base=fake_stripe.url)
    gateway = StripeGateway(settings)
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable) as raised:
        gateway.create_checkout_session({"mode": "payment"}, idempotency_key="checkout:slow:session")
    waited = time.monotonic() - started
    assert waited < DONOR_PATIENCE, f"the donor waited {waited:.0f} s"
    # No answer came back: the next try keeps the key (Stripe may have made the session and then returns it).
    assert raised.value.answered is False
    keys = {r.headers["idempotency-key"] for r in fake_stripe.requests_to("POST", r"/v1/checkout/sessions")}
    assert keys == {"checkout:slow:session"}


# --- GoCardless: the billing request and its flow, both while the donor waits -----------------------------------


class SlowGoCardless:
    """Answers billing requests and flows only after STRIPE_ANSWERS_AFTER seconds (or when released)."""

    def __init__(self, server: FakeProvider):
        self.released = threading.Event()
        server.route("POST", r"/billing_requests", self.billing_request)
        server.route("POST", r"/billing_request_flows", self.flow)

    def billing_request(self, request: RecordedRequest) -> tuple[int, object]:
        self.released.wait(STRIPE_ANSWERS_AFTER)
        return 201, {"billing_requests": {"id": "BRQ000001", "status": "pending"}}

    def flow(self, request: RecordedRequest) -> tuple[int, object]:
        self.released.wait(STRIPE_ANSWERS_AFTER)
        url = "https://pay.gocardless.test/billing/static/flow?id=BRF000001"
        return 201, {"billing_request_flows": {"id": "BRF000001", "authorisation_url": url}}


@pytest.fixture
def slow_gocardless(fake_gocardless: FakeProvider) -> Iterator[SlowGoCardless]:
    gocardless = SlowGoCardless(fake_gocardless)
    yield gocardless
    gocardless.released.set()


@pytest.mark.parametrize("slow", ["billing_request", "flow"])
def test_a_gocardless_that_does_not_answer_is_given_up_on_while_the_donor_still_waits(
    fake_gocardless: FakeProvider, slow_gocardless: SlowGoCardless, slow: str
) -> None:
    """The SDK tries a create three times, 20 seconds each with our client: a minute for the billing request, and
    another for its flow. Each now takes at most half of what a donor (and a proxy) waits, so both together fit."""
    settings = GoCardlessSettings(access_token=SecretStr("gc_test_slow"), base_url=fake_gocardless.url)
    gateway = GoCardlessGateway(settings)
    started = time.monotonic()
    with pytest.raises(ProviderUnavailable) as raised:
        if slow == "billing_request":
            gateway.create_billing_request({"mandate_request": {"scheme": "bacs"}}, idempotency_key="checkout:x:br")
        else:
            gateway.create_billing_request_flow({"links": {"billing_request": "BRQ000001"}})
    waited = time.monotonic() - started
    assert raised.value.answered is False  # no answer: the key is kept, GoCardless may have made it
    assert waited < DONOR_PATIENCE / 2, f"the donor waited {waited:.0f} s for the {slow}"
