"""Errors of webhooks: what the provider is told when a delivery is refused."""

from __future__ import annotations

from core.errors import AppError, BadRequest, NotFound


class WebhooksError(AppError):
    pass


class WebhookDisabled(NotFound, WebhooksError):
    """The provider's secrets are not configured: the endpoint does not exist."""


class InvalidSignature(BadRequest, WebhooksError):
    """Stripe: a bad, missing or stale `Stripe-Signature`."""


class InvalidGoCardlessSignature(WebhooksError):
    """GoCardless asks for 498 Token Invalid on a bad or missing `Webhook-Signature`."""

    status_code = 498


class MalformedEvent(BadRequest, WebhooksError):
    """The body is signed but is not an event we can read."""


class EventNotFound(NotFound, WebhooksError):
    pass
