"""The GoCardless seam: the only module that makes outbound GoCardless API calls. Returns plain dicts.

`[gocardless] base_url` points the client at another server (tests run a local one).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import gocardless_pro
import gocardless_pro.errors as gc_errors
import requests

from core.settings import GoCardlessSettings
from payments.errors import ProviderDisabled, ProviderRefused, ProviderUnavailable
from payments.providers import every_item

TIMEOUT = 20
# The billing request and its flow are made while a donor waits on the donate form, one after the other, and the SDK
# tries each create three times: 20 seconds a try kept the donor two minutes, long after a proxy in front of Giving
# (60 seconds is usual) or the browser gave up. (connect, read) seconds for those two calls: each gives up within
# about 20 seconds, so both fit in the minute. The same idempotency key is kept, so a billing request GoCardless made
# meanwhile is the one the next try gets.
DONOR_TIMEOUT = (4.0, 6.0)


@lru_cache(maxsize=8)
def _client(
    access_token: str, environment: str, base_url: str, timeout: float | tuple[float, float] = TIMEOUT
) -> gocardless_pro.Client:
    if base_url:
        return gocardless_pro.Client(access_token=access_token, base_url=base_url, timeout=timeout)
    return gocardless_pro.Client(access_token=access_token, environment=environment, timeout=timeout)


class GoCardlessGateway:
    def __init__(self, settings: GoCardlessSettings):
        token = settings.access_token.get_secret_value()
        if not token:
            raise ProviderDisabled("GoCardless is not configured")
        self.client = _client(token, settings.environment, settings.base_url)
        # For the calls a donor waits on (the billing request and its flow): bounded well inside a minute.
        self.donor_client = _client(token, settings.environment, settings.base_url, DONOR_TIMEOUT)

    @staticmethod
    def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise ProviderUnavailable(f"GoCardless is unavailable: {exc}") from exc
        except requests.RequestException as exc:
            # The connection dropped while the answer was coming (ChunkedEncodingError and the like): no answer we
            # can read, so unreachable; GoCardless may have made the object, and the same key then returns it.
            raise ProviderUnavailable(f"GoCardless is unavailable: {exc}") from exc
        except gc_errors.GoCardlessInternalError as exc:
            raise ProviderUnavailable(f"GoCardless is unavailable: {exc}", answered=True) from exc
        except gc_errors.RateLimitError as exc:
            raise ProviderUnavailable(f"GoCardless asked us to slow down: {exc}", answered=True) from exc
        except gc_errors.MalformedResponseError as exc:
            # Not GoCardless's JSON: a 5xx page from its edge is an outage, anything else a refusal we cannot read.
            if (exc.status_code or 0) >= 500:
                raise ProviderUnavailable(f"GoCardless is unavailable: {exc}", answered=True) from exc
            raise ProviderRefused(f"GoCardless refused: {exc}") from exc
        except gc_errors.GoCardlessProError as exc:
            raise ProviderRefused(f"GoCardless refused: {exc}") from exc

    @staticmethod
    def _dict(resource: Any) -> dict[str, Any]:
        return dict(resource.attributes)

    def _every(self, fn: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every item of a list call (`.all()` asks nothing until iterated), each page's errors mapped: `every_item`."""
        return every_item(self._call, self._call(fn, **kwargs), self._dict)

    def create_billing_request(self, params: dict[str, Any], *, idempotency_key: str) -> dict[str, Any]:
        resource = self._call(
            self.donor_client.billing_requests.create, params=params, headers={"Idempotency-Key": idempotency_key}
        )
        return self._dict(resource)

    def create_billing_request_flow(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._dict(self._call(self.donor_client.billing_request_flows.create, params=params))

    def get_billing_request(self, billing_request_id: str) -> dict[str, Any]:
        return self._dict(self._call(self.client.billing_requests.get, billing_request_id))

    def cancel_billing_request(self, billing_request_id: str) -> dict[str, Any]:
        """Close a billing request the donor has not completed (GoCardless refuses one already fulfilled or ended)."""
        return self._dict(self._call(self.client.billing_requests.cancel, billing_request_id, params={}))

    def create_subscription(self, params: dict[str, Any], *, idempotency_key: str) -> dict[str, Any]:
        resource = self._call(
            self.client.subscriptions.create, params=params, headers={"Idempotency-Key": idempotency_key}
        )
        return self._dict(resource)

    def get_payment(self, payment_id: str) -> dict[str, Any]:
        return self._dict(self._call(self.client.payments.get, payment_id))

    def get_mandate(self, mandate_id: str) -> dict[str, Any]:
        return self._dict(self._call(self.client.mandates.get, mandate_id))

    def get_subscription(self, subscription_id: str) -> dict[str, Any]:
        return self._dict(self._call(self.client.subscriptions.get, subscription_id))

    def cancel_subscription(self, subscription_id: str) -> dict[str, Any]:
        return self._dict(self._call(self.client.subscriptions.cancel, subscription_id, params={}))

    def cancel_mandate(self, mandate_id: str) -> dict[str, Any]:
        return self._dict(self._call(self.client.mandates.cancel, mandate_id, params={}))

    def remove_customer(self, customer_id: str) -> bool:
        """Remove a customer's personal data at GoCardless (`DELETE /customers/{id}`; its id stays usable for the
        accounts). False when it was removed already (GoCardless no longer shows it: 404 or 410). GoCardless refuses
        while the customer still has an active mandate: ProviderRefused, as for any other refusal."""
        try:
            self._call(self.client.customers.remove, customer_id, params={})
        except ProviderRefused:
            try:
                self._call(self.client.customers.get, customer_id)
            except ProviderRefused as gone:
                if getattr(gone.__cause__, "code", None) in (404, 410):
                    return False
            raise
        return True

    def get_refund(self, refund_id: str) -> dict[str, Any]:
        return self._dict(self._call(self.client.refunds.get, refund_id))

    def get_payout(self, payout_id: str) -> dict[str, Any]:
        return self._dict(self._call(self.client.payouts.get, payout_id))

    def iter_payout_items(self, payout_id: str) -> Iterator[dict[str, Any]]:
        return self._every(self.client.payout_items.all, params={"payout": payout_id})

    def iter_events(self, *, created_since: dt.datetime) -> Iterator[dict[str, Any]]:
        since = created_since.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return self._every(self.client.events.all, params={"created_at[gte]": since})

    # Webhook processing: the one payment of a one-off Direct Debit gift, on the mandate the donor just set up.
    def create_payment(self, params: dict[str, Any], *, idempotency_key: str) -> dict[str, Any]:
        resource = self._call(self.client.payments.create, params=params, headers={"Idempotency-Key": idempotency_key})
        return self._dict(resource)


def gocardless_gateway(settings: GoCardlessSettings) -> GoCardlessGateway:
    return GoCardlessGateway(settings)
