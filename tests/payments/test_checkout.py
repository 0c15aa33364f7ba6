"""GET/POST /donate through the real endpoint, with the real Stripe and GoCardless SDKs talking to fake providers.

Each test runs on SQLite and PostgreSQL (the `database_url` fixture under `settings`).
"""

from __future__ import annotations

import re
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import Settings
from crm.models import Consent, Declaration, HistoryEntry, Supporter, Wording
from crm.service import email_updates_wording, enduring_declaration_wording
from payments.models import Checkout, CheckoutStatus
from tests.fakes.provider_server import FakeProvider
from tests.payments.checkout_support import (
    GoCardlessFlow,
    StripeCheckout,
    checkout_settings,
    counts,
    donate,
    form_of,
    gocardless,
    nothing_recorded,
    stripe,
)

__all__ = ["gocardless", "stripe"]


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return checkout_settings(database_url, tmp_path, fake_stripe.url, fake_gocardless.url)


def only(runtime: Runtime, model: Any) -> Any:
    with runtime.sessions() as session:  # closed without a rollback, so the rows stay loaded
        rows = session.exec(select(model)).all()
    assert len(rows) == 1, f"{len(rows)} rows of {model.__name__}"
    return rows[0]


class TestDonatePage:
    def test_the_form_has_every_contract_field_a_reference_and_a_honeypot(self, client: TestClient) -> None:
        page = client.get("/donate?appeal=WINTER26&amount=30")
        assert page.status_code == 200
        for name in ("amount", "title", "first_name", "last_name", "email", "address_line1", "address_line2", "town"):
            assert f'name="{name}"' in page.text
        for name in ("postcode", "country", "gift_aid", "email_updates"):
            assert f'name="{name}"' in page.text
        assert 'name="frequency" value="once"' in page.text and 'name="frequency" value="monthly"' in page.text
        assert 'name="method" value="card"' in page.text and 'name="method" value="direct_debit"' in page.text
        assert 'name="appeal" value="WINTER26"' in page.text and 'value="30"' in page.text
        ref = re.search(r'name="checkout_ref" value="([0-9a-f-]{36})"', page.text)
        assert ref is not None and uuid.UUID(ref.group(1))
        assert 'name="website"' in page.text and 'tabindex="-1"' in page.text
        assert '<label for="first_name">' in page.text
        assert client.get("/assets/checkout.css").headers["content-type"].startswith("text/css")


