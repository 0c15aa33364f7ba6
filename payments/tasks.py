"""Jobs of payments (dramatiq actors through core.jobs)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from core import jobs
from core.db import UnitOfWork
from core.runtime import get_runtime
from payments import checkout, service
from payments.errors import ProviderDisabled, ProviderRefused, RegularGiftStillLive
from payments.providers.gocardless import gocardless_gateway
from payments.providers.stripe import stripe_gateway


@jobs.periodic("payments.check_instalments", every=dt.timedelta(hours=6))
@jobs.actor("payments.check_instalments", queue="default", time_limit_ms=300_000, max_retries=2)
def check_instalments(uow: UnitOfWork) -> int:
    """An alert (a review item on the supporter) for each monthly gift whose instalment is overdue past the grace."""
    grace = get_runtime().settings.donations.regular_grace_days
    return service.raise_missing_instalment_alerts(uow, grace_days=grace)


@jobs.actor(
    service.CANCEL_REGULAR_GIFT,
    queue="default",
    time_limit_ms=120_000,
    max_retries=8,
    # Retried while the provider is unreachable; a provider switched off, or one that refuses (an unknown
    # subscription) or still collects after refusing, needs a person: failed at once, shown on the jobs check.
    gives_up_on=(ProviderDisabled, ProviderRefused, RegularGiftStillLive),
    on_give_up=lambda uow, arguments, error: service.cancellation_given_up(
        uow, uuid.UUID(arguments["regular_gift_id"]), error
    ),
)
def cancel_regular_gift(uow: UnitOfWork, regular_gift_id: str, end_mandate: bool = False) -> str:
    """Tell Stripe or GoCardless to stop a regular gift staff (or an erasure: the GoCardless mandate too)
    cancelled; retried while the provider is unreachable."""
    return service.cancel_regular_gift(uow, uuid.UUID(regular_gift_id), end_mandate=end_mandate, **_gateways())


@jobs.actor(
    service.END_AT_PROVIDERS,
    queue="default",
    time_limit_ms=300_000,
    max_retries=8,
    # Retried while a provider is unreachable; switched off, refusing (a mandate it will not cancel, a customer it
    # will not remove): a person looks (a failed job, and a review item on the erased record).
    gives_up_on=(ProviderDisabled, ProviderRefused, RegularGiftStillLive),
    on_give_up=lambda uow, arguments, error: service.provider_erasure_given_up(
        uow, [uuid.UUID(i) for i in arguments["supporter_ids"]], error
    ),
)
def end_at_providers(uow: UnitOfWork, supporter_ids: list[str], mandate_ids: list[str] | None = None) -> str:
    """An erasure: end every mandate we know for the supporter, then remove their customers at Stripe and
    GoCardless; retried while a provider is unreachable."""
    return service.end_at_providers(
        uow, [uuid.UUID(i) for i in supporter_ids], mandate_ids=mandate_ids or (), **_gateways()
    )


@jobs.actor(
    checkout.CLOSE_CHECKOUT,
    queue="default",
    time_limit_ms=120_000,
    max_retries=8,
    # Retried while the provider is unreachable; switched off, or refusing to close a page it still has open: a
    # person looks (a failed job).
    gives_up_on=(ProviderDisabled, ProviderRefused),
)
def close_checkout(uow: UnitOfWork, checkout_id: str) -> str:
    """Expire the provider page of a checkout Giving closed (its supporter's data was erased), so nobody pays on
    it; retried while the provider is unreachable."""
    return checkout.close_provider_page(uow, uuid.UUID(checkout_id), **_gateways())


def _gateways() -> dict[str, Any]:
    """The providers a job may call, made only if it does (a provider switched off raises then)."""
    settings = get_runtime().settings
    return {
        "stripe": lambda: stripe_gateway(settings.stripe),
        "gocardless": lambda: gocardless_gateway(settings.gocardless),
    }
