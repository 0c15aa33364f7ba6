"""A stand-in for Stripe's API during the backlog drain: answers any payment intent, with its charge expanded.
Run by uvicorn: `uvicorn bench.webhooks.fake_stripe:app`."""

import json
import time


async def app(scope, receive, send):
    if scope["type"] != "http":
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        return
    if not scope["path"].startswith("/v1/payment_intents/"):
        # events.list of the nightly catch-up (which runs when a worker starts): nothing was missed.
        body = json.dumps({"object": "list", "data": [], "has_more": False, "url": scope["path"]}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    intent_id = scope["path"].rstrip("/").rsplit("/", 1)[-1]
    body = json.dumps(
        {
            "id": intent_id,
            "object": "payment_intent",
            "status": "succeeded",
            "latest_charge": {"id": "ch_" + intent_id[3:], "object": "charge", "created": int(time.time()) - 60},
        }
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
