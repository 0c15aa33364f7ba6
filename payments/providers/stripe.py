"""The Stripe seam: the only module that makes outbound Stripe API calls. Returns plain dicts, never SDK objects.

The API version is pinned to the SDK's (stripe 16.1.0: 2026-10-28.endive). `[stripe] api_base` points the client at
another server (tests run a local one).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

import requests.utils
import stripe as stripe_lib
import urllib3

from core.settings import StripeSettings
from payments.errors import ProviderBusy, ProviderDisabled, ProviderRefused, ProviderUnavailable
from payments.providers import every_item

API_VERSION = "2026-10-28.endive"
DEFAULT_API_BASE = "https://api.stripe.com"

# A request whose idempotency key Stripe is still processing (409 `idempotency_key_in_use`: a double click reached
# Stripe while the first click's request was running). The SDK already sends it again twice by itself (409 is
# retried unless Stripe answers `Stripe-Should-Retry: false`), after 0.5 s and 0.5-1 s; creating a Checkout Session
# can take longer than that. So the session is asked for again, with the same key, after these pauses, for at most
# KEY_IN_USE_PATIENCE seconds in all: Stripe then answers what it saved for the first request (the same session).
KEY_IN_USE_PAUSES = (0.25, 0.5, 1.0, 2.0)
KEY_IN_USE_PATIENCE = 5.0


# Creating a Checkout Session while a donor waits on the form: the SDK's 80 seconds a try, three tries, kept a donor
# four minutes before any page, long after a proxy in front of Giving (60 seconds is usual) or the browser gave up
# with a page of its own, and held a web thread all that time. These bounds give up in about half a minute (three
# tries of 10 seconds when Stripe accepts the connection and does not answer), still under the same idempotency key,
# so a session Stripe made meanwhile is the one "Try again" gets. Other calls (webhook jobs) keep the SDK's patience.
DONOR_CONNECT_TIMEOUT = 5.0
DONOR_READ_TIMEOUT = 10.0


@lru_cache(maxsize=8)
def _client(secret_key: str, api_base: str, *, donor_waiting: bool = False) -> stripe_lib.StripeClient:
    base = {"api": api_base} if api_base else None
    timeouts = {"connect_timeout": DONOR_CONNECT_TIMEOUT, "read_timeout": DONOR_READ_TIMEOUT} if donor_waiting else {}
    return stripe_lib.StripeClient(
        secret_key,
        stripe_version=API_VERSION,
        base_addresses=base,  # type: ignore[arg-type]
        max_network_retries=2,
        http_client=Urllib3Client(api_base or DEFAULT_API_BASE, **timeouts),
    )


POOL_CONNECTIONS = 10
# Failing to connect (refused connections included), timeouts, a dropped connection: the SDK may try again.
_RETRYABLE = (urllib3.exceptions.TimeoutError, urllib3.exceptions.ProtocolError, urllib3.exceptions.ProxyError)


def _proxy_for(api_base: str) -> str | None:
    """The proxy requests would use for `api_base`, by its rules for the environment (`https_proxy`, `all_proxy`,
    `no_proxy` with its CIDR ranges, a proxy written without a scheme), so moving off requests changed none."""
    proxy = requests.utils.select_proxy(api_base, requests.utils.get_environ_proxies(api_base))
    return requests.utils.prepend_scheme_if_needed(proxy, "http") if proxy else None


class Urllib3Client(stripe_lib.HTTPClient):
    """The SDK's HTTP calls on one thread-safe urllib3 pool. The SDK's default, requests, costs about 0.3 ms more
    CPU a call in merging settings, hooks and adapters (measured: 0.44 against 0.77-0.83 ms per payment intent
    retrieved, a webhook worker's one call per checkout). The proxy environment is read once, here; certificates
    are the SDK's own bundle. Every failure is the SDK's APIConnectionError, as with its RequestsClient: failing to
    connect, timeouts and dropped connections are retried by the SDK; a certificate failure or anything else is
    not."""

    name = "urllib3"

    def __init__(self, api_base: str, *, connect_timeout: float = 30, read_timeout: float = 80):
        super().__init__()
        options: dict[str, Any] = {
            # Connections kept per host, as requests keeps: one per worker thread, or each call beyond the first
            # would open a new connection and throw it away.
            "maxsize": POOL_CONNECTIONS,
            "retries": False,  # the SDK retries (max_network_retries), with its idempotency keys
            "timeout": urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            "cert_reqs": "CERT_REQUIRED",
            "ca_certs": stripe_lib.ca_bundle_path,
        }
        proxy = _proxy_for(api_base)
        if proxy is None:
            self._pool: urllib3.PoolManager = urllib3.PoolManager(**options)
        elif proxy.lower().startswith("socks"):
            from urllib3.contrib.socks import SOCKSProxyManager  # needs PySocks, as requests does for SOCKS

            self._pool = SOCKSProxyManager(proxy, **options)
        else:
            self._pool = urllib3.ProxyManager(proxy, **options)

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[Any, int, Mapping[str, str]]:
        try:
            response = self._pool.request(
                method.upper(), url, headers=dict(headers or {}), body=post_data, redirect=False
            )
        except urllib3.exceptions.SSLError as exc:
            raise stripe_lib.APIConnectionError(f"could not verify Stripe's certificate: {exc}") from exc
        except _RETRYABLE as exc:
            certificate = isinstance(getattr(exc, "original_error", None), urllib3.exceptions.SSLError)
            raise stripe_lib.APIConnectionError(f"could not reach Stripe: {exc}", should_retry=not certificate) from exc
        except Exception as exc:
            raise stripe_lib.APIConnectionError(f"could not reach Stripe: {exc!r}") from exc
        return response.data, response.status, response.headers

    def close(self) -> None:
        self._pool.clear()


class StripeGateway:
    def __init__(self, settings: StripeSettings):
        key = settings.secret_key.get_secret_value()
        if not key:
            raise ProviderDisabled("Stripe is not configured")
        self.client = _client(key, settings.api_base)
        # For the call a donor waits on (create_checkout_session): bounded well inside a minute.
        self.donor_client = _client(key, settings.api_base, donor_waiting=True)

    @staticmethod
    def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except stripe_lib.APIConnectionError as exc:
            raise ProviderUnavailable(f"Stripe is unavailable: {exc.user_message or exc}") from exc
        except stripe_lib.RateLimitError as exc:
            raise ProviderUnavailable(f"Stripe is unavailable: {exc.user_message or exc}", answered=True) from exc
        except stripe_lib.StripeError as exc:
            if _key_in_use(exc):
                # Stripe kept nothing under the key for this request: the same key is sent again, not the next.
                raise ProviderBusy(f"Stripe is still processing this request: {exc.user_message or exc}") from exc
            if isinstance(exc, stripe_lib.APIError):
                raise ProviderUnavailable(f"Stripe failed: {exc.user_message or exc}", answered=True) from exc
            raise ProviderRefused(f"Stripe refused: {exc.user_message or exc}") from exc

    @staticmethod
    def _dict(obj: Any) -> dict[str, Any]:
        return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)

    def _every(self, fn: Any, *args: Any) -> Iterator[dict[str, Any]]:
        """Every item of a list call, page after page, each page's errors mapped (`every_item`)."""
        return every_item(self._call, self._call(fn, *args).auto_paging_iter(), self._dict)

    # Checkout
    def create_checkout_session(self, params: dict[str, Any], *, idempotency_key: str) -> dict[str, Any]:
        """The session for this key. While Stripe is still processing an earlier request with the same key (a
        double click), it is asked again with the same key, for at most KEY_IN_USE_PATIENCE seconds, and answers
        the first request's session; past that, ProviderBusy."""
        deadline = time.monotonic() + KEY_IN_USE_PATIENCE
        pauses = iter(KEY_IN_USE_PAUSES)
        while True:
            try:
                session = self._call(
                    self.donor_client.v1.checkout.sessions.create, params, {"idempotency_key": idempotency_key}
                )
                return self._dict(session)
            except ProviderBusy:
                pause = next(pauses, KEY_IN_USE_PAUSES[-1])
                if time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)

    def expire_checkout_session(self, session_id: str) -> dict[str, Any]:
        """Close an open Checkout Session: the donor can no longer pay on it (Stripe refuses one that is not open)."""
        return self._dict(self._call(self.client.v1.checkout.sessions.expire, session_id))

    def retrieve_checkout_session(self, session_id: str) -> dict[str, Any]:
        return self._dict(self._call(self.client.v1.checkout.sessions.retrieve, session_id))

    def list_line_items(self, session_id: str) -> list[dict[str, Any]]:
        return list(self._every(self.client.v1.checkout.sessions.line_items.list, session_id, {"limit": 100}))

    # Payments
    def retrieve_payment_intent(self, payment_intent_id: str) -> dict[str, Any]:
        return self._dict(self._call(self.client.v1.payment_intents.retrieve, payment_intent_id))

    def retrieve_charge(self, charge_id: str) -> dict[str, Any]:
        return self._dict(self._call(self.client.v1.charges.retrieve, charge_id))

    def list_refunds(self, charge_id: str) -> list[dict[str, Any]]:
        return list(self._every(self.client.v1.refunds.list, {"charge": charge_id, "limit": 100}))

    def retrieve_dispute(self, dispute_id: str) -> dict[str, Any]:
        return self._dict(self._call(self.client.v1.disputes.retrieve, dispute_id))

    # Subscriptions
    def retrieve_subscription(self, subscription_id: str) -> dict[str, Any]:
        return self._dict(self._call(self.client.v1.subscriptions.retrieve, subscription_id))

    def cancel_subscription(self, subscription_id: str, *, comment: str) -> dict[str, Any]:
        """Cancel now (no proration, no final invoice): no further instalment is taken."""
        params = {"cancellation_details": {"comment": comment[:500]}}
        return self._dict(self._call(self.client.v1.subscriptions.cancel, subscription_id, params))

    # Customers (an erasure: their name, email, address and saved cards go; the id stays in our books)
    def delete_customer(self, customer_id: str) -> bool:
        """Delete a customer (`DELETE /v1/customers/{id}`: its payment methods are detached, any subscription
        left is cancelled). False when it was deleted already (Stripe shows it `deleted`, or knows no such
        customer)."""
        try:
            self._call(self.client.v1.customers.delete, customer_id)
        except ProviderRefused:
            try:
                customer = self._dict(self._call(self.client.v1.customers.retrieve, customer_id))
            except ProviderRefused as missing:
                if getattr(missing.__cause__, "http_status", None) == 404:
                    return False
                raise
            if customer.get("deleted"):
                return False
            raise
        return True

    def retrieve_invoice(self, invoice_id: str) -> dict[str, Any]:
        return self._dict(self._call(self.client.v1.invoices.retrieve, invoice_id))

    def list_invoice_payments(self, invoice_id: str) -> list[dict[str, Any]]:
        return list(self._every(self.client.v1.invoice_payments.list, {"invoice": invoice_id, "limit": 100}))

    # Payouts
    def retrieve_payout(self, payout_id: str) -> dict[str, Any]:
        return self._dict(self._call(self.client.v1.payouts.retrieve, payout_id))

    def iter_payout_balance_transactions(self, payout_id: str) -> Iterator[dict[str, Any]]:
        """Every balance transaction the payout settles (its own included), `source` expanded, every page."""
        return self._every(
            self.client.v1.balance_transactions.list, {"payout": payout_id, "expand": ["data.source"], "limit": 100}
        )

    # Events (the nightly catch-up)
    def iter_events(self, *, created_since: dt.datetime) -> Iterator[dict[str, Any]]:
        return self._every(
            self.client.v1.events.list, {"created": {"gte": int(created_since.timestamp())}, "limit": 100}
        )

    # Webhook processing: the payment intent with its latest charge (id and time the money was taken).
    def retrieve_payment_intent_with_charge(self, payment_intent_id: str) -> dict[str, Any]:
        intent = self._call(self.client.v1.payment_intents.retrieve, payment_intent_id, {"expand": ["latest_charge"]})
        return self._dict(intent)


def _key_in_use(exc: stripe_lib.StripeError) -> bool:
    """Stripe's 409 for a request whose idempotency key another request is still using (the SDK raises it as an
    APIError: a 409 is neither a 400 nor a 404)."""
    code = exc.code or (exc.error.code if exc.error is not None else None)
    return exc.http_status == 409 and code == "idempotency_key_in_use"


def stripe_gateway(settings: StripeSettings) -> StripeGateway:
    return StripeGateway(settings)