class TestCardDonation:
    def test_one_off_records_everything_then_redirects_to_the_stripe_session(
        self, client: TestClient, runtime: Runtime, stripe: StripeCheckout
    ) -> None:
        response = donate(client, gift_aid="yes", email_updates="yes", appeal="WINTER26")

        assert response.status_code == 303
        assert response.headers["location"] == "https://checkout.stripe.test/c/pay/cs_test_0001"
        supporter = only(runtime, Supporter)
        declaration = only(runtime, Declaration)
        consent = only(runtime, Consent)
        checkout = only(runtime, Checkout)
        assert supporter.email == "amina.okafor@example.org" and supporter.postcode == "SW1A 2AA"
        assert (declaration.supporter_id, declaration.method, declaration.scope) == (
            supporter.id,
            "online",
            "past_4_years_and_future",
        )
        assert (declaration.house, declaration.postcode, declaration.non_uk) == ("10", "SW1A 2AA", False)
        assert declaration.wording_version == runtime.settings.giftaid.donation_wording_version
        # The words the form showed, kept with the declaration (giftaid.md §4) and with the consent (docs/crm.md).
        with runtime.sessions() as session:
            words = session.get(Wording, declaration.wording_id)
            consent_words = session.get(Wording, consent.wording_id)
        assert words is not None and words.text == enduring_declaration_wording(runtime.settings.charity.name)
        assert consent_words is not None
        assert consent_words.text == email_updates_wording(runtime.settings.charity.name)
        assert declaration.evidence["form"] == "donate" and declaration.evidence["ip"] == "testclient"
        assert declaration.evidence["checkout_id"] == str(checkout.id) and declaration.evidence["submitted_at"]
        assert (consent.channel, consent.status, consent.source) == ("email", "granted", "donate_form")
        assert consent.wording_version
        with runtime.read_session() as session:
            types = sorted(h.type for h in session.exec(select(HistoryEntry)).all())
        assert types == ["consent", "declaration"]
        assert (checkout.kind, checkout.status, checkout.provider) == ("donation", CheckoutStatus.OPEN, "stripe")
        assert (checkout.amount, checkout.currency, checkout.frequency, checkout.method) == (
            1250,
            "GBP",
            "once",
            "card",
        )
        assert (checkout.appeal, checkout.declaration_id, checkout.supporter_id) == (
            "WINTER26",
            declaration.id,
            supporter.id,
        )
        assert checkout.stripe_checkout_session_id == "cs_test_0001"
        assert checkout.redirect_url == response.headers["location"]
        assert checkout.donor["address_line1"] == "10 Downing Street" and checkout.donor["title"] == "Ms"

        [sent] = stripe.requests
        assert sent.headers["idempotency-key"] == f"checkout:{checkout.id}:session"
        ids = {
            "checkout_id": str(checkout.id),
            "supporter_id": str(supporter.id),
            "declaration_id": str(declaration.id),
            "appeal": "WINTER26",
        }
        assert form_of(sent) == {
            "mode": "payment",
            "submit_type": "donate",
            "client_reference_id": str(checkout.id),
            "customer_email": "amina.okafor@example.org",
            "success_url": f"http://testserver/donate/thank-you?checkout={checkout.id}",
            "cancel_url": f"http://testserver/donate/cancelled?checkout={checkout.id}",
            "line_items[0][price_data][currency]": "gbp",
            "line_items[0][price_data][unit_amount]": "1250",
            "line_items[0][price_data][product_data][name]": "Donation",
            "line_items[0][quantity]": "1",
            **{f"metadata[{k}]": v for k, v in ids.items()},
            **{f"payment_intent_data[metadata][{k}]": v for k, v in ids.items()},
        }

    def test_monthly_is_a_subscription_session_with_a_monthly_price(
        self, client: TestClient, runtime: Runtime, stripe: StripeCheckout
    ) -> None:
        response = donate(client, amount="5", frequency="monthly")

        assert response.status_code == 303
        checkout = only(runtime, Checkout)
        assert (checkout.frequency, checkout.amount, checkout.declaration_id) == ("monthly", 500, None)
        sent = form_of(stripe.requests[0])
        assert sent["mode"] == "subscription" and "submit_type" not in sent
        assert sent["line_items[0][price_data][recurring][interval]"] == "month"
        assert sent["line_items[0][price_data][unit_amount]"] == "500"
        assert sent["subscription_data[metadata][checkout_id]"] == str(checkout.id)
        assert sent["metadata[checkout_id]"] == str(checkout.id)
        assert not any(key.startswith("payment_intent_data") for key in sent)
        assert "metadata[declaration_id]" not in sent and "metadata[appeal]" not in sent
        # No Gift Aid, no consent asked for: neither is recorded.
        assert counts(runtime)["declarations"] == 0 and counts(runtime)["consents"] == 0

    @pytest.mark.parametrize(("typed", "pence"), [("1", 100), ("£1,000", 100_000), ("10000.00", 1_000_000)])
    def test_amounts_within_the_bounds_are_taken(
        self, client: TestClient, runtime: Runtime, stripe: StripeCheckout, typed: str, pence: int
    ) -> None:
        assert donate(client, amount=typed).status_code == 303
        assert only(runtime, Checkout).amount == pence


