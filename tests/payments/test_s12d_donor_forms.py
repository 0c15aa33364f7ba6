"""The donor forms as a donor and an attacker use them (session 12 review): amounts written with more than two
decimals, a country code that names no country, an appeal code the shop refused, the error summary's link for a
refused form, and GoCardless hanging up in the middle of its answer."""

from __future__ import annotations

import re
import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import Settings
from payments import service as payments_service
from payments.models import Checkout
from tests.fakes.provider_server import FakeProvider
from tests.payments.checkout_support import (
    DONOR,
    StripeCheckout,
    checkout_settings,
    donate,
    nothing_recorded,
    stripe,
)

__all__ = ["stripe"]


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return checkout_settings(
        database_url, tmp_path, fake_stripe.url, fake_gocardless.url, web={"form_rate_per_minute": 1000}
    )


def rows(runtime: Runtime, model: Any) -> list[Any]:
    with runtime.sessions() as session:
        return list(session.exec(select(model)).all())


def error_of(page: str, field: str) -> str:
    found = re.search(rf'id="{field}-error"><span class="visually-hidden">Error:</span> ([^<]*)</p>', page)
    return found.group(1) if found else ""


def shop_skus(client: TestClient) -> list[str]:
    return re.findall(r'name="sku" value="([^"]+)"', client.get("/shop").text)


# --- amounts -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("typed", ["12.500", "1.000", "25.0000", "£10.000"])
def test_an_amount_with_more_than_two_decimals_is_refused_even_when_they_are_zeros(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout, typed: str
) -> None:
    """docs/checkout.md: "more than two decimals is refused". "1.000" is how much of Europe writes one thousand: taking
    it as £1.00 (or "12.500" as £12.50) charges what the donor did not mean, so it is asked again, not guessed."""
    response = donate(client, amount=typed)
    charged = [c.amount for c in rows(runtime, Checkout)]
    assert response.status_code == 400, f"{typed!r} was taken as {charged} pence"
    assert "at most 2 decimal places" in error_of(response.text, "amount")
    assert nothing_recorded(runtime) and stripe.requests == []


