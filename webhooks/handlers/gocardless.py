"""GoCardless `resource_type.action` → what it does (payments.md §2). Events carry only ids: the payments service
fetches the payment, mandate, subscription or refund through the SDK. Anything not listed is marked ignored."""

from __future__ import annotations

from typing import Any

from payments import payouts
from payments import service as payments
from payments.schemas import Effect
from webhooks.handlers import Context, Handler


def _links(payload: dict[str, Any]) -> dict[str, Any]:
    return payload.get("links") or {}


def _details(payload: dict[str, Any]) -> dict[str, Any]:
    return payload.get("details") or {}


def billing_request_fulfilled(ctx: Context, payload: dict[str, Any]) -> Effect:
    request_id = _links(payload).get("billing_request")
    if not request_id:
        return Effect.ignored("no billing request in the event")
    return payments.record_gocardless_billing_request(ctx.uow, ctx.gocardless, request_id, at=ctx.at)


def billing_request_ended(ctx: Context, payload: dict[str, Any]) -> Effect:
    request_id = _links(payload).get("billing_request")
    if not request_id:
        return Effect.ignored("no billing request in the event")
    return payments.end_gocardless_billing_request(ctx.uow, ctx.gocardless, request_id)


def mandate_changed(ctx: Context, payload: dict[str, Any]) -> Effect:
    mandate_id = _links(payload).get("mandate")
    if not mandate_id:
        return Effect.ignored("no mandate in the event")
    return payments.sync_gocardless_mandate(
        ctx.uow,
        ctx.gocardless,
        mandate_id,
        action=str(payload.get("action")),
        links=_links(payload),
        details=_details(payload),
        at=ctx.at,
    )


def subscription_changed(ctx: Context, payload: dict[str, Any]) -> Effect:
    subscription_id = _links(payload).get("subscription")
    if not subscription_id:
        return Effect.ignored("no subscription in the event")
    return payments.sync_gocardless_subscription(ctx.uow, ctx.gocardless, subscription_id, at=ctx.at)


def payment_changed(ctx: Context, payload: dict[str, Any]) -> Effect:
    payment_id = _links(payload).get("payment")
    if not payment_id:
        return Effect.ignored("no payment in the event")
    return payments.sync_gocardless_payment(
        ctx.uow, ctx.gocardless, payment_id, action=str(payload.get("action")), details=_details(payload), at=ctx.at
    )


def refund_changed(ctx: Context, payload: dict[str, Any]) -> Effect:
    refund_id = _links(payload).get("refund")
    if not refund_id:
        return Effect.ignored("no refund in the event")
    return payments.sync_gocardless_refund(ctx.uow, ctx.gocardless, refund_id)


def payout_changed(ctx: Context, payload: dict[str, Any]) -> Effect:
    payout_id = _links(payload).get("payout")
    if not payout_id:
        return Effect.ignored("no payout in the event")
    payouts.record_gocardless_payout(ctx.uow, payout_id, str(payload.get("action")))
    return Effect.processed(f"gocardless_payout:{payout_id}")


RESOURCES: dict[str, Handler] = {
    "mandates": mandate_changed,
    "subscriptions": subscription_changed,
    "payments": payment_changed,
    "refunds": refund_changed,
    "payouts": payout_changed,
}


def handler_for(event_type: str) -> Handler | None:
    resource, _, action = event_type.partition(".")
    if resource == "billing_requests":
        return {
            "fulfilled": billing_request_fulfilled,
            "cancelled": billing_request_ended,
            "failed": billing_request_ended,
        }.get(action)
    return RESOURCES.get(resource)
