"""The Stripe seam: the only module that makes outbound Stripe API calls. Returns plain dicts, never SDK objects.

The API version is pinned to the SDK's (stripe 16.1.0: 2026-10-28.endive). `[stripe] api_base` points the client at
another server (tests run a local one).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import requests
import stripe as stripe_lib

from core.settings import StripeSettings
from payments.errors import ProviderDisabled, ProviderRefused, ProviderUnavailable

API_VERSION = "2026-10-28.endive"
DEFAULT_API_BASE = "https://api.stripe.com"


@lru_cache(maxsize=8)
def _client(secret_key: str, api_base: str) -> stripe_lib.StripeClient:
    base = {"api": api_base} if api_base else None
    return stripe_lib.StripeClient(
        secret_key,
        stripe_version=API_VERSION,
        base_addresses=base,  # type: ignore[arg-type]
        max_network_retries=2,
        http_client=stripe_lib.RequestsClient(session=_session(api_base or DEFAULT_API_BASE)),
    )


def _session(api_base: str) -> requests.Session:
    """A requests session that reads the proxy environment once, here. With `trust_env` on (the default) requests
    reads netrc and every proxy variable again on each call, which was a fifth of a webhook worker's CPU per event
    (docs/payments.md, "Measured"); certificates are the SDK's own bundle either way."""
    session = requests.Session()
    session.trust_env = False
    session.proxies.update(requests.utils.get_environ_proxies(api_base))
    return session


class StripeGateway:
    def __init__(self, settings: StripeSettings):
        key = settings.secret_key.get_secret_value()
        if not key:
            raise ProviderDisabled("Stripe is not configured")
        self.client = _client(key, settings.api_base)

    @staticmethod
    def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (stripe_lib.APIConnectionError, stripe_lib.RateLimitError) as exc:
            raise ProviderUnavailable(f"Stripe is unavailable: {exc.user_message or exc}") from exc
        except stripe_lib.APIError as exc:
            raise ProviderUnavailable(f"Stripe failed: {exc.user_message or exc}") from exc
        except stripe_lib.StripeError as exc:
            raise ProviderRefused(f"Stripe refused: {exc.user_message or exc}") from exc

    @staticmethod
    def _dict(obj: Any) -> dict[str, Any]:
        return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)

    # Checkout
    def create_checkout_session(self, params: dict[str, Any], *, idempotency_key: str) -> dict[str, Any]:
        session = self._call(self.client.v1.checkout.sessions.create, params, {"idempotency_key": idempotency_key})
        return self._dict(session)

    def retrieve_checkout_session(self, session_id: str) -> dict[str, Any]:
        return self._dict(self._call(self.client.v1.checkout.sessions.retrieve, session_id))

    def list_line_items(self, session_id: str) -> list[dict[str, Any]]:
        page = self._call(self.client.v1.checkout.sessions.line_items.list, session_id, {"limit": 100})
        return [self._dict(item) for item in page.auto_paging_iter()]

    # Payments
    def retrieve_payment_intent(self, payment_intent_id: str) -> dict[str, Any]:
        return self._dict(self._call(self.client.v1.payment_intents.retrieve, payment_intent_id))

    def retrieve_charge(self, charge_id: str) -> dict[str, Any]:
        return self._dict(self._call(self.client.v1.charges.retrieve, charge_id))

    def list_refunds(self, charge_id: str) -> list[dict[str, Any]]:
        page = self._call(self.client.v1.refunds.list, {"charge": charge_id, "limit": 100})
        return [self._dict(refund) for refund in page.auto_paging_iter()]

    def retrieve_dispute(self, dispute_id: str) -> dict[str, Any]:
        return self._dict(self._call(self.client.v1.disputes.retrieve, dispute_id))

    # Subscriptions
    def retrieve_subscription(self, subscription_id: str) -> dict[str, Any]:
        return self._dict(self._call(self.client.v1.subscriptions.retrieve, subscription_id))

    def retrieve_invoice(self, invoice_id: str) -> dict[str, Any]:
        return self._dict(self._call(self.client.v1.invoices.retrieve, invoice_id))

    def list_invoice_payments(self, invoice_id: str) -> list[dict[str, Any]]:
        page = self._call(self.client.v1.invoice_payments.list, {"invoice": invoice_id, "limit": 100})
        return [self._dict(payment) for payment in page.auto_paging_iter()]

    # Payouts
    def retrieve_payout(self, payout_id: str) -> dict[str, Any]:
        return self._dict(self._call(self.client.v1.payouts.retrieve, payout_id))

    def iter_payout_balance_transactions(self, payout_id: str) -> Iterator[dict[str, Any]]:
        """Every balance transaction the payout settles (its own included), `source` expanded, every page."""
        page = self._call(
            self.client.v1.balance_transactions.list,
            {"payout": payout_id, "expand": ["data.source"], "limit": 100},
        )
        for transaction in page.auto_paging_iter():
            yield self._dict(transaction)

    # Events (the nightly catch-up)
    def iter_events(self, *, created_since: dt.datetime) -> Iterator[dict[str, Any]]:
        page = self._call(
            self.client.v1.events.list, {"created": {"gte": int(created_since.timestamp())}, "limit": 100}
        )
        for event in page.auto_paging_iter():
            yield self._dict(event)

    # Webhook processing: the payment intent with its latest charge (id and time the money was taken).
    def retrieve_payment_intent_with_charge(self, payment_intent_id: str) -> dict[str, Any]:
        intent = self._call(self.client.v1.payment_intents.retrieve, payment_intent_id, {"expand": ["latest_charge"]})
        return self._dict(intent)


def stripe_gateway(settings: StripeSettings) -> StripeGateway:
    return StripeGateway(settings)