def test_a_shop_donation_with_more_than_two_decimals_is_refused(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    with runtime.unit_of_work() as uow:
        payments_service.ensure_default_catalogue(uow)
    sku = shop_skus(client)[0]
    response = client.post("/shop/checkout", data={**DONOR, "sku": sku, "quantity": "1", "donation": "5.000"})
    assert response.status_code == 400
    assert "at most 2 decimal places" in error_of(response.text, "donation")
    assert nothing_recorded(runtime) and stripe.requests == []


@pytest.mark.parametrize("typed", ["12.50", "12.5", "£1,000.00", "25.", "0012"])
def test_amounts_with_at_most_two_decimals_are_still_taken(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout, typed: str
) -> None:
    assert donate(client, amount=typed).status_code == 303


# --- the country -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("country", ["ZZ", "XX", "QQ", "EU"])
def test_a_country_code_that_names_no_country_is_refused(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout, country: str
) -> None:
    """Two letters were enough: "ZZ" went into the supporter's address, the Gift Aid declaration and GoCardless's
    prefilled customer. A code that is no country is a typing mistake: the donor is asked to correct it."""
    fields = {"country": country, "postcode": "12345", "town": "Somewhere", "gift_aid": "yes"}
    response = donate(client, **fields)
    assert response.status_code == 400, [c.donor["country"] for c in rows(runtime, Checkout)]
    assert "country" in error_of(response.text, "country").lower()
    assert 'href="#country"' in response.text
    assert nothing_recorded(runtime) and stripe.requests == []


@pytest.mark.parametrize(("typed", "kept"), [("fr", "FR"), ("UK", "GB"), ("xk", "XK"), ("", "GB")])
def test_real_country_codes_are_still_taken(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout, typed: str, kept: str
) -> None:
    fields = {"country": typed, "postcode": "SW1A 2AA" if kept == "GB" else "10000"}
    assert donate(client, **fields).status_code == 303
    [checkout] = rows(runtime, Checkout)
    assert checkout.donor["country"] == kept


def test_an_unknown_country_is_reported_with_the_other_mistakes(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    response = donate(client, country="ZZ", amount="nothing")
    assert response.status_code == 400
    assert error_of(response.text, "country") and error_of(response.text, "amount")


# --- the appeal code on the shop form ----------------------------------------------------------------------------


def test_a_refused_appeal_code_on_the_shop_form_can_be_corrected(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    """The shop put a refused appeal code back in a hidden field: every resubmission was refused again, with an
    error summary linking to a field that was not there. Now the code is shown in a field the donor can correct."""
    with runtime.unit_of_work() as uow:
        payments_service.ensure_default_catalogue(uow)
    sku = shop_skus(client)[0]
    form = {**DONOR, "sku": sku, "quantity": "1", "appeal": "<summer 26>"}
    refused = client.post("/shop/checkout", data=form)
    assert refused.status_code == 400
    assert 'href="#appeal"' in refused.text
    [field] = re.findall(r'<input id="appeal" name="appeal" type="text"[^>]*>', refused.text)
    assert 'value="&lt;summer 26&gt;"' in field  # what was typed, escaped, to be corrected
    assert "&lt;summer 26&gt;" in field and "<summer" not in refused.text
    assert nothing_recorded(runtime)

    ref = re.search(r'name="checkout_ref" value="([^"]+)"', refused.text)
    assert ref is not None
    corrected = {**form, "appeal": "SUMMER26", "checkout_ref": ref.group(1)}
    response = client.post("/shop/checkout", data=corrected, follow_redirects=False)
    assert response.status_code == 303
    [checkout] = rows(runtime, Checkout)
    assert (checkout.appeal, str(checkout.id)) == ("SUMMER26", ref.group(1))


def test_a_valid_appeal_code_on_the_shop_form_stays_hidden(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout
) -> None:
    with runtime.unit_of_work() as uow:
        payments_service.ensure_default_catalogue(uow)
    sku = shop_skus(client)[0]
    refused = client.post(
        "/shop/checkout", data={**DONOR, "sku": sku, "quantity": "1", "appeal": "SUMMER26", "email": ""}
    )
    assert refused.status_code == 400
    assert '<input type="hidden" name="appeal" value="SUMMER26">' in refused.text
    assert 'id="appeal"' not in refused.text


# --- the error summary's links -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/donate", "/shop/checkout"])
def test_every_link_of_the_error_summary_has_a_target(
    client: TestClient, runtime: Runtime, stripe: StripeCheckout, path: str
) -> None:
    """A form refused as a whole (the honeypot filled) is reported as `form`; its link in the summary pointed at
    nothing. Every link of the summary must lead to an element of the page."""
    with runtime.unit_of_work() as uow:
        payments_service.ensure_default_catalogue(uow)
    sku = shop_skus(client)[0]
    form = {**DONOR, "amount": "10", "sku": sku, "quantity": "1", "website": "http://spam.example"}
    response = client.post(path, data=form)
    assert response.status_code == 400
    targets = re.findall(r'class="error-summary".*?</div>', response.text, flags=re.S)[0]
    links = re.findall(r'href="#([^"]+)"', targets)
    assert "form" in links
    for link in links:
        assert f'id="{link}"' in response.text, link


# --- GoCardless hanging up mid-answer ----------------------------------------------------------------------------


class HangsUpMidAnswer:
    """An HTTP server that starts a 201 answer and closes the connection before the body is all sent (a proxy or
    load balancer dropping the connection): the provider may or may not have created the object."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.requests = 0
        self.running = True
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                self.requests += 1
                head = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n"
                conn.sendall(head + b'{"billing_requests": {"id": "BRQ')

    def stop(self) -> None:
        self.running = False
        self.sock.close()


@pytest.fixture
def hangs_up() -> Iterator[HangsUpMidAnswer]:
    server = HangsUpMidAnswer()
    yield server
    server.stop()


class TestGoCardlessHangsUp:
    @pytest.fixture
    def settings(
        self, database_url: str, tmp_path: Path, fake_stripe: FakeProvider, hangs_up: HangsUpMidAnswer
    ) -> Settings:
        return checkout_settings(
            database_url, tmp_path, fake_stripe.url, hangs_up.url, web={"form_rate_per_minute": 1000}
        )

    def test_the_donor_gets_the_try_again_page_and_the_next_try_keeps_the_key(
        self, lenient_client: TestClient, runtime: Runtime, hangs_up: HangsUpMidAnswer
    ) -> None:
        """A connection dropped in the middle of GoCardless's answer was not caught (requests' ChunkedEncodingError
        is neither a ConnectionError nor a Timeout): a 500 with the checkout left pending. It is "unreachable": a
        503 page with "Try again", the checkout failed, and its key kept, since GoCardless may have made the billing
        request (the same key then returns it, not a second one)."""
        ref = str(uuid.uuid4())
        response = donate(lenient_client, method="direct_debit", checkout_ref=ref)
        assert response.status_code == 503, response.status_code
        assert "Try again" in response.text and "Nothing has been charged" in response.text
        assert f'name="checkout_ref" value="{ref}"' in response.text
        with runtime.read_session() as session:
            checkout = session.get(Checkout, uuid.UUID(ref))
            assert checkout is not None
            assert (checkout.status, checkout.provider_attempt) == ("failed", 0)


@pytest.fixture
def lenient_client(runtime: Runtime) -> Iterator[TestClient]:
    """The app as a browser sees it: a server error is a 500 page, not an exception in the test."""
    from giving.app import create_app

    with TestClient(create_app(runtime=runtime, start_inline_worker=False), raise_server_exceptions=False) as client:
        yield client


# --- GoCardless: "Try again" after the flow failed -----------------------------------------------------------------


class IdempotentGoCardless:
    """Billing requests as GoCardless makes them: a key already used for a billing request it created answers `409
    idempotent_creation_conflict` naming that billing request (the SDK then fetches it); a failed request stores
    nothing under its key. Flows fail with a 500 while `flows_broken`."""

    def __init__(self, server: FakeProvider):
        self.server = server
        self.by_key: dict[str, dict[str, Any]] = {}
        self.by_id: dict[str, dict[str, Any]] = {}
        self.flows_broken = False
        self.lock = threading.Lock()
        server.route("POST", r"/billing_requests", self.create)
        server.route("GET", r"/billing_requests/(?P<id>[^/]+)", self.get)
        server.route("POST", r"/billing_request_flows", self.flow)

    def create(self, request: Any) -> tuple[int, Any]:
        key = request.headers.get("idempotency-key", "")
        with self.lock:
            if key in self.by_key:
                existing = self.by_key[key]["id"]
                error = {
                    "type": "invalid_state",
                    "code": 409,
                    "message": "A resource has already been created with this idempotency key",
                    "errors": [
                        {
                            "reason": "idempotent_creation_conflict",
                            "message": "A resource has already been created with this idempotency key",
                            "links": {"conflicting_resource_id": existing},
                        }
                    ],
                }
                return 409, {"error": error}
            billing_request = {"id": f"BRQ{len(self.by_id) + 1:06d}", "status": "pending"}
            self.by_key[key] = self.by_id[billing_request["id"]] = billing_request
            return 201, {"billing_requests": billing_request}

    def get(self, request: Any) -> tuple[int, Any]:
        return 200, {"billing_requests": self.by_id[request.match["id"]]}

    def flow(self, request: Any) -> tuple[int, Any]:
        if self.flows_broken:
            return 500, {"error": {"type": "gocardless", "code": 500, "message": "Internal error", "errors": []}}
        url = f"https://pay.gocardless.test/flow/{request.json['billing_request_flows']['links']['billing_request']}"
        return 201, {"billing_request_flows": {"id": "BRF000001", "authorisation_url": url}}


def test_try_again_after_the_flow_failed_reuses_the_billing_request_made(
    client: TestClient, runtime: Runtime, fake_gocardless: FakeProvider
) -> None:
    """The billing request was made, then GoCardless answered the flow with a 500. That "answered" failure moved the
    checkout to its next key, as for Stripe (which replays a saved error under its key); GoCardless does not replay
    errors, so "Try again" made a second billing request and left the first one pending at GoCardless for ever.
    Now a Direct Debit checkout keeps its key: GoCardless answers the conflict with the billing request it made."""
    gocardless = IdempotentGoCardless(fake_gocardless)
    ref = str(uuid.uuid4())
    gocardless.flows_broken = True
    failed = donate(client, method="direct_debit", frequency="monthly", checkout_ref=ref)
    assert failed.status_code == 503

    gocardless.flows_broken = False
    retried = donate(client, method="direct_debit", frequency="monthly", checkout_ref=ref)
    assert retried.status_code == 303
    assert retried.headers["location"] == "https://pay.gocardless.test/flow/BRQ000001"
    assert sorted(gocardless.by_id) == ["BRQ000001"], "a second billing request was made"
    with runtime.read_session() as session:
        checkout = session.get(Checkout, uuid.UUID(ref))
        assert checkout is not None
        assert (checkout.status, checkout.gocardless_billing_request_id) == ("open", "BRQ000001")