class TestDirectDebitDonation:
    def test_monthly_creates_a_billing_request_with_a_mandate_only_then_its_flow(
        self, client: TestClient, runtime: Runtime, gocardless: GoCardlessFlow, fake_gocardless: FakeProvider
    ) -> None:
        response = donate(client, method="direct_debit", frequency="monthly", amount="8", gift_aid="yes")

        assert response.status_code == 303
        assert response.headers["location"] == "https://pay.gocardless.test/billing/static/flow?id=BRF000002"
        checkout = only(runtime, Checkout)
        declaration = only(runtime, Declaration)
        assert (checkout.provider, checkout.status) == ("gocardless", CheckoutStatus.OPEN)
        assert checkout.gocardless_billing_request_id == "BRQ000001"
        [billing_request] = fake_gocardless.requests_to("POST", r"/billing_requests")
        [flow] = fake_gocardless.requests_to("POST", r"/billing_request_flows")
        assert billing_request.headers["idempotency-key"] == f"checkout:{checkout.id}:billing_request"
        ids = {"checkout_id": str(checkout.id), "supporter_id": str(checkout.supporter_id)}
        # No subscription_request: GoCardless refuses one on Bacs (fake_gocardless too); our code creates the
        # subscription on `billing_requests.fulfilled` (tests/payments/test_s12e_dd_monthly_subscription.py).
        assert billing_request.json == {
            "billing_requests": {
                "mandate_request": {"currency": "GBP", "scheme": "bacs", "metadata": ids},
                "metadata": {**ids, "declaration_id": str(declaration.id)},
            }
        }
        assert flow.json == {
            "billing_request_flows": {
                "links": {"billing_request": "BRQ000001"},
                "redirect_uri": f"http://testserver/donate/direct-debit/return?checkout={checkout.id}",
                "exit_uri": f"http://testserver/donate/direct-debit/exit?checkout={checkout.id}",
                "prefilled_customer": {
                    "given_name": "Amina",
                    "family_name": "Okafor",
                    "email": "amina.okafor@example.org",
                    "address_line1": "10 Downing Street",
                    "city": "London",
                    "postal_code": "SW1A 2AA",
                    "country_code": "GB",
                },
            }
        }

    def test_one_off_sets_up_a_mandate_only(
        self, client: TestClient, runtime: Runtime, gocardless: GoCardlessFlow, fake_gocardless: FakeProvider
    ) -> None:
        assert donate(client, method="direct_debit", frequency="once", amount="20").status_code == 303
        [billing_request] = fake_gocardless.requests_to("POST", r"/billing_requests")
        body = billing_request.json["billing_requests"]
        assert set(body) == {"mandate_request", "metadata"}
        checkout = only(runtime, Checkout)
        assert (checkout.amount, checkout.frequency, checkout.method) == (2000, "once", "direct_debit")


INVALID_FORMS = [
    # (what is changed, the field in error, words of its message)
    ({"amount": "0.99"}, "amount", "smallest"),
    ({"amount": "10000.01"}, "amount", "largest"),
    ({"amount": "12.345"}, "amount", "2 decimal places"),
    ({"amount": "twelve"}, "amount", "in pounds"),
    ({"amount": "-5"}, "amount", "smallest"),
    ({"amount": ""}, "amount", "in pounds"),
    ({"frequency": "weekly"}, "frequency", "one-off or monthly"),
    ({"method": "cash"}, "method", "card or Direct Debit"),
    ({"email": "not-an-email"}, "email", "valid email"),
    ({"email": ""}, "email", "email address"),
    ({"first_name": ""}, "first_name", "first name"),
    ({"title": "Professor"}, "title", "1 to 4 letters"),
    ({"gift_aid": "yes", "address_line1": ""}, "address_line1", "house name or number"),
    ({"gift_aid": "yes", "postcode": "NOPE"}, "postcode", "UK postcode"),
    ({"appeal": "<script>"}, "appeal", "appeal code"),
    ({"website": "http://spam.example"}, "form", "could not accept"),
]


class TestInvalidDonations:
    @pytest.fixture
    def settings(
        self, database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider
    ) -> Settings:
        return checkout_settings(
            database_url, tmp_path, fake_stripe.url, fake_gocardless.url, web={"form_rate_per_minute": 1000}
        )

    def test_each_re_renders_with_its_error_and_creates_nothing_here_or_at_the_provider(
        self,
        client: TestClient,
        runtime: Runtime,
        stripe: StripeCheckout,
        fake_stripe: FakeProvider,
        fake_gocardless: FakeProvider,
    ) -> None:
        for fields, field, message in INVALID_FORMS:
            response = donate(client, **fields)
            assert response.status_code == 400, fields
            assert "There is a problem" in response.text, fields
            assert message in response.text, fields
            assert f'href="#{field}"' in response.text, fields
            assert 'value="Okafor"' in response.text, fields  # what was typed is kept
        assert nothing_recorded(runtime)
        assert fake_stripe.requests == [] and fake_gocardless.requests == []

    def test_the_refused_form_keeps_its_reference_so_the_corrected_form_is_one_checkout(
        self, client: TestClient, runtime: Runtime, stripe: StripeCheckout
    ) -> None:
        ref = str(uuid.uuid4())
        refused = donate(client, amount="0.50", checkout_ref=ref)
        assert f'name="checkout_ref" value="{ref}"' in refused.text
        assert donate(client, amount="5", checkout_ref=ref).status_code == 303
        assert str(only(runtime, Checkout).id) == ref


