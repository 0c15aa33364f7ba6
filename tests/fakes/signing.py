"""Sign webhook bodies with the providers' real schemes, for tests and the demo.

Stripe: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">` (stripe.WebhookSignature's own generator).
GoCardless: `Webhook-Signature: <hex HMAC-SHA256 of the body>`, the secret used as UTF-8 bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import stripe

from tests.fixtures.app import GOCARDLESS_WEBHOOK_SECRET, STRIPE_WEBHOOK_SECRET


def body_of(payload: dict[str, Any] | str | bytes) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode()
    return json.dumps(payload, separators=(",", ":")).encode()


def stripe_headers(
    payload: dict[str, Any] | str | bytes, *, secret: str = STRIPE_WEBHOOK_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    body = body_of(payload).decode()
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=timestamp or int(time.time()))
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


def gocardless_signature(body: bytes, secret: str = GOCARDLESS_WEBHOOK_SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def gocardless_headers(
    payload: dict[str, Any] | str | bytes, *, secret: str = GOCARDLESS_WEBHOOK_SECRET
) -> dict[str, str]:
    return {"Webhook-Signature": gocardless_signature(body_of(payload), secret), "Content-Type": "application/json"}
