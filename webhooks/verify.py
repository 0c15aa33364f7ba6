"""Signature checks with the providers' own libraries, over the raw body, before anything is parsed or stored.

Stripe: `WebhookSignature.verify_header` (HMAC-SHA256 of `t.body`, 300 s tolerance) and a plain `json.loads`:
`construct_event` does the same check but then spends ~0.5 ms building StripeObjects nobody here uses.
GoCardless: `webhooks.parse` (hex HMAC-SHA256 of the body); it raises TypeError on a missing header, so that case
is refused first.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import Any, TypeGuard

import stripe as stripe_lib
from gocardless_pro import webhooks as gocardless_webhooks
from gocardless_pro.errors import InvalidSignatureError

from core.clock import from_unix
from webhooks.errors import InvalidGoCardlessSignature, InvalidSignature, MalformedEvent

log = logging.getLogger("giving.webhooks")

STRIPE_TOLERANCE_SECONDS = 300
# The longest event id kept (`inbound_events.external_id`); the providers' ids are far shorter. A longer one, or an
# id or type with a NUL (PostgreSQL refuses it in text) or a lone surrogate (no database keeps it), is not an event
# we can keep once by its id: refused as malformed (Stripe) or left out of its batch (GoCardless), never a 500 that
# the provider would send again for days.
MAX_EVENT_ID_LENGTH = 255


def _keepable_name(value: object) -> TypeGuard[str]:
    """Text a database keeps: no NUL, and no lone surrogate (valid JSON, `"\\ud800"`, but not UTF-8)."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _keepable_id(value: object) -> TypeGuard[str]:
    return _keepable_name(value) and 0 < len(value) <= MAX_EVENT_ID_LENGTH


@dataclass(frozen=True, slots=True)
class VerifiedEvent:
    external_id: str
    event_type: str
    occurred_at: dt.datetime | None
    livemode: bool
    body: str


def stripe_event(body: bytes, header: str | None, secrets: tuple[str, ...]) -> VerifiedEvent:
    """Verified with any of `secrets` (the current one first; a previous one while it is being changed)."""
    refusal: stripe_lib.SignatureVerificationError | None = None
    if header is not None and not header.isascii():
        # The SDK's constant-time compare raises TypeError on non-ASCII text: it cannot be our signature anyway.
        raise InvalidSignature("Stripe signature refused: the Stripe-Signature header is not ASCII")
    for secret in secrets:
        try:
            stripe_lib.WebhookSignature.verify_header(body, header, secret, STRIPE_TOLERANCE_SECONDS)
            break
        except stripe_lib.SignatureVerificationError as exc:
            refusal = refusal or exc  # the current secret's reason is the one to report
        except UnicodeDecodeError as exc:
            raise MalformedEvent("the body is not UTF-8 text") from exc
    else:
        reason = (refusal.user_message or refusal) if refusal else "no webhook secret"
        raise InvalidSignature(f"Stripe signature refused: {reason}") from refusal
    text = body.decode("utf-8")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MalformedEvent("the body is not JSON") from exc
    except RecursionError as exc:  # valid JSON nested deeper than the parser goes: not a body we can read
        raise MalformedEvent("the body is nested too deep to read") from exc
    if not isinstance(data, dict) or data.get("object") != "event":
        raise MalformedEvent("the body is not a Stripe event (snapshot events only)")
    event_id, event_type, created = data.get("id"), data.get("type"), data.get("created")
    if not isinstance(event_id, str) or not event_id or not isinstance(event_type, str) or not event_type:
        raise MalformedEvent("the event has no id or type")
    if not _keepable_id(event_id) or not _keepable_name(event_type):
        raise MalformedEvent(
            f"the event's id or type is not text we keep (at most {MAX_EVENT_ID_LENGTH} characters of UTF-8, no NUL)"
        )
    data_object = data.get("data")
    if not isinstance(data_object, dict) or not isinstance(data_object.get("object"), dict):
        raise MalformedEvent("the event has no data.object")
    return VerifiedEvent(event_id, event_type, _created_at(created), bool(data.get("livemode")), text)


def _created_at(created: object) -> dt.datetime | None:
    """Stripe's `created` (Unix seconds) as a time; a number no date can hold is a malformed event (400)."""
    if not isinstance(created, int) or isinstance(created, bool):
        return None
    try:
        return from_unix(created)
    except (OverflowError, OSError, ValueError) as exc:
        raise MalformedEvent(f"the event's created ({created}) is not a time") from exc


def gocardless_events(body: bytes, header: str | None, secrets: tuple[str, ...]) -> list[VerifiedEvent]:
    """Verified with any of `secrets` (the current one first; a previous one while it is being changed)."""
    if not header:
        raise InvalidGoCardlessSignature("the Webhook-Signature header is missing")
    if not header.isascii():
        # The SDK's constant-time compare raises TypeError on non-ASCII text: it cannot be our signature anyway.
        raise InvalidGoCardlessSignature("GoCardless signature refused")
    for secret in secrets:
        try:
            parsed = gocardless_webhooks.parse(body, secret, header)
            break
        except InvalidSignatureError:
            continue
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError, RecursionError) as exc:
            # Signed by GoCardless's secret, but not a batch: not JSON (or nested deeper than the parser goes), no
            # `events` list, events that are not objects.
            raise MalformedEvent("the body is not a GoCardless webhook (JSON with a list of event objects)") from exc
    else:
        raise InvalidGoCardlessSignature("GoCardless signature refused")
    if not parsed and not isinstance(json.loads(body).get("events"), list):
        raise MalformedEvent("`events` is not a list")  # {"events": {}} iterates as an empty batch
    events = []
    unusable = 0
    for event in parsed:
        attributes = event.attributes
        event_id = attributes.get("id") if isinstance(attributes, dict) else None
        resource_type = attributes.get("resource_type") if isinstance(attributes, dict) else None
        action = attributes.get("action") if isinstance(attributes, dict) else None
        if not _keepable_id(event_id) or not _keepable_name(resource_type) or not _keepable_name(action):
            # Each event of a batch is handled on its own (payments.md pitfall 7): one that cannot be stored (no
            # id to keep it once by) is left out, not the batch with it, which GoCardless would send again in vain.
            unusable += 1
            continue
        events.append(
            VerifiedEvent(
                external_id=event_id,
                event_type=f"{resource_type}.{action}",
                occurred_at=parse_gocardless_time(attributes.get("created_at")),
                # GoCardless signs sandbox and live with different secrets: the secret decides the mode.
                livemode=False,
                body=json.dumps(attributes, separators=(",", ":"), sort_keys=True),
            )
        )
    if unusable and not events:
        raise MalformedEvent("no event of the batch has an id (at most 255 characters), resource_type and action")
    if unusable:
        log.warning("GoCardless batch: %d event(s) without an id, resource_type or action left out", unusable)
    return events


def parse_gocardless_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        # In UTC here: a time whose UTC falls outside the years 1-9999 is one no column keeps (and no event has).
        return moment.astimezone(dt.UTC) if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    except (ValueError, OverflowError):
        return None
