"""A list call's later pages are asked while iterating: their errors are the gateway's (ProviderUnavailable, as for
any call), not a raw SDK or `requests` error that reached the job or the command as a traceback (found in review,
h9 and h16: `giving events catch-up` with GoCardless unreachable)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pydantic import SecretStr

from core.settings import GoCardlessSettings, StripeSettings
from payments.errors import ProviderUnavailable
from payments.providers.gocardless import GoCardlessGateway
from payments.providers.stripe import StripeGateway
from tests.fakes.provider_server import FakeProvider, RecordedRequest


def test_a_stripe_list_whose_second_page_fails_is_provider_unavailable(fake_stripe: FakeProvider) -> None:
    def refunds(request: RecordedRequest) -> tuple[int, Any]:
        if request.param("starting_after"):
            return 503, {"error": {"type": "api_error", "message": "down for a moment"}}
        refund = {"id": "re_1", "object": "refund", "amount": 500, "charge": "ch_1", "status": "succeeded"}
        return 200, {"object": "list", "url": "/v1/refunds", "has_more": True, "data": [refund]}

    fake_stripe.route("GET", r"/v1/refunds", refunds)
    gateway = StripeGateway(StripeSettings(secret_key=SecretStr("sk_test_pages"), api_base=fake_stripe.url))

    with pytest.raises(ProviderUnavailable, match="Stripe"):
        gateway.list_refunds("ch_1")
    assert len(fake_stripe.requests_to("GET", r"/v1/refunds")) >= 2  # the second page was asked for


def test_gocardless_events_listed_while_gocardless_is_unreachable_are_provider_unavailable() -> None:
    gateway = GoCardlessGateway(GoCardlessSettings(access_token=SecretStr("gc_test"), base_url="http://127.0.0.1:1"))
    events = gateway.iter_events(created_since=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(ProviderUnavailable, match="GoCardless is unavailable"):
        list(events)
