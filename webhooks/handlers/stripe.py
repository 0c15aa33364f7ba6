"""Stripe event types and what each does (payments.md §1). Anything not listed is stored and marked ignored."""

from __future__ import annotations

from typing import Any

from payments import payouts
from payments import service as payments
from payments.schemas import Effect
from webhooks.handlers import Context, Handler


def _object(payload: dict[str, Any]) -> dict[str, Any]:
    return payload["data"]["object"]  # type: ignore[no-any-return]


def checkout_completed(ctx: Context, payload: dict[str, Any]) -> Effect:
    return payments.fulfil_stripe_checkout(ctx.uow, ctx.stripe, _object(payload), at=ctx.at, settled_now=False)


def checkout_async_succeeded(ctx: Context, payload: dict[str, Any]) -> Effect:
    session = {**_object(payload), "payment_status": "paid"}
    return payments.fulfil_stripe_checkout(ctx.uow, ctx.stripe, session, at=ctx.at, settled_now=True)


def checkout_async_failed(ctx: Context, payload: dict[str, Any]) -> Effect:
    return payments.fail_stripe_checkout(ctx.uow, _object(payload), at=ctx.at)


def checkout_expired(ctx: Context, payload: dict[str, Any]) -> Effect:
    return payments.expire_stripe_checkout(ctx.uow, _object(payload))


def payment_intent_succeeded(ctx: Context, payload: dict[str, Any]) -> Effect:
    return payments.note_stripe_payment_intent(ctx.uow, _object(payload))


def invoice_paid(ctx: Context, payload: dict[str, Any]) -> Effect:
    return payments.record_stripe_invoice_paid(ctx.uow, ctx.stripe, _object(payload), at=ctx.at)


def invoice_failed(ctx: Context, payload: dict[str, Any]) -> Effect:
    return payments.record_stripe_invoice_failed(ctx.uow, ctx.stripe, _object(payload), at=ctx.at)


def invoice_voided(ctx: Context, payload: dict[str, Any]) -> Effect:
    return payments.record_stripe_invoice_voided(ctx.uow, ctx.stripe, _object(payload), at=ctx.at)


def invoice_uncollectible(ctx: Context, payload: dict[str, Any]) -> Effect:
    return payments.record_stripe_invoice_uncollectible(ctx.uow, ctx.stripe, _object(payload), at=ctx.at)


def subscription_changed(ctx: Context, payload: dict[str, Any]) -> Effect:
    return payments.mirror_stripe_subscription(ctx.uow, ctx.stripe, str(_object(payload)["id"]), at=ctx.at)


def charge_refunded(ctx: Context, payload: dict[str, Any]) -> Effect:
    charge = _object(payload)
    return payments.sync_stripe_refunds(
        ctx.uow,
        ctx.stripe,
        charge_id=charge.get("id"),
        payment_intent_id=payments.object_id(charge.get("payment_intent")),
    )


def refund_changed(ctx: Context, payload: dict[str, Any]) -> Effect:
    refund = _object(payload)
    return payments.sync_stripe_refunds(
        ctx.uow,
        ctx.stripe,
        charge_id=payments.object_id(refund.get("charge")),
        payment_intent_id=payments.object_id(refund.get("payment_intent")),
    )


def dispute_changed(ctx: Context, payload: dict[str, Any]) -> Effect:
    return payments.sync_stripe_dispute(ctx.uow, ctx.stripe, _object(payload), at=ctx.at, event_type=ctx.event_type)


def payout_changed(ctx: Context, payload: dict[str, Any]) -> Effect:
    payout = _object(payload)
    payouts.record_stripe_payout(ctx.uow, payout, ctx.event_type)
    return Effect.processed(f"stripe_payout:{payout.get('id')}")


HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": checkout_completed,
    "checkout.session.async_payment_succeeded": checkout_async_succeeded,
    "checkout.session.async_payment_failed": checkout_async_failed,
    "checkout.session.expired": checkout_expired,
    "payment_intent.succeeded": payment_intent_succeeded,
    "invoice.paid": invoice_paid,
    # Sent beside invoice.paid for the same invoice: the instalment is keyed on the invoice, so it is one gift.
    "invoice.payment_succeeded": invoice_paid,
    "invoice.payment_failed": invoice_failed,
    # An instalment closed without a card payment: cancelled, or written off (docs/payments.md).
    "invoice.voided": invoice_voided,
    "invoice.marked_uncollectible": invoice_uncollectible,
    "customer.subscription.created": subscription_changed,
    "customer.subscription.updated": subscription_changed,
    "customer.subscription.deleted": subscription_changed,
    "customer.subscription.paused": subscription_changed,
    "customer.subscription.resumed": subscription_changed,
    "charge.refunded": charge_refunded,
    "charge.refund.updated": refund_changed,
    "refund.created": refund_changed,
    "refund.updated": refund_changed,
    "refund.failed": refund_changed,
    "charge.dispute.created": dispute_changed,
    "charge.dispute.updated": dispute_changed,
    "charge.dispute.closed": dispute_changed,
    "charge.dispute.funds_withdrawn": dispute_changed,
    "charge.dispute.funds_reinstated": dispute_changed,
}


def handler_for(event_type: str) -> Handler | None:
    if event_type.startswith("payout."):
        return payout_changed
    return HANDLERS.get(event_type)