class TestGiftAidAddresses:
    def test_a_jersey_postcode_is_recorded_as_non_uk(
        self, client: TestClient, runtime: Runtime, stripe: StripeCheckout
    ) -> None:
        response = donate(client, gift_aid="yes", address_line1="Le Clos, Rue de la Mare", postcode="JE3 1AB")
        assert response.status_code == 303
        declaration = only(runtime, Declaration)
        assert (declaration.country, declaration.non_uk, declaration.postcode) == ("JE", True, "JE3 1AB")

    def test_an_overseas_donor_needs_no_uk_postcode(
        self, client: TestClient, runtime: Runtime, stripe: StripeCheckout
    ) -> None:
        fields = {"gift_aid": "yes", "address_line1": "4 Rue de Rivoli", "town": "Paris", "postcode": "75004"}
        assert donate(client, country="fr", **fields).status_code == 303
        declaration = only(runtime, Declaration)
        assert (declaration.country, declaration.non_uk, declaration.house) == (
            "FR",
            True,
            "4 Rue de Rivoli, Paris, 75004",
        )


class TestProviderFailures:
    def test_stripe_down_shows_503_marks_the_checkout_failed_and_a_retry_reuses_it(
        self, client: TestClient, runtime: Runtime, stripe: StripeCheckout
    ) -> None:
        ref = str(uuid.uuid4())
        stripe.failure = (500, {"error": {"type": "api_error", "message": "boom"}})

        failed = donate(client, gift_aid="yes", checkout_ref=ref)

        assert failed.status_code == 503
        assert "could not reach our payment provider" in failed.text
        assert f'name="checkout_ref" value="{ref}"' in failed.text  # the Try again button re-sends the same form
        assert 'name="website"' not in failed.text
        checkout = only(runtime, Checkout)
        assert (str(checkout.id), checkout.status, checkout.stripe_checkout_session_id) == (ref, "failed", None)
        # The SDK retried the call itself, always under the same key.
        keys = {r.headers["idempotency-key"] for r in stripe.requests}
        assert keys == {f"checkout:{ref}:session"} and len(stripe.requests) == 3

        stripe.failure = None
        retried = donate(client, gift_aid="yes", checkout_ref=ref)

        assert retried.status_code == 303
        assert retried.headers["location"] == "https://checkout.stripe.test/c/pay/cs_test_0001"
        checkout = only(runtime, Checkout)
        assert (checkout.status, checkout.stripe_checkout_session_id) == ("open", "cs_test_0001")
        assert counts(runtime)["declarations"] == 1  # the retry recorded nothing twice
        # Stripe answered the first try (500) and would replay that answer under its key: the retry sends the next.
        keys = {r.headers["idempotency-key"] for r in stripe.requests}
        assert keys == {f"checkout:{ref}:session", f"checkout:{ref}:session:1"}

    def test_a_refusal_by_stripe_is_a_502_page(
        self, client: TestClient, runtime: Runtime, stripe: StripeCheckout
    ) -> None:
        stripe.failure = (400, {"error": {"type": "invalid_request_error", "message": "Invalid currency"}})
        response = donate(client)
        assert response.status_code == 502
        assert "could not start your payment" in response.text
        assert only(runtime, Checkout).status == "failed"

    def test_gocardless_down_shows_503(
        self, client: TestClient, runtime: Runtime, gocardless: GoCardlessFlow, fake_gocardless: FakeProvider
    ) -> None:
        gocardless.failure = (
            500,
            {"error": {"type": "gocardless", "code": 500, "message": "down", "errors": [], "request_id": "x"}},
        )
        response = donate(client, method="direct_debit")
        assert response.status_code == 503
        assert only(runtime, Checkout).status == "failed"
        assert fake_gocardless.requests_to("POST", r"/billing_request_flows") == []

    def test_sending_the_same_form_twice_goes_to_the_same_session(
        self, client: TestClient, runtime: Runtime, stripe: StripeCheckout
    ) -> None:
        ref = str(uuid.uuid4())
        first = donate(client, checkout_ref=ref, email_updates="yes")
        second = donate(client, checkout_ref=ref, email_updates="yes")
        assert first.status_code == second.status_code == 303
        assert first.headers["location"] == second.headers["location"]
        assert len(stripe.requests) == 1
        assert counts(runtime)["checkouts"] == 1 and counts(runtime)["consents"] == 1

    def test_a_double_click_sent_at_once_makes_one_checkout_and_one_session(
        self, client: TestClient, runtime: Runtime, stripe: StripeCheckout
    ) -> None:
        ref = str(uuid.uuid4())
        barrier = threading.Barrier(2)
        responses: list[Any] = []

        def click() -> None:
            barrier.wait()
            responses.append(donate(client, checkout_ref=ref, gift_aid="yes", email="new.donor@example.org"))

        threads = [threading.Thread(target=click) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert [r.status_code for r in responses] == [303, 303]
        assert {r.headers["location"] for r in responses} == {"https://checkout.stripe.test/c/pay/cs_test_0001"}
        assert {k: v for k, v in counts(runtime).items() if v} == {
            "supporters": 1,
            "supporter_addresses": 1,
            "declarations": 1,
            "history": 1,
            "checkouts": 1,
        }
        assert {r.headers["idempotency-key"] for r in stripe.requests} == {f"checkout:{ref}:session"}

    def test_the_same_reference_with_other_details_is_a_new_checkout(
        self, client: TestClient, runtime: Runtime, stripe: StripeCheckout
    ) -> None:
        ref = str(uuid.uuid4())
        donate(client, checkout_ref=ref, amount="5")
        donate(client, checkout_ref=ref, amount="6")
        with runtime.read_session() as session:
            amounts = sorted((c.amount, str(c.id) == ref) for c in session.exec(select(Checkout)).all())
        assert amounts == [(500, True), (600, False)]
        assert len({r.headers["idempotency-key"] for r in stripe.requests}) == 2


class TestProviderDisabled:
    @pytest.fixture
    def settings(
        self, database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider
    ) -> Settings:
        return checkout_settings(
            database_url, tmp_path, fake_stripe.url, fake_gocardless.url, stripe={"secret_key": ""}
        )

    def test_card_answers_503_and_records_nothing_while_direct_debit_still_works(
        self,
        client: TestClient,
        runtime: Runtime,
        fake_stripe: FakeProvider,
        gocardless: GoCardlessFlow,
    ) -> None:
        page = client.get("/donate")
        assert re.search(r'value="card"[^>]* disabled', page.text)
        assert re.search(r'value="direct_debit" checked', page.text)

        refused = donate(client, method="card", gift_aid="yes")
        assert refused.status_code == 503
        assert "Card payments cannot be taken online" in refused.text
        assert nothing_recorded(runtime) and fake_stripe.requests == []

        assert donate(client, method="direct_debit").status_code == 303


class TestRateLimit:
    @pytest.fixture
    def settings(
        self, database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider
    ) -> Settings:
        return checkout_settings(
            database_url, tmp_path, fake_stripe.url, fake_gocardless.url, web={"form_rate_per_minute": 3}
        )

    def test_the_fourth_form_in_a_minute_from_one_address_is_429(
        self, client: TestClient, runtime: Runtime, stripe: StripeCheckout
    ) -> None:
        # Refused forms count too: card testers send bad ones.
        assert donate(client, amount="0").status_code == 400
        assert donate(client).status_code == 303
        assert client.post("/shop/checkout", data={}).status_code == 400  # the shop shares the counter
        blocked = donate(client)
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) >= 1
        assert "Too many attempts" in blocked.text
        assert len(stripe.requests) == 1 and counts(runtime)["checkouts"] == 1


class TestReturnPages:
    def test_pages_donors_come_back_to(self, client: TestClient) -> None:
        pages = {
            "/donate/thank-you?checkout=x": "Thank you for your donation",
            "/donate/cancelled?checkout=x": "not completed",
            "/donate/direct-debit/return?checkout=x": "Direct Debit is being set up",
            "/donate/direct-debit/exit?checkout=x": "was not set up",
            "/shop/thank-you?checkout=x": "Thank you for your order",
            "/shop/cancelled?checkout=x": "not completed",
        }
        for path, text in pages.items():
            response = client.get(path)
            assert response.status_code == 200 and text in response.text, path
