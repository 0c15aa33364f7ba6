"""`POST /webhooks/stripe` and `POST /webhooks/gocardless`: verify over the raw body, store once, answer.

Nothing else happens in the request: processing runs in the workers after the commit.
"""

from __future__ import annotations

import anyio.to_thread
from anyio import CapacityLimiter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from core.http import JSON, async_database_of, runtime_of
from core.runtime import Runtime
from webhooks import service, verify
from webhooks.errors import WebhookDisabled
from webhooks.verify import VerifiedEvent

# SQLite: a few threads store deliveries; more only contend for the GIL and the connection pool (bench/webhooks, 16
# clients: p99 372 ms with a thread per request, 145 ms with 4 storing threads and the plain-connection store).
STORING_THREADS = 4


async def _store(request: Request, runtime: Runtime, provider: str, events: list[VerifiedEvent]) -> int:
    database = async_database_of(request)
    if database is not None:  # PostgreSQL: on the event loop, no thread
        return await service.store_delivery_async(database, provider, events)
    state = request.app.state
    limiter: CapacityLimiter | None = getattr(state, "webhook_storing", None)
    if limiter is None:
        # One per application (and so per event loop): an anyio limiter must not be shared between loops.
        limiter = state.webhook_storing = CapacityLimiter(STORING_THREADS)
    return await anyio.to_thread.run_sync(service.store_delivery, runtime, provider, events, limiter=limiter)


async def stripe_webhook(request: Request) -> Response:
    runtime = runtime_of(request)
    config = runtime.settings.stripe
    if not config.enabled:
        raise WebhookDisabled("Stripe is not configured here")
    body = await request.body()
    event = verify.stripe_event(body, request.headers.get("stripe-signature"), config.webhook_secrets)
    # An event of the other mode (test on a live installation, or live on a test one) is stored and answered 2xx
    # like any event we do not act on; its processing ignores it (`service._run_handler`), so it never reaches the
    # ledger, and the stored row shows the misdirected endpoint.
    stored = await _store(request, runtime, "stripe", [event])
    return JSON({"received": 1, "stored": stored})


async def gocardless_webhook(request: Request) -> Response:
    runtime = runtime_of(request)
    config = runtime.settings.gocardless
    if not config.enabled:
        raise WebhookDisabled("GoCardless is not configured here")
    body = await request.body()
    events = verify.gocardless_events(body, request.headers.get("webhook-signature"), config.webhook_secrets)
    stored = await _store(request, runtime, "gocardless", events) if events else 0
    return JSON({"received": len(events), "stored": stored})


routes: list[BaseRoute] = [
    Route("/stripe", stripe_webhook, methods=["POST"]),
    Route("/gocardless", gocardless_webhook, methods=["POST"]),
]
