"""`POST /webhooks/stripe` and `POST /webhooks/gocardless`: verify over the raw body, store once, answer.

Nothing else happens in the request: processing runs in the workers after the commit.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from core.http import JSON, in_thread, runtime_of
from webhooks import service, verify
from webhooks.errors import ModeMismatch, WebhookDisabled


async def stripe_webhook(request: Request) -> Response:
    runtime = runtime_of(request)
    config = runtime.settings.stripe
    if not config.enabled:
        raise WebhookDisabled("Stripe is not configured here")
    body = await request.body()
    event = verify.stripe_event(body, request.headers.get("stripe-signature"), config.webhook_secret.get_secret_value())
    if event.livemode != config.livemode:
        mode = "a live-mode" if event.livemode else "a test-mode"
        raise ModeMismatch(f"{mode} event cannot reach this installation (livemode={str(config.livemode).lower()})")
    stored = await in_thread(service.store_delivery, runtime, "stripe", [event])
    return JSON({"received": 1, "stored": stored})


async def gocardless_webhook(request: Request) -> Response:
    runtime = runtime_of(request)
    config = runtime.settings.gocardless
    if not config.enabled:
        raise WebhookDisabled("GoCardless is not configured here")
    body = await request.body()
    events = verify.gocardless_events(
        body, request.headers.get("webhook-signature"), config.webhook_secret.get_secret_value()
    )
    stored = await in_thread(service.store_delivery, runtime, "gocardless", events) if events else 0
    return JSON({"received": len(events), "stored": stored})


routes: list[BaseRoute] = [
    Route("/stripe", stripe_webhook, methods=["POST"]),
    Route("/gocardless", gocardless_webhook, methods=["POST"]),
]
