"""Event type → handler. A handler reads the provider's event and calls one payments.service function."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.clock import utc_now
from core.db import UnitOfWork
from core.settings import Settings
from payments.providers.gocardless import GoCardlessGateway, gocardless_gateway
from payments.providers.stripe import StripeGateway, stripe_gateway
from payments.schemas import Effect


@dataclass
class Context:
    uow: UnitOfWork
    settings: Settings
    event_type: str
    occurred_at: dt.datetime | None
    _gateways: dict[str, Any] = field(default_factory=dict)

    @property
    def at(self) -> dt.datetime:
        """The provider's time of the event (a tie-breaker and a fallback date, never a reason to refuse)."""
        return self.occurred_at or utc_now()

    @property
    def stripe(self) -> StripeGateway:
        if "stripe" not in self._gateways:
            self._gateways["stripe"] = stripe_gateway(self.settings.stripe)
        return self._gateways["stripe"]  # type: ignore[no-any-return]

    @property
    def gocardless(self) -> GoCardlessGateway:
        if "gocardless" not in self._gateways:
            self._gateways["gocardless"] = gocardless_gateway(self.settings.gocardless)
        return self._gateways["gocardless"]  # type: ignore[no-any-return]


Handler = Callable[[Context, dict[str, Any]], Effect]


def find_handler(provider: str, event_type: str) -> Handler | None:
    from webhooks.handlers import gocardless, stripe

    if provider == "stripe":
        return stripe.handler_for(event_type)
    if provider == "gocardless":
        return gocardless.handler_for(event_type)
    return None
