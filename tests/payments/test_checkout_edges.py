"""POST /donate in situations found in review (contract.md, docs/checkout.md): a decimal comma, "UK" typed as the
country, the same form sent again with the email box now ticked, an overloaded provider answering an HTML page, and a
donor abroad with a long postal code."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import Settings
from crm.models import Consent, Declaration
from payments.models import Checkout
from tests.fakes.provider_server import FakeProvider, RecordedRequest
from tests.payments.checkout_support import StripeCheckout, checkout_settings, counts, donate, gocardless, stripe

__all__ = ["gocardless", "stripe"]


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return checkout_settings(
        database_url, tmp_path, fake_stripe.url, fake_gocardless.url, web={"form_rate_per_minute": 1000}
    )


def rows(runtime: Runtime, model: Any) -> list[Any]:
    with runtime.sessions() as session:
        return list(session.exec(select(model)).all())


# --- amounts ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("typed", ["12,50", "1,00", "5,5"])
def test_a_decimal_comma_is_not_read_as_a_thousands_separator(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout, typed: str
) -> None:
    """A donor typing "12,50" (a decimal comma, as much of Europe writes £12.50) must not be charged £1,250:
    the comma is not in a thousands position, so the amount is ambiguous and is refused (400)."""
    response = donate(client, amount=typed)
    charged = [c.amount for c in rows(runtime, Checkout)]
    assert response.status_code == 400, f"{typed!r} was taken as {charged} pence"
    assert stripe.requests == []


# --- Gift Aid address: the country -----------------------------------------------------------------------------


def test_country_uk_is_not_recorded_as_an_overseas_donor(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    """`country` is an ISO code (contract). "UK" is not one (the UK's is GB), yet it is what British donors type:
    it is read as GB, so a London donor is a UK taxpayer's address for HMRC and the postcode is checked."""
    response = donate(client, gift_aid="yes", country="UK", postcode="SW1A 2AA")
    assert response.status_code == 303, response.text
    [declaration] = rows(runtime, Declaration)
    assert (declaration.country, declaration.non_uk) == ("GB", False), (
        f"status {response.status_code}: declaration recorded as country {declaration.country!r}, "
        f"non_uk={declaration.non_uk}, postcode {declaration.postcode!r}"
    )


def test_country_uk_does_not_switch_off_the_uk_postcode_check(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    """contract.md: "Postcodes are checked as UK postcodes when `country` is `GB`". Typing UK instead of GB
    skips the check entirely, so a Gift Aid declaration is recorded with a postcode that is not one."""
    response = donate(client, gift_aid="yes", country="UK", postcode="NOPE")
    assert response.status_code == 400, [(d.country, d.postcode) for d in rows(runtime, Declaration)]


# --- sending the same form again -------------------------------------------------------------------------------


def test_email_updates_ticked_when_the_form_is_sent_again_is_recorded(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    """The donor went to Stripe, pressed Back, ticked "email me news" and sent the form again. contract.md:
    "`email_updates=yes` on the donate or shop form records a granted email consent". The reused checkout must
    not swallow the consent."""
    ref = str(uuid.uuid4())
    first = donate(client, checkout_ref=ref)
    assert first.status_code == 303
    second = donate(client, checkout_ref=ref, email_updates="yes")
    assert second.status_code == 303
    assert counts(runtime)["consents"] == 1, "the donor's email consent was never recorded"


def test_email_updates_ticked_on_try_again_after_a_failure_is_recorded(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    ref = str(uuid.uuid4())
    stripe.failure = (400, {"error": {"type": "invalid_request_error", "message": "nope"}})
    assert donate(client, checkout_ref=ref).status_code == 502
    stripe.failure = None
    assert donate(client, checkout_ref=ref, email_updates="yes").status_code == 303
    consents = rows(runtime, Consent)
    assert len(consents) == 1 and consents[0].status == "granted"


# --- provider failures: an overloaded GoCardless answers 503 with its load balancer's HTML page ------------------


class HtmlOutage:
    """A tiny HTTP server answering every request with `status` and an HTML body (a proxy's error page)."""

    def __init__(self, status: int):
        self.status = status
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                outer.hits += 1
                body = b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
                self.send_response(outer.status)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def outage() -> Iterator[HtmlOutage]:
    server = HtmlOutage(503)
    yield server
    server.stop()


class TestOverloadedProviders:
    @pytest.fixture
    def settings(self, database_url: str, tmp_path: Path, outage: HtmlOutage) -> Settings:
        return checkout_settings(
            database_url, tmp_path, outage.url.rstrip("/"), outage.url, web={"form_rate_per_minute": 1000}
        )

    def test_gocardless_503_html_is_the_unavailable_page(self, client: TestClient, runtime: Runtime) -> None:
        """docs/checkout.md: "`503` when the provider is unreachable or overloaded, `502` when it refused our
        request". A 503 from GoCardless's edge (an HTML page) is overload, not a refusal."""
        response = donate(client, method="direct_debit")
        assert [c.status for c in rows(runtime, Checkout)] == ["failed"]
        assert response.status_code == 503, (response.status_code, "could not start your payment" in response.text)

    def test_stripe_503_html_is_the_unavailable_page(self, client: TestClient, runtime: Runtime) -> None:
        response = donate(client, method="card")
        assert [c.status for c in rows(runtime, Checkout)] == ["failed"]
        assert response.status_code == 503


# --- overseas donors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("country", "postcode", "town"), [("US", "20500-0003", "Washington"), ("BR", "01310-100", "Sao Paulo")]
)
def test_an_overseas_donor_with_a_long_postal_code_can_give(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout, country: str, postcode: str, town: str
) -> None:
    """A US ZIP+4 (10 characters) or a Brazilian CEP (9): postal codes abroad are kept up to 10 characters, and the
    supporter's copy holds them too (it was 8: on PostgreSQL the insert failed and the donor got a 500)."""
    fields = {"country": country, "postcode": postcode, "town": town, "address_line1": "1600 Pennsylvania Ave"}
    response = donate(client, **fields)
    assert response.status_code == 303, response.status_code
    [checkout] = rows(runtime, Checkout)
    assert checkout.donor["postcode"] == postcode


class IdempotentStripe:
    """POST /v1/checkout/sessions as Stripe's v1 API answers it: "Stripe saves the status code and body of the first
    request made with a given idempotency key after endpoint execution begins. Retries with the same key return the
    saved response, including 500 errors" (docs.stripe.com/api/idempotent_requests). While `broken`, a new key's
    request fails inside the endpoint with a 500 (an api_error), which is saved under its key."""

    def __init__(self, server: FakeProvider):
        self.saved: dict[str, tuple[int, Any]] = {}
        self.broken = False
        self.numbers = itertools.count(1)
        self.lock = threading.Lock()
        self.server = server
        server.route("POST", r"/v1/checkout/sessions", self.answer)

    def answer(self, request: RecordedRequest) -> tuple[int, Any]:
        key = request.headers.get("idempotency-key", "")
        with self.lock:
            if key not in self.saved:
                if self.broken:
                    self.saved[key] = (500, {"error": {"type": "api_error", "message": "An unknown error occurred"}})
                else:
                    session_id = f"cs_test_{next(self.numbers):04d}"
                    url = f"https://checkout.stripe.test/c/pay/{session_id}"
                    self.saved[key] = (200, {"id": session_id, "object": "checkout.session", "url": url})
            return self.saved[key]


def test_try_again_after_a_stripe_500_can_reach_stripe_once_it_has_recovered(
    client: TestClient, runtime: Runtime, fake_stripe: FakeProvider
) -> None:
    stripe = IdempotentStripe(fake_stripe)
    ref = str(uuid.uuid4())
    stripe.broken = True
    failed = donate(client, checkout_ref=ref)
    assert failed.status_code == 503  # "press the button to try again"

    stripe.broken = False  # Stripe is fine again: any new request succeeds
    retried = donate(client, checkout_ref=ref)  # the page's "Try again" button: the same form, the same checkout_ref

    keys = [r.headers["idempotency-key"] for r in fake_stripe.requests_to("POST", r"/v1/checkout/sessions")]
    # Found in review: the retry sent the same key, Stripe replayed the saved 500, and the donor got the 503 page again
    # for as long as the form is reused (an hour). Now the answered failure moves the checkout to its next key.
    assert retried.status_code == 303, (retried.status_code, sorted(set(keys)))
    assert retried.headers["location"].startswith("https://checkout.stripe.test/c/pay/")
    assert sorted(set(keys)) == [f"checkout:{ref}:session", f"checkout:{ref}:session:1"]
    with runtime.read_session() as session:
        checkout = session.get(Checkout, uuid.UUID(ref))
        assert checkout is not None and (checkout.status, checkout.provider_attempt) == ("open", 1)


def test_a_try_that_got_no_answer_keeps_its_idempotency_key(
    client: TestClient, runtime: Runtime, fake_stripe: FakeProvider
) -> None:
    """Nothing came back (Stripe unreachable): Stripe may still have made the session, so the next try must send
    the same key and get that session back, not make a second one."""
    ref = str(uuid.uuid4())
    fake_stripe.stop()
    failed = donate(client, checkout_ref=ref)
    assert failed.status_code == 503
    with runtime.read_session() as session:
        checkout = session.get(Checkout, uuid.UUID(ref))
        assert checkout is not None and (checkout.status, checkout.provider_attempt) == ("failed", 0)
