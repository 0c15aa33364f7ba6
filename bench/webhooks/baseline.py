"""The baseline: the smallest endpoint that checks a Stripe signature and INSERTs the raw body (plain psycopg,
an async connection pool, no framework). Run by uvicorn: `BENCH_DSN=... uvicorn bench.webhooks.baseline:app`."""

import json
import os

import stripe
from psycopg_pool import AsyncConnectionPool

SECRET = os.environ["BENCH_SECRET"]
pool = AsyncConnectionPool(os.environ["BENCH_DSN"], min_size=8, max_size=8, open=False)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await pool.open()
            await send({"type": "lifespan.startup.complete"})
        await pool.close()
        await send({"type": "lifespan.shutdown.complete"})
        return
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    signature = dict(scope["headers"]).get(b"stripe-signature", b"").decode()
    try:
        stripe.WebhookSignature.verify_header(body, signature, SECRET, 300)
        event = json.loads(body)
        status = 200
    except (stripe.SignatureVerificationError, ValueError):
        status = 400
    if status == 200:
        async with pool.connection() as conn:
            await conn.execute(
                "INSERT INTO bench_baseline (external_id, body) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (event["id"], body.decode()),
            )
    answer = b'{"received":1}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": answer})
