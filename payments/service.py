"""Payments use cases: the catalogue, and everything provider events do to gifts, regular gifts, orders, refunds and
disputes; supporter totals and merges. Never commits: the caller's unit of work does."""

from __future__ import annotations

import calendar
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from sqlmodel import Session, SQLModel, col, select

from core.clock import from_unix, isoformat_z, uk_date, uk_today, utc_now
from core.db import UnitOfWork
from core.money import Currency, Money, format_pence
from crm.models import HistoryEntry
from crm.service import open_review_items, raise_review_item, record_history, resolve_review_item, revise_history
from payments import payouts, repository, shop
from payments.checkout import MONTHLY_LINE_NAME
from payments.errors import (
    PaymentsError,
    ProviderRefused,
    ProviderUnavailable,
    RegularGiftEnded,
    RegularGiftNotFound,
    RegularGiftStillLive,
)
from payments.models import (
    Checkout,
    CheckoutKind,
    CheckoutStatus,
    Dispute,
    DisputeStatus,
    Frequency,
    Gift,
    GiftStatus,
    Method,
    Order,
    OrderStatus,
    PartnerCampaign,
    Product,
    Provider,
    Refund,
    RefundStatus,
    RegularGift,
    RegularGiftStatus,
    Sku,
)
from payments.schemas import Effect, MissingInstalment

if TYPE_CHECKING:
    from payments.providers.gocardless import GoCardlessGateway
    from payments.providers.stripe import StripeGateway

log = logging.getLogger("giving.payments")
ModelT = TypeVar("ModelT", bound=SQLModel)

DEFAULT_CATALOGUE = [
    # (product code, name, partner campaign code or None, price in pence, sizes with stock)
    ("TEE-SOLIDARITY", "Solidarity not charity T-shirt", None, 1500, {"S": 20, "M": 30, "L": 30, "XL": 20}),
    ("TEE-LMHR", "Love Music Hate Racism T-shirt", "LMHR", 1800, {"S": 15, "M": 25, "L": 25, "XL": 15}),
]


def ensure_default_catalogue(uow: UnitOfWork) -> None:
    """Leave a stocked default catalogue (idempotent: existing products are left as they are)."""
    session = uow.session
    campaign = session.exec(select(PartnerCampaign).where(PartnerCampaign.code == "LMHR")).first()
    if campaign is None:
        campaign = PartnerCampaign(
            code="LMHR",
            name="Love Music Hate Racism",
            partner_name="Love Music Hate Racism",
            share_kind="per_item",
            share_value=500,
        )
        session.add(campaign)
        session.flush()
    for code, name, partner, price, sizes in DEFAULT_CATALOGUE:
        if session.exec(select(Product).where(Product.code == code)).first() is not None:
            continue
        product = Product(code=code, name=name, partner_campaign_id=campaign.id if partner else None)
        session.add(product)
        session.flush()
        for position, (size, stock) in enumerate(sizes.items()):
            session.add(
                Sku(sku=f"{code}-{size}", product_id=product.id, size=size, price=price, stock=stock, position=position)
            )
    session.flush()


# =====================================================================================================================
# Processing provider events. Each function takes the provider's object (a dict, re-fetched through the SDK where
# the order of events matters) and returns an Effect. Every effect is keyed on a unique provider id, so any number
# of deliveries, in any order, leave one result. Money and statuses only move forward.
# =====================================================================================================================

RECEIPT_FOR_GIFT = "receipts.issue_for_gift"
RECEIPT_FOR_ORDER = "receipts.issue_for_order"
RECEIPT_CORRECTION = "receipts.issue_correction"

_TERMINAL_REGULAR = {RegularGiftStatus.CANCELLED, RegularGiftStatus.FINISHED}


def _id(value: Any) -> str | None:
    """An expandable Stripe field: the id string, or the id of the expanded object."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict):
        inner = value.get("id")
        return inner if isinstance(inner, str) and inner else None
    return None


def object_id(value: Any) -> str | None:
    """The id in an expandable Stripe field (a string, or an expanded object)."""
    return _id(value)


def _uuid(value: Any) -> uuid.UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _when(unix: Any) -> dt.datetime | None:
    return from_unix(unix) if isinstance(unix, int | float) and unix > 0 else None


def _charge_day(value: Any) -> dt.date | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        return None


def _noon(day: dt.date) -> dt.datetime:
    """A UK calendar date as a moment: noon UTC is the same UK date in winter and summer."""
    return dt.datetime.combine(day, dt.time(12, 0), dt.UTC)


def _add_month(day: dt.date) -> dt.date:
    year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
    return day.replace(year=year, month=month, day=min(day.day, calendar.monthrange(year, month)[1]))


def _touch(obj: Any) -> None:
    obj.updated_at = utc_now()


def _set(obj: Any, **values: Any) -> bool:
    """Assign only what differs (an event that changes nothing changes no field, `updated_at` included)."""
    changed = False
    for name, value in values.items():
        if getattr(obj, name) != value:
            setattr(obj, name, value)
            changed = True
    if changed and hasattr(obj, "updated_at"):
        _touch(obj)
    return changed


def _provider_ids(gift: Gift) -> list[str]:
    ids = [
        gift.stripe_checkout_session_id,
        gift.stripe_payment_intent_id,
        gift.stripe_charge_id,
        gift.stripe_invoice_id,
        gift.stripe_subscription_id,
        gift.gocardless_payment_id,
        gift.gocardless_mandate_id,
        gift.gocardless_subscription_id,
    ]
    return [value for value in ids if value]


def _gift_or_insert(uow: UnitOfWork, column: str, key: str, build: Callable[[], Gift]) -> tuple[Gift, bool]:
    return _row_or_insert(uow, Gift, column, key, build)


def _regular_or_insert(
    uow: UnitOfWork, column: str, key: str, build: Callable[[], RegularGift]
) -> tuple[RegularGift, bool]:
    return _row_or_insert(uow, RegularGift, column, key, build)


def _row_or_insert(
    uow: UnitOfWork, model: type[ModelT], column: str, key: str, build: Callable[[], ModelT]
) -> tuple[ModelT, bool]:
    """The row keyed on a unique provider id, locked: inserted by this call, or the one already there (a concurrent
    copy of the event waits on the other's insert, then finds its row)."""
    session = uow.session
    inserted = repository.insert_returning(session, build())
    if inserted is not None:
        return inserted, True
    existing = repository.first_locked(session, repository.by_key(model, column, key))
    if existing is None:  # pragma: no cover - another unique key of the new row collided
        raise PaymentsError(f"{model.__name__} {column}={key} could not be recorded")
    return existing, False


def _gift_history(uow: UnitOfWork, gift: Gift) -> None:
    what = "Regular gift" if gift.regular_gift_id else "Gift"
    if gift.order_id:
        what = "Donation with a shop order"
    appeal = f" to {gift.appeal}" if gift.appeal else ""
    data: dict[str, Any] = {"gift_id": str(gift.id), "provider_ids": _provider_ids(gift), "provider": gift.provider}
    if gift.order_id:
        data["order_id"] = str(gift.order_id)
    if gift.regular_gift_id:
        data["regular_gift_id"] = str(gift.regular_gift_id)
    if gift.appeal:
        data["appeal"] = gift.appeal
    record_history(
        uow,
        gift.supporter_id,
        type="gift",
        summary=f"{what} of {format_pence(gift.amount, gift.currency)}{appeal} ({gift.method.replace('_', ' ')})",
        at=gift.received_at,
        amount=gift.amount,
        currency=gift.currency,
        data=data,
        dedupe_key=f"gift:{gift.id}",
    )


def _paid(received_at: dt.datetime) -> dict[str, Any]:
    """The fields of a gift inserted already paid (saves the UPDATE that marking it paid would cost)."""
    return {"status": GiftStatus.PAID, "received_at": received_at, "received_on": uk_date(received_at)}


def _mark_gift_paid(uow: UnitOfWork, gift: Gift, received_at: dt.datetime, *, inserted_paid: bool = False) -> bool:
    """pending / failed / cancelled → paid, once, with its history item, receipt and payout matching.
    A reversed gift comes back only through `_restore_gift`. `inserted_paid`: this call inserted it as paid."""
    if inserted_paid:
        first_time = True
    else:
        if gift.status in (GiftStatus.PAID, GiftStatus.REVERSED):
            return False
        first_time = gift.received_at is None
        gift.status = GiftStatus.PAID
        if first_time:
            gift.received_at = received_at
            gift.received_on = uk_date(received_at)
        gift.failure_reason = ""
        _touch(gift)
        uow.session.add(gift)
        uow.session.flush()
    _gift_history(uow, gift)
    if first_time:
        uow.enqueue(RECEIPT_FOR_GIFT, gift_id=str(gift.id))
    payouts.on_money_recorded(uow, _provider_ids(gift))
    return True


def _fail_gift(uow: UnitOfWork, gift: Gift, reason: str) -> bool:
    if gift.status not in (GiftStatus.PENDING, GiftStatus.CANCELLED):
        return False
    _set(gift, status=GiftStatus.FAILED, failure_reason=reason[:500])
    uow.session.add(gift)
    return True


def _payment_failed_history(
    uow: UnitOfWork,
    gift: Gift,
    reason: str,
    at: dt.datetime | None,
    dedupe: str,
    *,
    amount: int | None = None,
    **extra: Any,
) -> None:
    """`amount`: what the failed attempt asked for, when the gift's row may no longer say it."""
    amount = gift.amount if amount is None else amount
    record_history(
        uow,
        gift.supporter_id,
        type="payment_failed",
        summary=f"Payment of {format_pence(amount, gift.currency)} failed: {reason}",
        at=at,
        amount=amount,
        currency=gift.currency,
        data={"gift_id": str(gift.id), "reason": reason, "provider_ids": _provider_ids(gift), **extra},
        dedupe_key=f"payment_failed:{dedupe}",
    )


def _set_regular_status(
    uow: UnitOfWork, regular: RegularGift, status: RegularGiftStatus, *, at: dt.datetime | None, reason: str = ""
) -> bool:
    """Cancelled and finished are final; arrears come and go with the instalments (`_refresh_arrears`)."""
    if regular.status in _TERMINAL_REGULAR or regular.status == status:
        return False
    if status == RegularGiftStatus.ACTIVE and regular.status == RegularGiftStatus.IN_ARREARS:
        return False
    regular.status = status
    regular.status_changed_at = at or utc_now()
    if status in _TERMINAL_REGULAR:
        regular.ended_at = at or utc_now()
        if reason:
            regular.failure_reason = reason[:500]
    _touch(regular)
    uow.session.add(regular)
    uow.session.flush()
    if status == RegularGiftStatus.ACTIVE:
        _regular_started_history(uow, regular)
    if status in _TERMINAL_REGULAR:
        _settle_missing_alerts(uow, regular, through=None)
        record_history(
            uow,
            regular.supporter_id,
            type="regular_gift_cancelled" if status == RegularGiftStatus.CANCELLED else "regular_gift_finished",
            at=regular.ended_at,
            amount=regular.amount,
            currency=regular.currency,
            **_ended_item(regular, status, reason),
        )
    return True


def _ended_item(regular: RegularGift, status: RegularGiftStatus, reason: str) -> dict[str, Any]:
    """What the history says of a regular gift's end: its summary, data and the key that keeps it one item."""
    verb = "cancelled" if status == RegularGiftStatus.CANCELLED else "finished"
    return {
        "summary": f"Monthly gift of {format_pence(regular.amount, regular.currency)} {verb}"
        + (f": {reason}" if reason else ""),
        "data": {"regular_gift_id": str(regular.id), "reason": reason, "provider_ids": _regular_ids(regular)},
        "dedupe_key": f"regular_gift_{verb}:{regular.id}",
    }


_SUBSCRIPTION_CANCELLED = f"subscription {RegularGiftStatus.CANCELLED.value}"


def _restate_cancellation(uow: UnitOfWork, regular: RegularGift, reason: str) -> None:
    """The mandate's end, processed after the subscription's cancellation it caused: the bank's cause and code
    replace the subscription's bare word, on the regular gift and its history item, as had it come first."""
    if regular.status != RegularGiftStatus.CANCELLED or regular.failure_reason != _SUBSCRIPTION_CANCELLED:
        return
    _set(regular, failure_reason=reason[:500])
    uow.session.add(regular)
    uow.session.flush()
    item = _ended_item(regular, RegularGiftStatus.CANCELLED, reason)
    revise_history(uow, item["dedupe_key"], summary=item["summary"], data=item["data"])


def _regular_ids(regular: RegularGift) -> list[str]:
    ids = [
        regular.stripe_subscription_id,
        regular.stripe_customer_id,
        regular.gocardless_subscription_id,
        regular.gocardless_mandate_id,
        regular.gocardless_customer_id,
    ]
    return [value for value in ids if value]


def _regular_started_history(uow: UnitOfWork, regular: RegularGift) -> None:
    if regular.started_at is None:
        # The provider gave no time of its own (`_started_at_provider`): the event's, never when we processed it.
        regular.started_at = regular.status_changed_at or utc_now()
        uow.session.add(regular)
    _regular_history(uow, regular, "regular_gift_started", _started_summary(regular), at=regular.started_at)


def _started_summary(regular: RegularGift) -> str:
    appeal = f" to {regular.appeal}" if regular.appeal else ""
    return (
        f"Monthly gift of {format_pence(regular.amount, regular.currency)}{appeal} started "
        f"({regular.method.replace('_', ' ')})"
    )


def _started_at_provider(uow: UnitOfWork, regular: RegularGift, started: dt.datetime | None) -> None:
    """A regular gift started when the donor set it up at the provider (the subscription's own time), not when we
    processed an event about it: an event caught up late would show it starting after its first payment. The
    earliest time heard stands, and its `regular_gift_started` item (if written) moves back with it."""
    if started is None or (regular.started_at is not None and regular.started_at <= started):
        return
    _set(regular, started_at=started)
    uow.session.add(regular)
    data = {"regular_gift_id": str(regular.id), "provider_ids": _regular_ids(regular)}
    revise_history(uow, f"regular_gift_started:{regular.id}", summary=_started_summary(regular), data=data, at=started)


def _regular_history(
    uow: UnitOfWork, regular: RegularGift, type: str, summary: str, *, at: dt.datetime | None, occasion: str = ""
) -> None:
    """One item of this kind per regular gift on the supporter's history (per `occasion`, for kinds that recur)."""
    record_history(
        uow,
        regular.supporter_id,
        type=type,
        summary=summary,
        at=at,
        amount=regular.amount,
        currency=regular.currency,
        data={"regular_gift_id": str(regular.id), "provider_ids": _regular_ids(regular)},
        dedupe_key=f"{type}:{regular.id}" + (f":{occasion}" if occasion else ""),
    )


def _refresh_arrears(uow: UnitOfWork, regular: RegularGift) -> None:
    """The latest instalment decides: failed → in arrears (with its reason), paid → arrears cleared."""
    if regular.status not in (RegularGiftStatus.ACTIVE, RegularGiftStatus.IN_ARREARS):
        return
    gifts = [g for g in repository.instalments(uow.session, regular.id) if g.due_on is not None]
    settled = [g for g in gifts if g.status in (GiftStatus.PAID, GiftStatus.FAILED, GiftStatus.REVERSED)]
    paid_days = [g.due_on for g in gifts if g.status == GiftStatus.PAID and g.due_on is not None]
    last_paid = max(paid_days) if paid_days else None
    if last_paid is not None and (regular.last_paid_on is None or last_paid > regular.last_paid_on):
        regular.last_paid_on = last_paid
        following = _add_month(last_paid)
        if regular.next_due_on is None or following > regular.next_due_on:
            regular.next_due_on = following
        _touch(regular)
        _settle_missing_alerts(uow, regular, through=last_paid)
    _step_over_closed(regular, gifts)
    unsettled = _earliest_unsettled(gifts, regular.last_paid_on)
    if unsettled is not None and (regular.next_due_on is None or unsettled < regular.next_due_on):
        # An instalment the provider has asked for and not been paid yet (a Direct Debit payment created, its outcome
        # not known) is the one expected: the overdue check must see it even once the schedule has moved past it.
        _set(regular, next_due_on=unsettled)
    if not settled:
        # No instalment settled (the only failed one was voided or written off since): nothing is owed.
        if regular.status == RegularGiftStatus.IN_ARREARS:
            _set(regular, status=RegularGiftStatus.ACTIVE, failure_reason="")
        uow.session.add(regular)
        return
    latest = max(settled, key=lambda g: (g.due_on, g.created_at, str(g.id)))
    # A reversed instalment (chargeback, late failure) is money that did not stay: arrears, like a failure.
    if latest.status in (GiftStatus.FAILED, GiftStatus.REVERSED):
        _set(regular, status=RegularGiftStatus.IN_ARREARS, failure_reason=latest.failure_reason[:500])
    elif latest.status == GiftStatus.PAID:
        _set(regular, status=RegularGiftStatus.ACTIVE, failure_reason="")
    uow.session.add(regular)


def _earliest_unsettled(instalments: Iterable[Gift], last_paid_on: dt.date | None) -> dt.date | None:
    """The due date of the earliest of these instalments still pending after the latest paid one (None: none)."""
    days = [
        gift.due_on
        for gift in instalments
        if gift.status == GiftStatus.PENDING
        and gift.due_on is not None
        and (last_paid_on is None or gift.due_on > last_paid_on)
    ]
    return min(days, default=None)


def hold_keys(session: Session, keys: list[str]) -> None:
    """Serialise, per business key, the recording of an object and the parking of events waiting for it."""
    repository.serialise_keys(session, keys)


def key_recorded(session: Session, key: str) -> bool:
    """Whether the object a waiting event needs ("stripe_subscription:sub_...") is recorded now."""
    kind, _, value = key.partition(":")
    lookups: dict[str, list[tuple[type[SQLModel], str]]] = {
        "stripe_subscription": [(RegularGift, "stripe_subscription_id")],
        "stripe_payment_intent": [(Gift, "stripe_payment_intent_id"), (Order, "stripe_payment_intent_id")],
        "stripe_charge": [(Gift, "stripe_charge_id"), (Order, "stripe_charge_id")],
        "stripe_checkout_session": [(Gift, "stripe_checkout_session_id"), (Order, "stripe_checkout_session_id")],
        "gocardless_subscription": [(RegularGift, "gocardless_subscription_id")],
        # A one-off Direct Debit's mandate is on its gift: an event waiting for it must find it recorded there too.
        "gocardless_mandate": [(RegularGift, "gocardless_mandate_id"), (Gift, "gocardless_mandate_id")],
        "gocardless_payment": [(Gift, "gocardless_payment_id")],
    }
    return any(repository.exists(session, model, column, value) for model, column in lookups.get(kind, []))


# --- Stripe: checkouts --------------------------------------------------------------------------------------------

# Who asks for a regular gift to stop when an erasure does (giving.privacy.ERASURE_REQUEST).
ERASURE_REQUEST = "erasure of the supporter's data"


def _stop_if_started_by_closed_checkout(
    uow: UnitOfWork, regular: RegularGift, *, closed: bool, forget: bool = True
) -> None:
    """A regular gift started by a checkout Giving had closed (its supporter's data was erased before the donor
    finished paying) is stopped at once, through the cancellation staff and erasures use."""
    if closed and regular.status not in _TERMINAL_REGULAR and regular.cancel_requested_at is None:
        request_cancellation(uow, regular.id, requested_by=ERASURE_REQUEST)
        if forget:
            # Then the customer record the checkout made at the provider goes too (a job, after the cancellation's).
            ask_providers_to_forget(uow, [regular.supporter_id])


def _checkout_of_stripe_session(uow: UnitOfWork, session_object: dict[str, Any]) -> Checkout | None:
    metadata = session_object.get("metadata") or {}
    reference = _uuid(metadata.get("checkout_id")) or _uuid(session_object.get("client_reference_id"))
    return repository.checkout_locked(uow.session, reference, stripe_checkout_session_id=_id(session_object.get("id")))


def fulfil_stripe_checkout(
    uow: UnitOfWork, stripe: StripeGateway, session_object: dict[str, Any], *, at: dt.datetime, settled_now: bool
) -> Effect:
    """`checkout.session.completed` (paid, or unpaid for a delayed method) and `.async_payment_succeeded`.

    The Checkout row, written before the donor left, says who gave what for which appeal under which declaration;
    the provider is asked only for the charge (its id, and its time as the gift's date).
    """
    checkout = _checkout_of_stripe_session(uow, session_object)
    session_id = _id(session_object.get("id"))
    if checkout is None or session_id is None:
        return Effect.ignored("not one of our checkouts")
    if checkout.stripe_checkout_session_id is None:
        checkout.stripe_checkout_session_id = session_id
        uow.session.add(checkout)
    if checkout.frequency == Frequency.MONTHLY or session_object.get("mode") == "subscription":
        return _start_stripe_regular_gift(uow, stripe, checkout, session_object, at=at)
    paid = session_object.get("payment_status") in ("paid", "no_payment_required")
    intent_id = _id(session_object.get("payment_intent"))
    charge_id: str | None = None
    received_at = at
    if paid and intent_id:
        intent = stripe.retrieve_payment_intent_with_charge(intent_id)
        charge = intent.get("latest_charge")
        charge_id = _id(charge)
        if isinstance(charge, dict) and not settled_now:
            # A card payment: the money was taken when the charge was made.
            received_at = _when(charge.get("created")) or at
    if paid:
        _set(checkout, status=CheckoutStatus.COMPLETED, completed_at=checkout.completed_at or at)
    uow.session.add(checkout)
    keys = [
        f"stripe_checkout_session:{session_id}",
        f"stripe_payment_intent:{intent_id}" if intent_id else None,
        f"stripe_charge:{charge_id}" if charge_id else None,
    ]
    if checkout.kind == CheckoutKind.SHOP:
        _fulfil_stripe_order(uow, checkout, session_id, intent_id, charge_id, paid=paid, received_at=received_at)
        return Effect.processed(*keys)
    amount = session_object.get("amount_total")

    def build() -> Gift:
        return _gift_from_checkout(
            checkout,
            amount=amount if isinstance(amount, int) and amount > 0 else checkout.amount,
            currency=str(session_object.get("currency") or checkout.currency).upper(),
            stripe_checkout_session_id=session_id,
            stripe_payment_intent_id=intent_id,
            stripe_charge_id=charge_id,
            **(_paid(received_at) if paid else {}),
        )

    gift, created = _gift_or_insert(uow, "stripe_checkout_session_id", session_id, build)
    if not created:
        _set(
            gift,
            stripe_payment_intent_id=gift.stripe_payment_intent_id or intent_id,
            stripe_charge_id=gift.stripe_charge_id or charge_id,
        )
        uow.session.add(gift)
    if paid:
        _mark_gift_paid(uow, gift, received_at, inserted_paid=created)
    return Effect.processed(*keys)


def _gift_from_checkout(checkout: Checkout, **values: Any) -> Gift:
    now = utc_now()
    base: dict[str, Any] = {
        "supporter_id": checkout.supporter_id,
        "amount": checkout.amount,
        "currency": checkout.currency,
        "status": GiftStatus.PENDING,
        "provider": checkout.provider,
        "method": checkout.method,
        "appeal": checkout.appeal,
        "declaration_id": checkout.declaration_id,
        "donor": checkout.donor,
        "checkout_id": checkout.id,
        "order_id": checkout.order_id,
        "created_at": now,
        "updated_at": now,
    }
    base.update(values)
    return Gift(**base)


def _donation_gift_of_order(checkout: Checkout, order: Order, session_id: str) -> Gift:
    """A basket's gift: its donation line only (the goods are a sale, never a gift)."""
    return _gift_from_checkout(
        checkout,
        amount=order.donation_amount,
        currency=order.currency,
        order_id=order.id,
        stripe_checkout_session_id=session_id,
    )


def _fulfil_stripe_order(
    uow: UnitOfWork,
    checkout: Checkout,
    session_id: str,
    intent_id: str | None,
    charge_id: str | None,
    *,
    paid: bool,
    received_at: dt.datetime,
) -> None:
    session = uow.session
    order = repository.order_locked(session, checkout.order_id) if checkout.order_id else None
    if order is None:
        raise PaymentsError(f"checkout {checkout.id} is a shop checkout without its order")
    if order.stripe_checkout_session_id not in (None, session_id):
        # Another session of this basket completed first (the donor had it open twice and paid both): this
        # payment is the basket's duplicate, an order of its own, so its money is recorded and can be refunded.
        order = _duplicate_order(uow, order, session_id)
    _set(
        order,
        stripe_checkout_session_id=order.stripe_checkout_session_id or session_id,
        stripe_payment_intent_id=order.stripe_payment_intent_id or intent_id,
        stripe_charge_id=order.stripe_charge_id or charge_id,
    )
    session.add(order)
    if paid and order.duplicate_of_id is not None:
        _duplicate_paid(uow, order, [session_id, intent_id, charge_id], received_at)
    elif paid and order.status in (OrderStatus.PENDING, OrderStatus.CANCELLED):
        order.status = OrderStatus.PAID
        order.paid_at = received_at
        _touch(order)
        session.add(order)
        shop.take_stock(uow, order)
        session.flush()
        ids = [value for value in (session_id, intent_id, charge_id) if value]
        record_history(
            uow,
            order.supporter_id,
            type="purchase",
            summary=f"Shop order of {format_pence(order.goods_amount + order.vat_amount, order.currency)}",
            at=received_at,
            amount=order.goods_amount + order.vat_amount,
            currency=order.currency,
            data={"order_id": str(order.id), "provider_ids": ids},
            dedupe_key=f"purchase:{order.id}",
        )
        uow.enqueue(RECEIPT_FOR_ORDER, order_id=str(order.id))
        payouts.on_money_recorded(uow, ids)
        if shop.erased_supporters(session, [order.supporter_id]):
            _held_for_want_of_an_address(uow, order)
    if order.donation_amount <= 0:
        return
    gift, _ = _gift_or_insert(
        uow, "stripe_checkout_session_id", session_id, lambda: _donation_gift_of_order(checkout, order, session_id)
    )
    _set(
        gift,
        stripe_payment_intent_id=gift.stripe_payment_intent_id or intent_id,
        stripe_charge_id=gift.stripe_charge_id or charge_id,
    )
    session.add(gift)
    if paid:
        _mark_gift_paid(uow, gift, received_at)


ORDER_NEEDS_ADDRESS = "order_needs_address"


def _held_for_want_of_an_address(uow: UnitOfWork, order: Order, *, paid: str = "after") -> None:
    """A basket paid after its supporter's data was erased (the donor paid a moment before the erasure closed the
    page), or paid before it and not posted yet: the money is recorded as any sale's, but there is no address to
    post the shirts to. The order is held (`shop.held_reason`: off the packing list, not fulfillable) and a review
    item asks staff to refund it at Stripe (the refund's events then record it). No personal data: the item names
    the order only."""
    money = format_pence(order.goods_amount + order.vat_amount + order.donation_amount, order.currency)
    when = (
        "was paid after the supporter's data was erased"
        if paid == "after"
        else "was paid but not posted when the supporter's data was erased"
    )
    raise_review_item(
        uow,
        order.supporter_id,
        kind=ORDER_NEEDS_ADDRESS,
        detail=f"A shop order of {money} {when}: there is no address to post the shirts to. Refund it at Stripe.",
        data={"order_id": str(order.id), "provider_ids": [v for v in (order.stripe_charge_id,) if v]},
        dedupe_key=f"{ORDER_NEEDS_ADDRESS}:{order.id}",
    )


def _duplicate_order(uow: UnitOfWork, basket: Order, session_id: str) -> Order:
    """The order of a second payment of `basket`, keyed on its Checkout Session: the basket's amounts, no lines (the
    shirts are the basket's, sold once), its donation line a gift of its own (`_donation_gift_of_order`)."""

    def build() -> Order:
        now = utc_now()
        return Order(
            supporter_id=basket.supporter_id,
            currency=basket.currency,
            goods_amount=basket.goods_amount,
            vat_amount=basket.vat_amount,
            vat_rate_bp=basket.vat_rate_bp,
            donation_amount=basket.donation_amount,
            stripe_checkout_session_id=session_id,
            duplicate_of_id=basket.id,
            created_at=now,
            updated_at=now,
        )

    order, _ = _row_or_insert(uow, Order, "stripe_checkout_session_id", session_id, build)
    return order


DUPLICATE_PAYMENT = "duplicate_payment"


def _duplicate_paid(uow: UnitOfWork, order: Order, ids: list[str | None], received_at: dt.datetime) -> None:
    """A basket's second payment arrived: held for the donor (no stock, no shirts, no sale receipt); finance is asked
    to refund it (or keep it, as the donor wishes) through a review item on the supporter."""
    if order.status not in (OrderStatus.PENDING, OrderStatus.CANCELLED):
        return
    _set(order, status=OrderStatus.DUPLICATE_PAYMENT, paid_at=received_at)
    uow.session.add(order)
    uow.session.flush()
    provider_ids = [value for value in ids if value]
    total = order.goods_amount + order.vat_amount + order.donation_amount
    money = format_pence(total, order.currency)
    data = {"order_id": str(order.id), "duplicate_of_id": str(order.duplicate_of_id), "provider_ids": provider_ids}
    record_history(
        uow,
        order.supporter_id,
        type=DUPLICATE_PAYMENT,
        summary=f"Shop basket paid a second time ({money}): to refund",
        at=received_at,
        amount=total,
        currency=order.currency,
        data=data,
        dedupe_key=f"{DUPLICATE_PAYMENT}:{order.id}",
    )
    raise_review_item(
        uow,
        order.supporter_id,
        kind=DUPLICATE_PAYMENT,
        detail=f"A shop basket was paid twice: refund the second payment of {money} "
        f"(Stripe {order.stripe_charge_id or order.stripe_payment_intent_id}) unless the donor wants to keep it",
        data=data,
        dedupe_key=f"{DUPLICATE_PAYMENT}:{order.id}",
    )
    payouts.on_money_recorded(uow, provider_ids)


def _order_of_session(uow: UnitOfWork, checkout: Checkout, session_id: str | None) -> Order | None:
    """The order a Checkout Session pays for: the checkout's basket, or, once another session of it completed, this
    session's duplicate order (None: this one never completed)."""
    if checkout.order_id is None:
        return None
    order = repository.order_locked(uow.session, checkout.order_id)
    if order is not None and session_id and order.stripe_checkout_session_id not in (None, session_id):
        return repository.first_locked(uow.session, repository.by_key(Order, "stripe_checkout_session_id", session_id))
    return order


def _start_stripe_regular_gift(
    uow: UnitOfWork, stripe: StripeGateway, checkout: Checkout, session_object: dict[str, Any], *, at: dt.datetime
) -> Effect:
    subscription_id = _id(session_object.get("subscription"))
    if subscription_id is None:
        return Effect.ignored("a subscription checkout without a subscription")
    subscription = stripe.retrieve_subscription(subscription_id)

    def build() -> RegularGift:
        now = utc_now()
        return RegularGift(
            supporter_id=checkout.supporter_id,
            amount=checkout.amount,
            currency=checkout.currency,
            provider=Provider.STRIPE,
            method=Method.CARD,
            appeal=checkout.appeal,
            declaration_id=checkout.declaration_id,
            checkout_id=checkout.id,
            donor=checkout.donor,
            stripe_subscription_id=subscription_id,
            stripe_customer_id=_id(session_object.get("customer")),
            created_at=now,
            updated_at=now,
        )

    regular, _ = _regular_or_insert(uow, "stripe_subscription_id", subscription_id, build)
    closed = checkout.status == CheckoutStatus.CANCELLED
    _set(checkout, status=CheckoutStatus.COMPLETED, completed_at=checkout.completed_at or at)
    uow.session.add(checkout)
    _apply_stripe_subscription(uow, regular, subscription, at=at)
    _stop_if_started_by_closed_checkout(uow, regular, closed=closed)
    return Effect.processed(f"stripe_subscription:{subscription_id}", f"stripe_checkout_session:{session_object['id']}")


_STRIPE_SUBSCRIPTION_STATUS = {
    "active": RegularGiftStatus.ACTIVE,
    "trialing": RegularGiftStatus.ACTIVE,
    "past_due": RegularGiftStatus.ACTIVE,  # arrears follow the instalments, not this flag
    "unpaid": RegularGiftStatus.ACTIVE,
    "paused": RegularGiftStatus.PAUSED,
    "canceled": RegularGiftStatus.CANCELLED,
    "incomplete_expired": RegularGiftStatus.CANCELLED,
    "incomplete": RegularGiftStatus.PENDING,
}


def _apply_stripe_subscription(
    uow: UnitOfWork, regular: RegularGift, subscription: dict[str, Any], *, at: dt.datetime
) -> None:
    started = _when(subscription.get("start_date")) or _when(subscription.get("created"))
    _started_at_provider(uow, regular, started)
    status = _STRIPE_SUBSCRIPTION_STATUS.get(str(subscription.get("status")), regular.status)
    if subscription.get("pause_collection") and status == RegularGiftStatus.ACTIVE:
        status = RegularGiftStatus.PAUSED
    items = [item for item in ((subscription.get("items") or {}).get("data") or []) if isinstance(item, dict)]
    amount = _stripe_items_amount(items)
    if amount:
        _set(regular, amount=amount)  # the donor changed their monthly gift
    due = _stripe_next_due(regular, subscription, items)
    if due is not None and (regular.next_due_on is None or due > regular.next_due_on):
        _set(regular, next_due_on=due)
        # The period Stripe is in may be one already closed (voided, free): not the one expected.
        _step_over_closed(regular, repository.instalments(uow.session, regular.id))
    if status == RegularGiftStatus.PENDING:
        uow.session.add(regular)
        return
    details = subscription.get("cancellation_details") or {}
    reason = str(details.get("reason") or details.get("feedback") or "") if isinstance(details, dict) else ""
    ended = _when(subscription.get("ended_at")) or _when(subscription.get("canceled_at")) or at
    if regular.status == RegularGiftStatus.PAUSED and status == RegularGiftStatus.ACTIVE:
        regular.status = RegularGiftStatus.ACTIVE
        _touch(regular)
        uow.session.add(regular)
        _refresh_arrears(uow, regular)
        return
    _set_regular_status(
        uow, regular, status, at=ended if status in _TERMINAL_REGULAR else at, reason=reason.replace("_", " ")
    )


def _stripe_items_amount(items: list[dict[str, Any]]) -> int | None:
    """What a subscription charges each period: its items' unit amounts times quantities (None if unknown)."""
    total = 0
    for item in items:
        price = item.get("price") or item.get("plan") or {}
        unit = price.get("unit_amount", price.get("amount")) if isinstance(price, dict) else None
        if not isinstance(unit, int):
            return None
        total += unit * int(item.get("quantity") or 1)
    return total or None


def _stripe_next_due(regular: RegularGift, subscription: dict[str, Any], items: list[dict[str, Any]]) -> dt.date | None:
    """The instalment expected next: the current period's, charged at its start, until one is paid for it; then
    the next period's. (A renewal moves the period on before its invoice is paid: its end is not yet due.)"""

    def latest(name: str) -> dt.date | None:
        moments = [_when(value) for value in [*(item.get(name) for item in items), subscription.get(name)]]
        known = [moment for moment in moments if moment is not None]
        return uk_date(max(known)) if known else None

    trial_end = _when(subscription.get("trial_end"))
    if subscription.get("status") == "trialing" and trial_end is not None:
        # In a free trial Stripe's current period is the trial: the first payment is due when it ends, not at its start.
        return uk_date(trial_end)
    start, end = latest("current_period_start"), latest("current_period_end")
    if start is not None and (regular.last_paid_on is None or regular.last_paid_on < start):
        return start
    return end


def fail_stripe_checkout(uow: UnitOfWork, session_object: dict[str, Any], *, at: dt.datetime) -> Effect:
    """`checkout.session.async_payment_failed`: the delayed payment did not arrive."""
    checkout = _checkout_of_stripe_session(uow, session_object)
    session_id = _id(session_object.get("id"))
    if checkout is None or session_id is None:
        return Effect.ignored("not one of our checkouts")
    if checkout.status != CheckoutStatus.COMPLETED:
        _set(checkout, status=CheckoutStatus.FAILED)
        uow.session.add(checkout)
    order = _order_of_session(uow, checkout, session_id)
    if order is not None and order.status == OrderStatus.PENDING:
        _set(order, status=OrderStatus.CANCELLED)
        uow.session.add(order)
    key = f"stripe_checkout_session:{session_id}"
    if checkout.kind == CheckoutKind.SHOP and (order is None or order.donation_amount <= 0):
        return Effect.processed(key)  # a basket's gift is its donation line: without one, no gift failed
    if checkout.frequency == Frequency.MONTHLY or session_object.get("mode") == "subscription":
        # A monthly gift's first payment is an instalment, keyed on its invoice: `invoice.payment_failed` records it.
        return Effect.processed(key)
    gift = repository.first_locked(uow.session, repository.by_key(Gift, "stripe_checkout_session_id", session_id))
    if gift is None:

        def build() -> Gift:
            if order is not None and checkout.kind == CheckoutKind.SHOP:
                return _donation_gift_of_order(checkout, order, session_id)
            return _gift_from_checkout(checkout, stripe_checkout_session_id=session_id)

        gift, _ = _gift_or_insert(uow, "stripe_checkout_session_id", session_id, build)
    reason = "the delayed payment failed"
    if _fail_gift(uow, gift, reason):
        _payment_failed_history(uow, gift, reason, at, session_id)
    return Effect.processed(key)


def expire_stripe_checkout(uow: UnitOfWork, session_object: dict[str, Any]) -> Effect:
    """`checkout.session.expired`: the donor never paid (an abandoned basket keeps its stock)."""
    checkout = _checkout_of_stripe_session(uow, session_object)
    if checkout is None:
        return Effect.ignored("not one of our checkouts")
    if checkout.status in (CheckoutStatus.PENDING, CheckoutStatus.OPEN):
        _set(checkout, status=CheckoutStatus.EXPIRED)
        uow.session.add(checkout)
    # Another session of a basket paid already (a second tab left open) expiring cancels nothing.
    order = _order_of_session(uow, checkout, _id(session_object.get("id")))
    if order is not None and order.status == OrderStatus.PENDING:
        _set(order, status=OrderStatus.CANCELLED)
        uow.session.add(order)
    return Effect.processed()


def note_stripe_payment_intent(uow: UnitOfWork, intent: dict[str, Any]) -> Effect:
    """`payment_intent.succeeded` beside `checkout.session.completed`: never a second gift; it may tell the charge."""
    intent_id = _id(intent.get("id"))
    charge_id = _id(intent.get("latest_charge"))
    order = repository.order_for_stripe_payment(uow.session, intent_id, None)
    gift = repository.gift_for_stripe_payment(uow.session, intent_id, None)
    if order is None and gift is None:
        return Effect.ignored("the gift is recorded from its checkout session or invoice")
    for record in (order, gift):
        if record is not None and record.stripe_charge_id is None and charge_id:
            _set(record, stripe_charge_id=charge_id)
            uow.session.add(record)
    return Effect.processed(f"stripe_charge:{charge_id}" if charge_id else None)


# --- Stripe: subscriptions and invoices -------------------------------------------------------------------------


def invoice_subscription_id(invoice: dict[str, Any]) -> str | None:
    """Both payload shapes: `parent.subscription_details.subscription` (basil on) and top-level `subscription`."""
    parent = invoice.get("parent")
    if isinstance(parent, dict):
        details = parent.get("subscription_details")
        if isinstance(details, dict) and _id(details.get("subscription")):
            return _id(details.get("subscription"))
    return _id(invoice.get("subscription"))


def _embedded_payments(invoice: dict[str, Any]) -> list[Any]:
    payments_list = invoice.get("payments")
    entries = payments_list.get("data") if isinstance(payments_list, dict) else None
    return entries if isinstance(entries, list) else []


def _invoice_payment_entries(
    stripe: StripeGateway, invoice: dict[str, Any], *, fresh: bool = False
) -> list[dict[str, Any]]:
    """The invoice's payments (`invoice_payment` objects): embedded in the payload, else (or `fresh`: as Stripe has
    them now) listed through the SDK."""
    entries = [] if fresh else _embedded_payments(invoice)
    if not entries and invoice.get("id"):
        entries = stripe.list_invoice_payments(str(invoice["id"]))
    return [entry for entry in entries or [] if isinstance(entry, dict)]


def _invoice_payment_ids(
    stripe: StripeGateway, invoice: dict[str, Any], entries: list[dict[str, Any]] | None = None
) -> tuple[str | None, str | None]:
    """(payment intent, charge) of an invoice: legacy top-level fields, the embedded payments, or the SDK."""
    intent_id, charge_id = _id(invoice.get("payment_intent")), _id(invoice.get("charge"))
    if intent_id is None:
        if entries is None:
            entries = _invoice_payment_entries(stripe, invoice)
        for entry in entries:
            payment = entry.get("payment") if isinstance(entry, dict) else None
            paid_entry = entry.get("status") in (None, "paid") or intent_id is None
            if isinstance(payment, dict) and _id(payment.get("payment_intent")) and paid_entry:
                intent_id = _id(payment.get("payment_intent"))
    if intent_id and charge_id is None:
        charge_id = _id(stripe.retrieve_payment_intent_with_charge(intent_id).get("latest_charge"))
    return intent_id, charge_id


def _invoice_due_on(invoice: dict[str, Any]) -> dt.date:
    """The instalment's date: the start of the service period its lines bill (the latest, so proration lines of the
    period before do not pull it back). Not `invoice.period_start`: on a renewal invoice that looks back one period
    (Stripe: "use the line item period to get the service period"), which would date February's instalment in
    January and tie it with January's."""
    lines = (invoice.get("lines") or {}).get("data") or []
    starts = [
        moment
        for line in lines
        if isinstance(line, dict)
        for moment in [_when((line.get("period") or {}).get("start"))]
        if moment is not None
    ]
    moment = max(starts, default=None) or _when(invoice.get("period_start")) or _when(invoice.get("created"))
    return uk_date(moment or utc_now())


def record_stripe_invoice_paid(
    uow: UnitOfWork, stripe: StripeGateway, invoice: dict[str, Any], *, at: dt.datetime
) -> Effect:
    """`invoice.paid`: one instalment per invoice; a later success clears the arrears."""
    invoice_id = _id(invoice.get("id"))
    subscription_id = invoice_subscription_id(invoice)
    amount = invoice.get("amount_paid")
    if invoice_id is None or subscription_id is None:
        return Effect.ignored("not a subscription invoice")
    regular, adopted = _stripe_regular_gift(uow, stripe, subscription_id, at=at)
    if regular is None:
        return Effect.waiting(f"stripe_subscription:{subscription_id}")
    adopted_key = f"stripe_subscription:{subscription_id}" if adopted else None
    if not isinstance(amount, int) or amount <= 0:
        if not _bills_a_period(invoice):
            # Paid with nothing, but no period's invoice (a proration when the plan changed, a one-off invoice): no
            # month was free, so none is closed (within 14 days of the expected one, it would pass for that month).
            # Unless it asked for money that a credit note then settled (or a failure of it is recorded): that
            # invoice will never be paid, so its gift is closed as any invoice closed without a card payment is,
            # and a failure processed after this finds it closed.
            credited = _minor_units(invoice.get("pre_payment_credit_notes_amount")) or 0
            recorded = repository.exists(uow.session, Gift, "stripe_invoice_id", invoice_id)
            if credited <= 0 and not recorded:
                return Effect.processed(adopted_key, note="a £0 invoice that bills no period of the plan")
            gift = _paid_instalment(uow, regular, invoice, amount=0)
            if gift.status not in (GiftStatus.PAID, GiftStatus.REVERSED):
                _credited_history(uow, regular, gift, at=_transition_at(invoice, "paid_at") or at)
            _close_instalment(uow, regular, gift, _CREDITED)
            return Effect.processed(f"stripe_invoice:{invoice_id}", adopted_key, note=_CREDITED)
        # A free period (a 100%-off coupon, a credit balance): no money, but its instalment is not missing either. It
        # is remembered as an instalment closed at £0 (keyed on the invoice, as every instalment), so a free period
        # later than the one expected is stepped over once the schedule reaches it, as a voided one is.
        gift = _paid_instalment(uow, regular, invoice, amount=0)
        trial_end = _trial_end(invoice, gift.due_on)
        if gift.status not in (GiftStatus.PAID, GiftStatus.REVERSED):
            _free_period_history(uow, regular, gift, trial_end, at=_transition_at(invoice, "paid_at") or at)
        _close_instalment(uow, regular, gift, _TRIAL if trial_end else _FREE, until=trial_end)
        return Effect.processed(f"stripe_invoice:{invoice_id}", adopted_key, note=_TRIAL if trial_end else _FREE)
    # An older payload names its card payment: its payments are listed only if it lacks the intent (as before).
    legacy_ids = _id(invoice.get("payment_intent")) or _id(invoice.get("charge"))
    entries = None if legacy_ids else _invoice_payment_entries(stripe, invoice)
    off_stripe = _paid_off_stripe(invoice, entries or [], amount)
    if off_stripe is None and _embedded_payments(invoice):
        # The event's copy of the payments may lag (an amount not stated yet): Stripe's list as it is now.
        entries = _invoice_payment_entries(stripe, invoice, fresh=True)
        off_stripe = _paid_off_stripe(invoice, entries, amount)
    if off_stripe is None:
        # Nothing states how much was paid outside Stripe (a record states no amount, or the card paid less than the
        # invoice and no record listed says who paid the rest): no guess (a card gift of money no payout carries, or
        # a card gift lost). The event fails and is retried until Stripe's data says it; nothing is recorded meanwhile.
        raise ProviderUnavailable(
            f"invoice {invoice_id}: its payments do not say how it was split between the card and payments recorded "
            "outside Stripe (a record with no amount yet, or one not listed yet)"
        )
    received_at = _transition_at(invoice, "paid_at")
    if off_stripe >= amount:
        # Marked paid in the dashboard: no charge, so no card income and nothing a payout will ever carry.
        gift = _instalment(uow, regular, invoice, amount=amount)
        if gift.status not in (GiftStatus.PAID, GiftStatus.REVERSED):
            _paid_outside_stripe_history(uow, regular, gift, off_stripe, at=received_at or at)
        _close_instalment(uow, regular, gift, _PAID_OUTSIDE)
        return Effect.processed(f"stripe_invoice:{invoice_id}", adopted_key, note=_PAID_OUTSIDE)
    intent_id, charge_id = _invoice_payment_ids(stripe, invoice, entries)
    # The card gift is the part the card paid: what its payout carries.
    gift = _paid_instalment(uow, regular, invoice, amount=amount - off_stripe)
    _set(
        gift,
        stripe_payment_intent_id=gift.stripe_payment_intent_id or intent_id,
        stripe_charge_id=gift.stripe_charge_id or charge_id,
    )
    if off_stripe and gift.status != GiftStatus.PAID:
        _paid_outside_stripe_history(uow, regular, gift, off_stripe, at=received_at or at)
    uow.session.add(gift)
    _mark_gift_paid(uow, gift, received_at or at)
    uow.session.flush()
    if _is_instalment(gift):
        _refresh_arrears(uow, regular)
    return Effect.processed(
        f"stripe_invoice:{invoice_id}",
        adopted_key,
        f"stripe_payment_intent:{intent_id}" if intent_id else None,
        f"stripe_charge:{charge_id}" if charge_id else None,
    )


def _paid_instalment(uow: UnitOfWork, regular: RegularGift, invoice: dict[str, Any], *, amount: int) -> Gift:
    """The instalment of a paid invoice, holding what was paid on it, whatever an earlier event recorded it with (the
    amount asked, by a failure or a stray void; £0 for a period first read as free), unless it is money already."""
    gift = _instalment(uow, regular, invoice, amount=amount)
    if gift.status not in (GiftStatus.PAID, GiftStatus.REVERSED):
        _set(gift, amount=amount)
    return gift


def _instalment(uow: UnitOfWork, regular: RegularGift, invoice: dict[str, Any], *, amount: int) -> Gift:
    """The invoice's Gift row of the plan, keyed on the invoice. An invoice that bills no period of the plan (a
    proration, a manual invoice: `_bills_a_period`) gets no `due_on`: a gift of the plan, never one of its
    instalments (`_is_instalment`), so it never moves the schedule, closes a period or settles arrears."""
    invoice_id = str(invoice["id"])
    due_on = _invoice_due_on(invoice) if _bills_a_period(invoice) else None

    def build() -> Gift:
        now = utc_now()
        return Gift(
            supporter_id=regular.supporter_id,
            amount=amount,
            currency=str(invoice.get("currency") or regular.currency).upper(),
            provider=Provider.STRIPE,
            method=Method.CARD,
            appeal=regular.appeal,
            declaration_id=regular.declaration_id,
            donor=regular.donor,
            regular_gift_id=regular.id,
            due_on=due_on,
            stripe_invoice_id=invoice_id,
            stripe_subscription_id=regular.stripe_subscription_id,
            created_at=now,
            updated_at=now,
        )

    gift, _ = _gift_or_insert(uow, "stripe_invoice_id", invoice_id, build)
    if due_on is None and gift.due_on is not None:
        # Recorded as an instalment before this rule (or from a payload that did not say why it was made): every event
        # of the invoice bills no period, so it is taken out of the instalments and the arrears read again without it
        # (a schedule it moved on is not moved back: nothing says where it was).
        _set(gift, due_on=None)
        uow.session.add(gift)
        uow.session.flush()
        _refresh_arrears(uow, regular)
    return gift


def _is_instalment(gift: Gift) -> bool:
    """Whether a gift of a plan is one of its instalments (a period's payment, with its due date): only these
    decide the schedule and arrears. Every reading of instalments by due date skips the others."""
    return gift.due_on is not None


def record_stripe_invoice_failed(
    uow: UnitOfWork, stripe: StripeGateway, invoice: dict[str, Any], *, at: dt.datetime
) -> Effect:
    """`invoice.payment_failed`: the instalment shows as failed, with the provider's reason; arrears if latest."""
    found = _invoice_instalment(uow, stripe, invoice, at=at)
    if isinstance(found, Effect):
        return found
    regular, gift, keys = found
    reason = _stripe_failure_reason(stripe, invoice)
    attempt = invoice.get("attempt_count") or 0
    if gift.status != GiftStatus.CANCELLED:  # voided, written off or paid outside Stripe since: it stays closed
        _fail_gift(uow, gift, reason)
    # The failed attempt happened whatever arrived first: a retry's invoice.paid processed earlier leaves the gift
    # paid, but the attempt still belongs in the history (its dedupe key keeps it to one item).
    _payment_failed_history(
        uow,
        gift,
        reason,
        at,
        f"{gift.stripe_invoice_id}:{attempt}",
        amount=_amount_asked(invoice, regular),
        regular_gift_id=str(regular.id),
        attempt=attempt,
    )
    uow.session.flush()
    if _is_instalment(gift):  # a failed proration is a failed payment, not a missed month
        _refresh_arrears(uow, regular)
    return Effect.processed(*keys)


def _stripe_failure_reason(stripe: StripeGateway, invoice: dict[str, Any]) -> str:
    """The decline message of the invoice's payment (through the SDK), else what the invoice says."""
    try:
        intent_id, _ = _invoice_payment_ids(stripe, invoice)
        if intent_id:
            error = stripe.retrieve_payment_intent_with_charge(intent_id).get("last_payment_error") or {}
            if isinstance(error, dict) and (error.get("message") or error.get("code")):
                return str(error.get("message") or error.get("code"))
    except PaymentsError:
        log.warning("could not fetch the failure reason of invoice %s", invoice.get("id"), exc_info=True)
    finalization = invoice.get("last_finalization_error")
    if isinstance(finalization, dict) and finalization.get("message"):
        return str(finalization["message"])
    return "the card payment failed"


# --- Stripe: instalments closed without a card payment -----------------------------------------------------------
# An invoice Stripe closes without money through a card: voided (the instalment cancelled), marked uncollectible
# (Stripe gave up: written off) or marked paid outside Stripe. The instalment's Gift row (keyed on the invoice, as
# every instalment) becomes `cancelled`, with one of these reasons, so no event processed later in any order makes it
# a failure again and the arrears it caused clear; its period is no longer expected. A card payment still wins
# (`_mark_gift_paid` takes a cancelled gift to paid): a written-off invoice the donor pays after all is money.

_VOIDED = "cancelled: the invoice was voided in Stripe"
_WRITTEN_OFF = "written off: Stripe marked the invoice uncollectible"
_PAID_OUTSIDE = "marked paid outside Stripe: no card payment"
# Not closed by anyone: the invoice was paid with nothing (a free period: a 100%-off coupon, a credit balance).
_FREE = "free period: nothing was due on the invoice (a coupon or credit balance)"
# The subscription's first invoice, paid with nothing, for a free trial: its period ends when the trial does.
_TRIAL = "free trial: nothing was due until the trial ended"
# Voided and paid are final at Stripe (neither can become the other); uncollectible can still be paid or voided. A
# payment (outside Stripe, or of nothing) outranks a void (a void beside a payment is a stray event, as for a card
# payment), so any order ends paid.
# An invoice that bills no period, which asked for money a credit note (or credit balance) then settled: paid with
# nothing, never to be paid by card.
_CREDITED = "settled without a payment: a credit note or credit balance covered the invoice"
_CLOSE_RANK = {_WRITTEN_OFF: 1, _VOIDED: 2, _PAID_OUTSIDE: 3, _FREE: 3, _TRIAL: 3, _CREDITED: 3}
# Closed as paid at Stripe: a void of it is a stray event.
_PAID_AT_STRIPE = (_PAID_OUTSIDE, _FREE, _TRIAL, _CREDITED)
# The invoices that bill a period of the plan (Stripe's `billing_reason`): the first, each renewal, and
# `subscription` (older invoices' word for both). Not `subscription_update` (a proration when the plan changed, unless
# the change restarted the period: `_bills_a_period`), `manual`, `subscription_threshold`...: such an invoice is no
# instalment (a gift of the plan with no `due_on`), and paid with nothing it frees no month.
_PERIOD_INVOICES = {"subscription_create", "subscription_cycle", "subscription"}

_UNCOLLECTIBLE_WHY = {
    "max_payment_attempts": "every retry failed",
    "payment_not_received": "no payment was received",
    "subscription_canceled": "the subscription was cancelled",
    "subscription_paused": "collection was paused",
    "user_forgiven": "marked uncollectible by hand",
}


def _bills_a_period(invoice: dict[str, Any]) -> bool:
    """Whether the invoice is a period's (an invoice that does not say why it was made is taken as one, as before).
    A change that restarts the period (a new billing anchor, a trial ended early, a new interval) bills the new
    period on its `subscription_update` invoice, as a line of the subscription that is no proration."""
    reason = invoice.get("billing_reason")
    if not isinstance(reason, str) or not reason or reason in _PERIOD_INVOICES:
        return True
    lines = (invoice.get("lines") or {}).get("data") or []
    return reason == "subscription_update" and any(_new_period_line(line) for line in lines if isinstance(line, dict))


def _new_period_line(line: dict[str, Any]) -> bool:
    """A line billing a period of the subscription, not a proration: `parent.subscription_item_details` (basil on),
    else the older line's `type` "subscription" and `proration`."""
    parent = line.get("parent")
    if isinstance(parent, dict):
        details = parent.get("subscription_item_details")
        return (
            parent.get("type") == "subscription_item_details"
            and isinstance(details, dict)
            and details.get("proration") is False
        )
    return line.get("type") == "subscription" and line.get("proration") is False


def _trial_end(invoice: dict[str, Any], due_on: dt.date | None) -> dt.date | None:
    """When a free trial billed by this £0 invoice ends (the first payment's due date), else None. Stripe bills a
    trial as the subscription's first invoice (`subscription_create`), its lines' period running from `trial_start`
    to `trial_end`; a period a month long is a free first month, not a trial (3 days either way: month ends)."""
    if invoice.get("billing_reason") != "subscription_create" or due_on is None:
        return None
    lines = (invoice.get("lines") or {}).get("data") or []
    ends = [_when((line.get("period") or {}).get("end")) for line in lines if isinstance(line, dict)]
    end = max((uk_date(moment) for moment in ends if moment is not None), default=None)
    if end is None or end <= due_on or abs((end - _add_month(due_on)).days) <= 3:
        return None
    return end


def _transition_at(invoice: dict[str, Any], name: str) -> dt.datetime | None:
    transitions = invoice.get("status_transitions")
    return _when(transitions.get(name)) if isinstance(transitions, dict) else None


def _payment_kind(entry: dict[str, Any]) -> str | None:
    """What an `invoice_payment` was paid with: `payment_intent` or `charge` (through Stripe), `payment_record`
    (a payment recorded as made outside Stripe)."""
    payment = entry.get("payment")
    if not isinstance(payment, dict):
        return None
    kind = payment.get("type")
    if isinstance(kind, str) and kind:
        return kind
    return next((name for name in ("payment_intent", "charge", "payment_record") if _id(payment.get(name))), None)


def _paid_off_stripe(invoice: dict[str, Any], entries: list[dict[str, Any]], amount: int) -> int | None:
    """How much of a paid invoice's `amount_paid` was paid outside Stripe. API 2025-03-31.basil removed
    `paid_out_of_band` (our pin, endive, has none): a payment marked as made outside Stripe is a Payment Record among
    the invoice's payments (`payment.type` "payment_record"; `amount_paid_off_stripe` only when a retrieve expands it,
    never in an event). Older payloads carry the flag. A paid invoice whose payments are all recorded ones is the
    same: nothing a payout could ever carry. None: these entries do not say how a card-and-record invoice was split
    (`_card_and_recorded_split`)."""
    if invoice.get("paid_out_of_band") is True:
        return amount
    expanded = invoice.get("amount_paid_off_stripe")
    if isinstance(expanded, int) and not isinstance(expanded, bool) and expanded > 0:
        return min(expanded, amount)
    if _id(invoice.get("payment_intent")) or _id(invoice.get("charge")):
        return 0  # the older payload names its card payment
    through_stripe = [entry for entry in entries if _payment_kind(entry) in ("payment_intent", "charge")]
    records = [e for e in entries if _payment_kind(e) == "payment_record" and e.get("status") in (None, "paid")]
    if not through_stripe:
        # Only recorded payments: paid outside Stripe. Nothing listed at all is no evidence either way: a card
        # payment is assumed (as before), so a lagging list never loses a gift; reconciliation shows any mistake.
        return amount if records else 0
    card = [entry for entry in through_stripe if entry.get("status") in (None, "paid")]
    if not records:
        # A card payment and nothing recorded: the card's, unless the card states it paid less than the invoice (a
        # lagging list left a Payment Record out entirely): then nothing listed says where the rest came from.
        by_card = _stated_sum(card)
        return None if card and by_card is not None and by_card < amount else 0
    if not card:
        return amount
    return _card_and_recorded_split(card, records, amount)


def _stated_sum(entries: list[dict[str, Any]]) -> int | None:
    """What these payments paid (their `amount_paid`), None if any does not state it yet."""
    parts = [_minor_units(entry.get("amount_paid")) for entry in entries]
    return None if any(part is None for part in parts) else sum(part or 0 for part in parts)


def _minor_units(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _card_and_recorded_split(card: list[dict[str, Any]], records: list[dict[str, Any]], amount: int) -> int | None:
    """The part of an invoice paid both by card and by Payment Records that the records paid. An `invoice_payment`'s
    `amount_paid` is null until Stripe has it paid, so a snapshot can list a paid record without it: then the
    record's `amount_requested` (what it was recorded to pay towards the invoice), else what the card payments
    paid (their `amount_paid`) leaves the rest to the records. None if nothing says: never a guess, since the whole
    as card money is money no payout carries and the whole as paid outside is a card gift lost."""
    recorded = [_recorded_amount(entry) for entry in records]
    by_card = _stated_sum(card)
    if all(part is not None for part in recorded):
        outside = sum(part or 0 for part in recorded)
        if by_card is not None and by_card + outside < amount:
            return None  # a record the list left out paid the rest: the card gift is not the remainder
        return min(outside, amount)
    if by_card is not None:
        return max(amount - by_card, 0)
    return None


def _recorded_amount(record: dict[str, Any]) -> int | None:
    paid = _minor_units(record.get("amount_paid"))
    return paid if paid is not None else _minor_units(record.get("amount_requested"))


def _close_instalment(
    uow: UnitOfWork, regular: RegularGift, gift: Gift, reason: str, *, until: dt.date | None = None
) -> None:
    """The instalment closed without a card payment (a reason above): never a paid one (money stays money), never a
    later-ranked close undone by an earlier one processed late. Its period is no longer expected either way.
    `until`: when its period ends, if not a month on (a free trial)."""
    if gift.status not in (GiftStatus.PAID, GiftStatus.REVERSED):
        current = _CLOSE_RANK.get(gift.failure_reason, 0) if gift.status == GiftStatus.CANCELLED else 0
        if _CLOSE_RANK[reason] > current:
            _set(gift, status=GiftStatus.CANCELLED, failure_reason=reason)
            uow.session.add(gift)
            uow.session.flush()
        if gift.due_on is not None:
            _closed_period(uow, regular, gift.due_on, until=until)
    if _is_instalment(gift):  # an invoice that bills no period closes none and settles no arrears
        _refresh_arrears(uow, regular)


# How far a closed instalment's date may sit from the expected one and still be that period: Stripe dates a month-end
# plan 28th, 30th or 31st, never half a month apart.
_SAME_PERIOD = dt.timedelta(days=14)


def _closed_period(uow: UnitOfWork, regular: RegularGift, due_on: dt.date, *, until: dt.date | None = None) -> None:
    """A closed instalment's period (voided, written off, paid outside Stripe, free) is no longer expected: the one
    rule of which such a period moves the schedule. Only the expected period (or an earlier one) moves it on, to a
    month after it, and resolves the alerts up to it; a later one (March voided or free while February's failure is
    still owed) leaves the expected one expected and its alert open. With no schedule yet (nothing paid, Stripe told
    no current period) which period is expected is not known, so none moves it: a void of March processed before
    January's payment must not skip February for good. Either way the closed row is remembered, and
    `_step_over_closed` steps over it once the schedule reaches it. `until`: the period ends then, not a month on (a
    free trial: the first payment is due when it ends)."""
    expected = regular.next_due_on
    if expected is not None and due_on < expected + _SAME_PERIOD:
        following = until or _add_month(due_on)
        if following > expected:
            _set(regular, next_due_on=following)
            uow.session.add(regular)
        _settle_missing_alerts(uow, regular, through=due_on)
    else:
        _settle_missing_alerts(uow, regular, through=due_on, since=due_on)


def _step_over_closed(regular: RegularGift, instalments: Iterable[Gift]) -> None:
    """Move `next_due_on` past instalments closed without a card payment (voided, written off, paid outside
    Stripe, free) that sit at it: their periods are not expected."""
    # Not a free trial: its period is not a month (its end, the first payment's due date, is Stripe's `trial_end`,
    # applied by the trial's own invoice and by the subscription while it is trialing).
    closed = sorted(
        gift.due_on
        for gift in instalments
        if gift.status == GiftStatus.CANCELLED
        # A GoCardless instalment is cancelled only when its payment was (never collected, never asked again).
        and (gift.provider == Provider.GOCARDLESS or gift.failure_reason in _CLOSE_RANK)
        and gift.failure_reason != _TRIAL
        and gift.due_on is not None
    )
    for due_on in closed:
        due = regular.next_due_on
        if due is not None and due - _SAME_PERIOD < due_on < due + _SAME_PERIOD and _add_month(due_on) > due:
            _set(regular, next_due_on=_add_month(due_on))


def _instalment_history(
    uow: UnitOfWork, regular: RegularGift, gift: Gift, kind: str, summary: str, *, at: dt.datetime, amount: int
) -> None:
    money = format_pence(amount, gift.currency)
    if _is_instalment(gift):
        what = f"Monthly gift instalment of {money} due {gift.due_on:%d/%m/%Y}"
    else:
        what = f"Monthly gift: an extra invoice of {money} (a change to the plan or a one-off charge, not a month)"
    record_history(
        uow,
        gift.supporter_id,
        type=kind,
        summary=f"{what} {summary}",
        at=at,
        amount=amount,
        currency=gift.currency,
        data={"gift_id": str(gift.id), "regular_gift_id": str(regular.id), "provider_ids": _provider_ids(gift)},
        dedupe_key=f"{kind}:{gift.stripe_invoice_id}",
    )


def _free_period_history(
    uow: UnitOfWork, regular: RegularGift, gift: Gift, trial_end: dt.date | None, *, at: dt.datetime
) -> None:
    """A period paid with nothing (a free month, a free trial): nothing was given, but the supporter's history says
    why no payment came that month (one item per invoice, as the other instalment items)."""
    since = f" from {gift.due_on:%d/%m/%Y}" if gift.due_on else ""
    if trial_end is not None:
        summary = (
            f"Monthly gift: free trial{since} to {trial_end:%d/%m/%Y}, nothing to pay "
            f"(the first payment is due on {trial_end:%d/%m/%Y})"
        )
    else:
        summary = (
            f"Monthly gift: nothing to pay for the month{since} "
            "(a free month: a coupon, a credit balance or a credit note covered it)"
        )
    record_history(
        uow,
        gift.supporter_id,
        type="instalment_free",
        summary=summary,
        at=at,
        data={"gift_id": str(gift.id), "regular_gift_id": str(regular.id), "provider_ids": _provider_ids(gift)},
        dedupe_key=f"instalment_free:{gift.stripe_invoice_id}",
    )


def _credited_history(uow: UnitOfWork, regular: RegularGift, gift: Gift, *, at: dt.datetime) -> None:
    """An extra invoice (no period) settled with nothing: what a failure of it said is no longer owed (one item per
    invoice, as a free period's; no amount: nothing was given)."""
    record_history(
        uow,
        gift.supporter_id,
        type="instalment_free",
        summary="Monthly gift: an extra invoice (a change to the plan or a one-off charge, not a month) left nothing "
        "to pay (a credit note or credit balance covered it)",
        at=at,
        data={"gift_id": str(gift.id), "regular_gift_id": str(regular.id), "provider_ids": _provider_ids(gift)},
        dedupe_key=f"instalment_free:{gift.stripe_invoice_id}",
    )


def _paid_outside_stripe_history(
    uow: UnitOfWork, regular: RegularGift, gift: Gift, amount: int, *, at: dt.datetime
) -> None:
    _instalment_history(
        uow,
        regular,
        gift,
        "instalment_paid_outside_stripe",
        "marked paid outside Stripe (no card payment: record any money that did arrive as a gift of its own)",
        at=at,
        amount=amount,
    )


def _invoice_instalment(
    uow: UnitOfWork, stripe: StripeGateway, invoice: dict[str, Any], *, at: dt.datetime
) -> tuple[RegularGift, Gift, list[str]] | Effect:
    """The regular gift and instalment a failed or closed invoice is about, and the keys it recorded (the instalment
    is recorded now if no event did yet: for a closed one, a cancelled row keyed on the invoice is what keeps a
    failure processed late from putting the plan in arrears); or the Effect when it is not ours (yet)."""
    invoice_id = _id(invoice.get("id"))
    subscription_id = invoice_subscription_id(invoice)
    if invoice_id is None or subscription_id is None:
        return Effect.ignored("not a subscription invoice")
    regular, adopted = _stripe_regular_gift(uow, stripe, subscription_id, at=at)
    if regular is None:
        return Effect.waiting(f"stripe_subscription:{subscription_id}")
    keys = [f"stripe_invoice:{invoice_id}"] + ([f"stripe_subscription:{subscription_id}"] if adopted else [])
    return regular, _instalment(uow, regular, invoice, amount=_amount_asked(invoice, regular)), keys


def _amount_asked(invoice: dict[str, Any], regular: RegularGift) -> int:
    """What a failed or closed invoice asked for, as its event has it (else the plan's amount). Its history item says
    this, not the row's amount now: a credit note since (the invoice then paid with nothing, a free period) makes the
    row £0, and an item written after that must not read "Payment of £0.00 failed"."""
    return _minor_units(invoice.get("amount_due")) or regular.amount


def record_stripe_invoice_voided(
    uow: UnitOfWork, stripe: StripeGateway, invoice: dict[str, Any], *, at: dt.datetime
) -> Effect:
    """`invoice.voided`: the instalment was cancelled (no money, no gift); arrears it caused clear, the schedule moves
    on. Stripe cannot void a paid invoice, so a paid instalment is left as it is (a stray or replayed event)."""
    found = _invoice_instalment(uow, stripe, invoice, at=at)
    if isinstance(found, Effect):
        return found
    regular, gift, keys = found
    paid_without_card = gift.status == GiftStatus.CANCELLED and gift.failure_reason in _PAID_AT_STRIPE
    if gift.status in (GiftStatus.PAID, GiftStatus.REVERSED) or paid_without_card:
        log.warning("invoice %s voided after it was paid: the paid instalment is kept", gift.stripe_invoice_id)
        return Effect.processed(*keys, note="the instalment was paid: a paid invoice cannot be voided")
    _instalment_history(
        uow,
        regular,
        gift,
        "instalment_voided",
        "cancelled: the invoice was voided in Stripe (no payment taken)",
        at=_transition_at(invoice, "voided_at") or at,
        amount=gift.amount,
    )
    _close_instalment(uow, regular, gift, _VOIDED)
    return Effect.processed(*keys)


def record_stripe_invoice_uncollectible(
    uow: UnitOfWork, stripe: StripeGateway, invoice: dict[str, Any], *, at: dt.datetime
) -> Effect:
    """`invoice.marked_uncollectible`: Stripe gave up collecting the instalment. It is written off (the plan no
    longer reads as in arrears for it, the schedule moves on) and the history says so; if the donor pays the invoice
    after all, `invoice.paid` still records the gift."""
    found = _invoice_instalment(uow, stripe, invoice, at=at)
    if isinstance(found, Effect):
        return found
    regular, gift, keys = found
    # API 2026-09-30.endive on: `status_details.uncollectible.reason` says why Stripe gave up.
    details = invoice.get("status_details")
    uncollectible = details.get("uncollectible") if isinstance(details, dict) else None
    why = _UNCOLLECTIBLE_WHY.get(str(uncollectible.get("reason")), "") if isinstance(uncollectible, dict) else ""
    # It happened whatever was processed first (as a failed attempt's item does): the history keeps it.
    _instalment_history(
        uow,
        regular,
        gift,
        "instalment_written_off",
        "written off: Stripe stopped trying to collect it" + (f" ({why})" if why else ""),
        at=_transition_at(invoice, "marked_uncollectible_at") or at,
        amount=_amount_asked(invoice, regular),
    )
    _close_instalment(uow, regular, gift, _WRITTEN_OFF)
    return Effect.processed(*keys)


def mirror_stripe_subscription(
    uow: UnitOfWork, stripe: StripeGateway, subscription_id: str, *, at: dt.datetime
) -> Effect:
    """`customer.subscription.*`: the status of the subscription as Stripe has it now (re-fetched, so an older
    snapshot arriving late cannot take the regular gift back)."""
    regular, adopted = _stripe_regular_gift(uow, stripe, subscription_id, at=at)
    if regular is None:
        return Effect.waiting(f"stripe_subscription:{subscription_id}")
    if adopted:  # adopting applied the subscription as Stripe has it now
        return Effect.processed(f"stripe_subscription:{subscription_id}")
    subscription = stripe.retrieve_subscription(subscription_id)
    _apply_stripe_subscription(uow, regular, subscription, at=at)
    return Effect.processed()


def _stripe_regular_gift(
    uow: UnitOfWork, stripe: StripeGateway, subscription_id: str, *, at: dt.datetime
) -> tuple[RegularGift | None, bool]:
    """The regular gift of a subscription, locked: recorded by its checkout, or adopted now (below; the second value
    says so, for the events waiting for it)."""
    regular = repository.first_locked(
        uow.session, repository.by_key(RegularGift, "stripe_subscription_id", subscription_id)
    )
    if regular is not None:
        return regular, False
    regular = _adopt_stripe_subscription(uow, stripe, subscription_id, at=at)
    return regular, regular is not None


def _adopt_stripe_subscription(
    uow: UnitOfWork, stripe: StripeGateway, subscription_id: str, *, at: dt.datetime
) -> RegularGift | None:
    """A subscription staff set up in the Stripe dashboard for a customer of a monthly gift of ours (each checkout
    makes its own customer, so the customer is one supporter): its invoices are that supporter's gifts, so it becomes a
    regular gift of theirs rather than waiting a week for a checkout that will never come. None (keep waiting): a
    subscription our checkout made (its `checkout_id` metadata: `checkout.session.completed` records it) or a
    customer we do not know."""
    subscription = stripe.retrieve_subscription(subscription_id)
    if (subscription.get("metadata") or {}).get("checkout_id"):
        return None
    customer_id = _id(subscription.get("customer"))
    if customer_id is None:
        return None
    known = uow.session.exec(
        select(RegularGift).where(RegularGift.stripe_customer_id == customer_id).order_by(col(RegularGift.created_at))
    ).first()
    if known is None:
        return None
    items = [item for item in ((subscription.get("items") or {}).get("data") or []) if isinstance(item, dict)]
    supporter_id, currency = known.supporter_id, str(subscription.get("currency") or known.currency).upper()

    def build() -> RegularGift:
        now = utc_now()
        return RegularGift(
            supporter_id=supporter_id,
            amount=_stripe_items_amount(items) or 0,
            currency=currency,
            provider=Provider.STRIPE,
            method=Method.CARD,
            stripe_subscription_id=subscription_id,
            stripe_customer_id=customer_id,
            created_at=now,
            updated_at=now,
        )

    regular, _ = _regular_or_insert(uow, "stripe_subscription_id", subscription_id, build)
    _apply_stripe_subscription(uow, regular, subscription, at=at)
    _stop_if_supporter_erased(uow, regular)
    return regular


def _stop_if_supporter_erased(uow: UnitOfWork, regular: RegularGift) -> None:
    """A subscription adopted for a supporter whose data was erased (made in the dashboard, its event arriving after
    the erasure): nobody may keep taking money from a person we can no longer name, so it is stopped at once through
    the cancellation erasures use (the erasure's own job already asked the providers to forget the customer and
    mandate it is on). Nothing personal is recorded: the adopted gift has no donor details."""
    if shop.erased_supporters(uow.session, [regular.supporter_id]):
        _stop_if_started_by_closed_checkout(uow, regular, closed=True, forget=False)


# --- Regular gifts cancelled through Giving -----------------------------------------------------------------------

CANCEL_REGULAR_GIFT = "payments.cancel_regular_gift"


def hold_unposted_orders(uow: UnitOfWork, supporter_ids: Sequence[uuid.UUID]) -> int:
    """An erasure: the paid shop orders of these records not posted yet can no longer be posted (no address). Each
    gets the review item a basket paid after an erasure gets (once: keyed on the order); returns how many. One
    whose goods were refunded in full already (its donation kept) has nothing to post and nothing left to refund
    for them: not held."""
    orders = [
        order
        for order in uow.session.exec(
            select(Order).where(
                col(Order.supporter_id).in_(supporter_ids),
                col(Order.fulfilled_at).is_(None),
                col(Order.status).in_([OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED]),
            )
        ).all()
        if not shop.goods_refunded_in_full(order)
    ]
    for order in orders:
        _held_for_want_of_an_address(uow, order, paid="before")
    return len(orders)


def open_regular_gifts(session: Session, supporter_ids: Sequence[uuid.UUID]) -> list[RegularGift]:
    """The regular gifts of these records that may still take money (not cancelled or finished)."""
    return list(
        session.exec(
            select(RegularGift)
            .where(col(RegularGift.supporter_id).in_(supporter_ids), col(RegularGift.status).not_in(_TERMINAL_REGULAR))
            .order_by(col(RegularGift.created_at), col(RegularGift.id))
        ).all()
    )


def request_cancellation(uow: UnitOfWork, regular_gift_id: uuid.UUID, *, requested_by: str) -> RegularGift:
    """Staff (a donor phoned) or an erasure ask for a regular gift to stop: the request is recorded, with a history
    item, and `payments.cancel_regular_gift` tells the provider after the commit. Asking again sends the job again
    (one whose retries ran out is tried afresh); the job does nothing once the gift has ended."""
    regular = repository.first_locked(uow.session, repository.by_key(RegularGift, "id", regular_gift_id))
    if regular is None:
        raise RegularGiftNotFound(f"no regular gift {regular_gift_id}")
    if regular.status in _TERMINAL_REGULAR:
        raise RegularGiftEnded(f"this regular gift is already {regular.status}; nothing was changed")
    if regular.cancel_requested_at is None:
        asked_at = utc_now()
        _set(regular, cancel_requested_at=asked_at, cancel_requested_by=requested_by[:255])
        uow.session.add(regular)
        _regular_history(
            uow,
            regular,
            "regular_gift_cancel_requested",
            f"Cancellation of the monthly gift of {format_pence(regular.amount, regular.currency)} "
            f"asked for in Giving ({requested_by})",
            at=asked_at,
            # A request that failed may be made again: each is an item of its own.
            occasion=asked_at.isoformat(timespec="microseconds"),
        )
    if requested_by == ERASURE_REQUEST and regular.provider == Provider.GOCARDLESS:
        # An erasure stops the Direct Debit itself too (the job's arguments, recorded with it, say so): a mandate left
        # active still lets the charity take money from a person it can no longer name.
        uow.enqueue(CANCEL_REGULAR_GIFT, regular_gift_id=str(regular.id), end_mandate=True)
    else:
        uow.enqueue(CANCEL_REGULAR_GIFT, regular_gift_id=str(regular.id))
    return regular


def cancellation_given_up(uow: UnitOfWork, regular_gift_id: uuid.UUID, error: str) -> None:
    """The cancel job failed for good (the provider refused, or is switched off): the request is no longer shown as
    in hand, the supporter's history says it was not done and why, and staff may ask again."""
    regular = repository.first_locked(uow.session, repository.by_key(RegularGift, "id", regular_gift_id))
    if regular is None or regular.cancel_requested_at is None:
        return
    if regular.status in _TERMINAL_REGULAR:
        _mandate_left_active(uow, regular, error)
        return
    asked_at, asked_by = regular.cancel_requested_at, regular.cancel_requested_by
    _set(regular, cancel_requested_at=None, cancel_requested_by="")
    uow.session.add(regular)
    _regular_history(
        uow,
        regular,
        "regular_gift_cancel_failed",
        f"Cancellation of the monthly gift of {format_pence(regular.amount, regular.currency)} asked for by "
        f"{asked_by or 'staff'} was not done: {error.splitlines()[-1][:300]}. It still takes payments.",
        at=utc_now(),
        occasion=asked_at.isoformat(timespec="microseconds"),
    )


MANDATE_LEFT_ACTIVE = "mandate_left_active"


def _mandate_left_active(uow: UnitOfWork, regular: RegularGift, error: str) -> None:
    """The cancel job gave up on a gift that has ended (its subscription did; the erasure's mandate could not be
    cancelled: GoCardless refused and still has it live). Nothing about the gift is undone, but the mandate still
    lets the charity take money from the dashboard: a review item (no personal data: the ids and GoCardless's
    answer) asks a person to cancel it there, and a `regular_gift_cancel_failed` history item says it was not
    done. One of each per request."""
    asked_at = regular.cancel_requested_at or utc_now()
    reason = error.splitlines()[-1][:300] if error else "no reason given"
    occasion = asked_at.isoformat(timespec="microseconds")
    mandate = regular.gocardless_mandate_id or "its mandate"
    raise_review_item(
        uow,
        regular.supporter_id,
        kind=MANDATE_LEFT_ACTIVE,
        detail=(
            f"The Direct Debit mandate {mandate} of an ended monthly gift of "
            f"{format_pence(regular.amount, regular.currency)} could not be cancelled ({reason}): GoCardless can "
            "still take payments on it. Cancel it in the GoCardless dashboard."
        ),
        data={"regular_gift_id": str(regular.id), "provider_ids": _regular_ids(regular)},
        dedupe_key=f"{MANDATE_LEFT_ACTIVE}:{regular.id}:{occasion}",
    )
    _regular_history(
        uow,
        regular,
        "regular_gift_cancel_failed",
        f"Cancellation of the Direct Debit mandate {mandate} asked for by {regular.cancel_requested_by or 'staff'} "
        f"was not done: {reason}. The mandate may still be used for payments.",
        at=utc_now(),
        occasion=occasion,
    )


def regular_gift_json(regular: RegularGift) -> dict[str, Any]:
    """A regular gift for staff and the JSON API."""
    return {
        "id": str(regular.id),
        "supporter_id": str(regular.supporter_id),
        "amount": Money(regular.amount, Currency(regular.currency)).to_json(),
        "interval": regular.interval,
        "provider": str(regular.provider),
        "method": str(regular.method),
        "status": str(regular.status),
        "started_at": isoformat_z(regular.started_at) if regular.started_at else None,
        "ended_at": isoformat_z(regular.ended_at) if regular.ended_at else None,
        "cancel_requested_at": isoformat_z(regular.cancel_requested_at) if regular.cancel_requested_at else None,
        "cancel_requested_by": regular.cancel_requested_by,
        "provider_ids": _regular_ids(regular),
    }


def cancel_regular_gift(
    uow: UnitOfWork,
    regular_gift_id: uuid.UUID,
    *,
    stripe: Callable[[], StripeGateway],
    gocardless: Callable[[], GoCardlessGateway],
    end_mandate: bool = False,
) -> str:
    """The job: cancel the subscription at the provider (a GoCardless mandate with no subscription yet: the
    mandate) and record the end at once, not waiting for the webhook, which then changes nothing. When the provider
    refuses because the gift had already ended there (the donor cancelled it themselves), what the provider says
    is recorded, as its webhook would. With `end_mandate` (an erasure), the GoCardless mandate is cancelled as well,
    even when the gift had ended already (one already ended at GoCardless is fine)."""
    regular = repository.first_locked(uow.session, repository.by_key(RegularGift, "id", regular_gift_id))
    if regular is None:
        return "already ended"
    mandate_id = regular.gocardless_mandate_id if regular.provider == Provider.GOCARDLESS else None
    if regular.status in _TERMINAL_REGULAR:
        # Ended meanwhile (the provider's webhook, or an earlier run): an erasure's mandate must still go.
        if end_mandate and mandate_id:
            _end_mandate(gocardless(), mandate_id)
        return "already ended"
    outcome = _cancel_at_provider(uow, regular, stripe=stripe, gocardless=gocardless)
    if end_mandate and mandate_id and regular.gocardless_subscription_id:
        # After the subscription (so the end recorded is ours); a failure here rolls both back, and the retry finds
        # the subscription cancelled at GoCardless (or the gift ended by its webhook, above) and ends the mandate.
        _end_mandate(gocardless(), mandate_id)
    return outcome


def _cancel_at_provider(
    uow: UnitOfWork,
    regular: RegularGift,
    *,
    stripe: Callable[[], StripeGateway],
    gocardless: Callable[[], GoCardlessGateway],
) -> str:
    reason = f"cancelled in Giving ({regular.cancel_requested_by or 'staff'})"
    now = utc_now()
    if regular.provider == Provider.STRIPE and regular.stripe_subscription_id:
        gateway = stripe()
        try:
            subscription = gateway.cancel_subscription(regular.stripe_subscription_id, comment=reason)
            ours = True
        except ProviderRefused:
            subscription = gateway.retrieve_subscription(regular.stripe_subscription_id)
            # Our own cancel whose answer was lost (the SDK's retry, or this job's, was refused as already
            # cancelled) still carries our comment: it is ours, not the donor's.
            details = subscription.get("cancellation_details") or {}
            ours = subscription.get("status") == "canceled" and details.get("comment") == reason
        if ours:
            ended = _when(subscription.get("ended_at")) or _when(subscription.get("canceled_at")) or now
            _set_regular_status(uow, regular, RegularGiftStatus.CANCELLED, at=ended, reason=reason)
        else:
            _apply_stripe_subscription(uow, regular, subscription, at=now)
    elif regular.provider == Provider.GOCARDLESS and regular.gocardless_subscription_id:
        gateway_gc = gocardless()
        try:
            gateway_gc.cancel_subscription(regular.gocardless_subscription_id)
        except ProviderRefused:
            subscription = gateway_gc.get_subscription(regular.gocardless_subscription_id)
            _apply_gocardless_subscription(uow, regular, subscription, at=now)
        else:
            _set_regular_status(uow, regular, RegularGiftStatus.CANCELLED, at=now, reason=reason)
    elif regular.provider == Provider.GOCARDLESS and regular.gocardless_mandate_id:
        gateway_gc = gocardless()
        try:
            gateway_gc.cancel_mandate(regular.gocardless_mandate_id)
        except ProviderRefused:
            mandate = gateway_gc.get_mandate(regular.gocardless_mandate_id)
            if mandate.get("status") in _MANDATE_ENDED:
                _set_regular_status(
                    uow, regular, RegularGiftStatus.CANCELLED, at=now, reason=f"mandate {mandate['status']}"
                )
        else:
            _set_regular_status(uow, regular, RegularGiftStatus.CANCELLED, at=now, reason=reason)
    else:
        # Nothing was set up at the provider yet (the donor never finished checkout): nothing there to stop.
        _set_regular_status(uow, regular, RegularGiftStatus.CANCELLED, at=now, reason=reason)
    if regular.status not in _TERMINAL_REGULAR:
        # Refused, and the provider still takes payments: a person must look (the job's failure says why).
        raise RegularGiftStillLive(f"{regular.provider} refused to cancel and still has it as {regular.status}")
    return str(regular.status)


def _end_mandate(gateway: GoCardlessGateway, mandate_id: str) -> dict[str, Any]:
    """Cancel a GoCardless mandate; one that has ended already (cancelled, expired, failed...) is fine. Refused and
    still live: a person must look. Returns the mandate as GoCardless has it now."""
    try:
        return gateway.cancel_mandate(mandate_id)
    except ProviderRefused:
        mandate = gateway.get_mandate(mandate_id)
        status = mandate.get("status")
        if status not in _MANDATE_ENDED:
            raise RegularGiftStillLive(f"GoCardless refused to cancel mandate {mandate_id}, still {status}") from None
        return mandate


END_AT_PROVIDERS = "payments.end_at_providers"
PROVIDER_RECORDS_REMOVED = "provider_records_removed"
PROVIDER_RECORDS_KEPT = "provider_records_kept"


def ask_providers_to_forget(
    uow: UnitOfWork, supporter_ids: Sequence[uuid.UUID], *, mandate_ids: Sequence[str] = ()
) -> bool:
    """An erasure (or a checkout of an erased supporter completed after it): the durable job `END_AT_PROVIDERS`
    (written in this transaction) ends every mandate we know for these records and then removes their customers
    at Stripe and GoCardless. `mandate_ids`: mandates no row of ours names (a one-off Direct Debit set up after
    the erasure, on which no payment was taken). Nothing to ask (no provider record known): no job; returns
    whether one was sent."""
    mandates, stripe_customers, gocardless_customers = repository.provider_records(uow.session, supporter_ids)
    if not (mandates or stripe_customers or gocardless_customers or mandate_ids):
        return False
    uow.enqueue(
        END_AT_PROVIDERS,
        supporter_ids=[str(i) for i in supporter_ids],
        mandate_ids=sorted(set(mandate_ids)),
    )
    return True


def end_at_providers(
    uow: UnitOfWork,
    supporter_ids: Sequence[uuid.UUID],
    *,
    stripe: Callable[[], StripeGateway],
    gocardless: Callable[[], GoCardlessGateway],
    mandate_ids: Sequence[str] = (),
) -> str:
    """The job: stop every way money could still be taken from these (erased) records, then remove what the
    providers hold about the person on our behalf. In order: their regular gifts still running are cancelled (as
    `cancel_regular_gift` does for an erasure: subscription, then mandate); every GoCardless mandate we know
    (one-off gifts' and ended gifts' too) is cancelled, one already ended is fine; then their customers are
    removed, Stripe `DELETE /v1/customers/{id}` (cards detached) and GoCardless `DELETE /customers/{id}` (its
    personal data; GoCardless refuses while a mandate is active, hence the order). A customer removed already is
    fine. The ids stay in our books (the accounts need them). The outcome is a `provider_records_removed` history
    item with the ids only. Run again: the same end, nothing asked twice that matters."""
    session = uow.session
    for regular in open_regular_gifts(session, supporter_ids):
        cancel_regular_gift(uow, regular.id, stripe=stripe, gocardless=gocardless, end_mandate=True)
    mandates, stripe_customers, gocardless_customers = repository.provider_records(session, supporter_ids)
    customers = set(gocardless_customers)
    for mandate_id in sorted({*mandates, *mandate_ids}):
        # Read first: one ended already (by the regular gift's own cancellation job, the bank, its expiry) is done,
        # and asked nothing more.
        mandate = gocardless().get_mandate(mandate_id)
        if mandate.get("status") not in _MANDATE_ENDED:
            mandate = _end_mandate(gocardless(), mandate_id)
        customer_id = (mandate.get("links") or {}).get("customer")
        if customer_id:
            customers.add(str(customer_id))
    removed = [customer_id for customer_id in stripe_customers if stripe().delete_customer(customer_id)]
    removed += [customer_id for customer_id in sorted(customers) if gocardless().remove_customer(customer_id)]
    ids = sorted({*mandates, *mandate_ids, *stripe_customers, *customers})
    record_history(
        uow,
        supporter_ids[0],
        type=PROVIDER_RECORDS_REMOVED,
        summary=(
            f"Erasure at the providers: {len({*mandates, *mandate_ids})} Direct Debit "
            f"mandate(s) ended, {len(stripe_customers)} Stripe and {len(customers)} GoCardless customer(s) removed"
        ),
        data={"provider_ids": ids},
        dedupe_key=f"{PROVIDER_RECORDS_REMOVED}:{supporter_ids[0]}:{','.join(ids)}"[:255],
    )
    return f"{len(ids)} provider records ended or removed ({len(removed)} removed now)"


def provider_erasure_given_up(uow: UnitOfWork, supporter_ids: Sequence[uuid.UUID], error: str) -> None:
    """`END_AT_PROVIDERS` failed for good (a provider refused, or is switched off): a review item on the erased
    record (no personal data: the provider's answer) asks a person to end the mandates or remove the customers
    by hand, and the history says it was not done."""
    reason = error.splitlines()[-1][:300] if error else "no reason given"
    raise_review_item(
        uow,
        supporter_ids[0],
        kind=PROVIDER_RECORDS_KEPT,
        detail=(
            "The erasure could not end this supporter's Direct Debit mandates or remove their customer records at "
            f"Stripe or GoCardless: {reason}. End them in the provider's dashboard."
        ),
        data={"supporter_ids": [str(i) for i in supporter_ids]},
        dedupe_key=f"{PROVIDER_RECORDS_KEPT}:{supporter_ids[0]}:{utc_now().isoformat(timespec='microseconds')}",
    )
    record_history(
        uow,
        supporter_ids[0],
        type=PROVIDER_RECORDS_KEPT,
        summary=f"Erasure at the providers not done: {reason}",
    )


# --- Stripe: refunds and disputes ---------------------------------------------------------------------------------

_STRIPE_REFUND_STATUS = {
    "succeeded": RefundStatus.SUCCEEDED,
    "pending": RefundStatus.PENDING,
    "requires_action": RefundStatus.PENDING,
    "failed": RefundStatus.FAILED,
    "canceled": RefundStatus.CANCELLED,
}


def _stripe_targets(
    uow: UnitOfWork, intent_id: str | None, charge_id: str | None
) -> tuple[Order | None, Gift | None, str | None]:
    """The order and/or gift a charge paid for (order first: the lock order), or the key to wait for."""
    session = uow.session
    order = repository.order_for_stripe_payment(session, intent_id, charge_id)
    if order is not None:
        gift = repository.gift_for_order(session, order.id)
    else:
        # A basket's donation line carries the basket's payment intent and charge too. If the checkout's completion
        # committed between the order's read and the gift's (each statement sees what was committed when it began),
        # the gift alone is found: a refund on the basket would be allocated as if on a plain gift. Such a gift
        # leads back to its order; its row lock, taken in a savepoint, is let go first, so that the order is
        # locked before the gift (the lock order) and no deadlock can come of it.
        savepoint = session.begin_nested()
        gift = repository.gift_for_stripe_payment(session, intent_id, charge_id)
        basket_id = gift.order_id if gift is not None else None
        if basket_id is None:
            savepoint.commit()
        else:
            savepoint.rollback()
            order = repository.order_locked(session, basket_id)
            gift = repository.gift_for_order(session, basket_id)
    if order is None and gift is None:
        key = f"stripe_payment_intent:{intent_id}" if intent_id else f"stripe_charge:{charge_id}"
        return None, None, key
    for record in (order, gift):
        if record is not None and charge_id and record.stripe_charge_id is None:
            _set(record, stripe_charge_id=charge_id)
            uow.session.add(record)
    return order, gift, None


def sync_stripe_refunds(
    uow: UnitOfWork, stripe: StripeGateway, *, charge_id: str | None, payment_intent_id: str | None
) -> Effect:
    """`charge.refunded`, `refund.*`: every refund of the charge as Stripe lists it now, keyed by refund id."""
    order, gift, wait = _stripe_targets(uow, payment_intent_id, charge_id)
    if wait is not None:
        return Effect.waiting(wait)
    charge_id = charge_id or (order.stripe_charge_id if order else None) or (gift.stripe_charge_id if gift else None)
    if charge_id is None:
        return Effect.ignored("no charge to list refunds of")
    supporter_id = order.supporter_id if order is not None else gift.supporter_id  # type: ignore[union-attr]
    newly_succeeded: list[Refund] = []
    undone: list[Refund] = []
    for listed in sorted(stripe.list_refunds(charge_id), key=lambda r: (r.get("created") or 0, r.get("id") or "")):
        refund_id = _id(listed.get("id"))
        if refund_id is None:
            continue
        status = _STRIPE_REFUND_STATUS.get(str(listed.get("status")), RefundStatus.PENDING)
        refund, was = _refund_row(
            uow,
            "stripe_refund_id",
            refund_id,
            _stripe_refund_builder(listed, refund_id, supporter_id, gift, order, charge_id),
        )
        _set(refund, status=status, amount=int(listed.get("amount") or refund.amount))
        uow.session.add(refund)
        if status == RefundStatus.SUCCEEDED and was != RefundStatus.SUCCEEDED:
            newly_succeeded.append(refund)
        elif was == RefundStatus.SUCCEEDED and status != RefundStatus.SUCCEEDED:
            undone.append(refund)
    uow.session.flush()
    reallocated = _recompute_returns(uow, order, gift)
    for refund in newly_succeeded:
        _refund_recorded(uow, refund, order, gift, [charge_id, payment_intent_id])
    new_ids = {r.id for r in newly_succeeded}
    _refunds_reallocated(uow, _changed_refunds(reallocated, undone, exclude=new_ids), order, gift)
    return Effect.processed(*(f"stripe_refund:{r.stripe_refund_id}" for r in newly_succeeded))


def _stripe_refund_builder(
    listed: dict[str, Any],
    refund_id: str,
    supporter_id: uuid.UUID,
    gift: Gift | None,
    order: Order | None,
    charge_id: str | None,
) -> Callable[[], Refund]:
    def build() -> Refund:
        now = utc_now()
        return Refund(
            supporter_id=supporter_id,
            gift_id=gift.id if gift else None,
            order_id=order.id if order else None,
            amount=int(listed.get("amount") or 0),
            currency=str(listed.get("currency") or "gbp").upper(),
            provider=Provider.STRIPE,
            reason=str(listed.get("reason") or "")[:200],
            refunded_at=_when(listed.get("created")),
            stripe_refund_id=refund_id,
            stripe_charge_id=charge_id,
            created_at=now,
            updated_at=now,
        )

    return build


def _refund_row(
    uow: UnitOfWork, column: str, key: str, build: Callable[[], Refund]
) -> tuple[Refund, RefundStatus | None]:
    """The refund row and its status before this event (None when it is new)."""
    session = uow.session
    refund = repository.first_locked(session, repository.by_key(Refund, column, key))
    if refund is not None:
        return refund, refund.status
    repository.insert_once(session, build())
    refund = repository.first_locked(session, repository.by_key(Refund, column, key))
    assert refund is not None
    return refund, None


def _refund_item(
    refund: Refund, order: Order | None, gift: Gift | None, other_ids: list[str | None]
) -> tuple[str, dict[str, Any]]:
    """The summary and data of a refund's history item, with the refund's allocation as it stands."""
    provider_ids = [
        value
        for value in [refund.stripe_refund_id, refund.gocardless_refund_id, *other_ids, refund.gocardless_payment_id]
        if value
    ]
    data: dict[str, Any] = {"refund_id": str(refund.id), "provider_ids": list(dict.fromkeys(provider_ids))}
    if gift is not None:
        data["gift_id"] = str(gift.id)
    if order is not None:
        data["order_id"] = str(order.id)
    data["allocation"] = {"gift": refund.gift_amount, "order": refund.order_amount}
    summary = f"Refund of {format_pence(refund.amount, refund.currency)}" + (
        f" ({refund.reason.replace('_', ' ')})" if refund.reason else ""
    )
    if refund.status in (RefundStatus.FAILED, RefundStatus.CANCELLED):
        # After it succeeded: the money did not reach the donor and is ours again.
        summary += f" {refund.status}: the money came back"
        data["status"] = str(refund.status)
    return summary, data


def _was_paid(order: Order | None, gift: Gift | None) -> bool:
    return (gift is not None and gift.received_at is not None) or (order is not None and order.paid_at is not None)


def _refund_recorded(
    uow: UnitOfWork, refund: Refund, order: Order | None, gift: Gift | None, other_ids: list[str | None]
) -> None:
    summary, data = _refund_item(refund, order, gift, other_ids)
    record_history(
        uow,
        refund.supporter_id,
        type="refund",
        summary=summary,
        at=refund.refunded_at,
        amount=refund.amount,
        currency=refund.currency,
        data=data,
        dedupe_key=f"refund:{refund.id}",
    )
    if _was_paid(order, gift):
        uow.enqueue(RECEIPT_CORRECTION, refund_id=str(refund.id))
    payouts.on_money_recorded(uow, data["provider_ids"])


def _changed_refunds(reallocated: list[Refund], undone: list[Refund], *, exclude: set[uuid.UUID]) -> list[Refund]:
    """Refunds recorded earlier that this event changed: re-allocated, or no longer succeeded (failed after
    succeeding: the money came back to us), each once."""
    changed = {r.id: r for r in [*reallocated, *undone] if r.id not in exclude}
    return list(changed.values())


def _refunds_reallocated(uow: UnitOfWork, refunds: list[Refund], order: Order | None, gift: Gift | None) -> None:
    """Refunds recorded earlier whose allocation the rule has just changed (an older refund succeeded later, a
    dispute was lost) or that failed after succeeding: their history item says the new split or the failure, and
    the correction job runs again, so the part the refund now comes off (the donation line, the goods) gets its
    corrected receipt, and a receipt or correction that showed money returned that was not gets a further one.
    `receipts.issue_correction` issues nothing for a part whose documents already say what stands."""
    if not refunds:
        return
    target = order if order is not None else gift
    payment_ids = [target.stripe_charge_id, target.stripe_payment_intent_id] if target is not None else []
    for refund in refunds:
        summary, data = _refund_item(refund, order, gift, [refund.stripe_charge_id, *payment_ids])
        revise_history(uow, f"refund:{refund.id}", summary=summary, data=data)
        if _was_paid(order, gift):
            uow.enqueue(RECEIPT_CORRECTION, refund_id=str(refund.id))


def _recompute_returns(uow: UnitOfWork, order: Order | None, gift: Gift | None) -> list[Refund]:
    """What was returned of a gift and of a basket's goods, from every succeeded refund and lost dispute.

    Computed afresh each time (not added per event), so duplicates and any order of events give one answer.
    A basket's refunds come off the goods first (payments/shop.py); staff re-allocations are kept as made. The
    order's partner shares follow the shirts still kept (none once its goods are refunded in full).

    Returns the succeeded refunds whose allocation (`order_amount`, `gift_amount`) this changed.
    """
    session = uow.session
    refunds = [r for r in repository.refunds_of(session, gift, order) if r.status == RefundStatus.SUCCEEDED]
    lost = repository.lost_disputes_of(session, gift, order)
    before = {r.id: (r.order_amount, r.gift_amount) for r in refunds}
    if order is not None:
        shelved_before = shop.shelved(order)
        staff = [r for r in refunds if r.allocated_by != "rule"]
        by_rule = [r for r in refunds if r.allocated_by == "rule"]
        goods_taken = sum(r.order_amount for r in staff)
        gift_part = sum(r.gift_amount for r in staff)
        goods_total = order.goods_amount + order.vat_amount
        parts = shop.split_returns(
            goods_total, [r.amount for r in by_rule] + [d.amount for d in lost], goods_taken=goods_taken
        )
        for refund, (goods, donation) in zip(by_rule, parts, strict=False):
            _set(refund, order_amount=goods, gift_amount=donation)
            session.add(refund)
        goods_returned = goods_taken + sum(goods for goods, _ in parts)
        gift_part += sum(donation for _, donation in parts)
        _set(order, refunded_amount=min(goods_returned, goods_total))
        if order.status in repository.PURCHASED:
            donation_total = gift.amount if gift is not None else order.donation_amount
            if goods_returned <= 0 and gift_part <= 0:
                status = OrderStatus.PAID
            elif goods_returned >= goods_total and gift_part >= donation_total:
                status = OrderStatus.REFUNDED
            else:
                status = OrderStatus.PARTIALLY_REFUNDED
            _set(order, status=status)
        session.add(order)
        shop.recompute_partner_shares(session, order)
        shop.restock_if_refunded_unposted(uow, order, shelved_before=shelved_before)
    else:
        for refund in refunds:
            _set(refund, gift_amount=refund.amount, order_amount=0)
            session.add(refund)
        gift_part = sum(r.amount for r in refunds) + sum(d.amount for d in lost)
    if gift is not None:
        _set(gift, returned_amount=min(gift_part, gift.amount))
        session.add(gift)
    return [r for r in refunds if before[r.id] != (r.order_amount, r.gift_amount)]


_STRIPE_DISPUTE_STATUS = {
    "won": DisputeStatus.WON,
    "warning_closed": DisputeStatus.WON,
    "lost": DisputeStatus.LOST,
    # Dispute prevention (Stripe API 2025-08-27 on): stopped before it became a chargeback. Case type `block`: the
    # money stays with us; `resolution`: Stripe refunds the charge, and that refund is recorded as any refund
    # (`sync_stripe_refunds`), so the dispute itself never counts as money returned.
    "prevented": DisputeStatus.PREVENTED,
}

_PREVENTED_HOW = {
    "block": "blocked before it became a chargeback",
    "resolution": "resolved by a refund",
}


def _dispute_outcome(dispute: Dispute, current: dict[str, Any]) -> str:
    """The closing history item's words: "lost", "won", or "prevented (how)"."""
    if dispute.status != DisputeStatus.PREVENTED:
        return str(dispute.status)
    details = current.get("payment_method_details")
    card = details.get("card") if isinstance(details, dict) else None
    how = _PREVENTED_HOW.get(str(card.get("case_type"))) if isinstance(card, dict) else None
    return f"prevented ({how})" if how else "prevented"


# The events that close a dispute (or open one already decided): only they write the closing history item. A later
# event about a closed dispute (`charge.dispute.updated`, `funds_reinstated`) also shows the decision, and sets
# `closed_at` when it is processed first, but is no time for the decision: the item waits for a closing event. Of
# several closing events, the earliest dates it (`revise_history(at=)` only ever moves an item earlier).
CLOSING_DISPUTE_EVENTS = frozenset({"charge.dispute.closed", "charge.dispute.created"})


def sync_stripe_dispute(
    uow: UnitOfWork,
    stripe: StripeGateway,
    dispute_object: dict[str, Any],
    *,
    at: dt.datetime,
    event_type: str = "charge.dispute.closed",
) -> Effect:
    """`charge.dispute.*`: the dispute as Stripe has it now; a lost one reduces what the supporter gave."""
    dispute_id = _id(dispute_object.get("id"))
    if dispute_id is None:
        return Effect.ignored("a dispute without an id")
    current = stripe.retrieve_dispute(dispute_id)
    intent_id, charge_id = _id(current.get("payment_intent")), _id(current.get("charge"))
    order, gift, wait = _stripe_targets(uow, intent_id, charge_id)
    if wait is not None:
        return Effect.waiting(wait)
    supporter_id = order.supporter_id if order is not None else gift.supporter_id  # type: ignore[union-attr]
    session = uow.session
    dispute = repository.first_locked(session, repository.by_key(Dispute, "stripe_dispute_id", dispute_id))
    created = False
    if dispute is None:
        now = utc_now()
        created = repository.insert_once(
            session,
            Dispute(
                supporter_id=supporter_id,
                gift_id=gift.id if gift else None,
                order_id=order.id if order else None,
                kind="dispute",
                amount=int(current.get("amount") or 0),
                currency=str(current.get("currency") or "gbp").upper(),
                reason=str(current.get("reason") or "")[:200],
                provider=Provider.STRIPE,
                opened_at=_when(current.get("created")) or at,
                stripe_dispute_id=dispute_id,
                stripe_charge_id=charge_id,
                created_at=now,
                updated_at=now,
            ),
        )
        dispute = repository.first_locked(session, repository.by_key(Dispute, "stripe_dispute_id", dispute_id))
        assert dispute is not None
    # Any other status is still being decided (needs_response, under_review, warning_*, an appeal's appeal_*): an
    # open dispute stays open and a lost one lost. A decided one follows Stripe, so a lost dispute won on appeal
    # gives the gift back.
    status = _STRIPE_DISPUTE_STATUS.get(str(current.get("status")))
    withdrawn = any(
        isinstance(bt, dict) and (bt.get("reporting_category") == "dispute" or (bt.get("amount") or 0) < 0)
        for bt in current.get("balance_transactions") or []
    )
    # When it was decided: Stripe's dispute keeps no time for that, so it is the `created` of the earliest event
    # whose own snapshot shows the decision (`charge.dispute.closed`, or a dispute created already decided). An
    # event from before the decision, processed after it (late, redelivered), re-fetches the decided dispute but
    # says nothing of when: the status follows Stripe at once, the time waits for the reporting event.
    reported = status is not None and _STRIPE_DISPUTE_STATUS.get(str(dispute_object.get("status"))) == status
    closing = event_type in CLOSING_DISPUTE_EVENTS
    before = dispute.status
    if status is not None and status != before:
        _set(dispute, status=status, closed_at=at if reported else None)
    elif reported and (dispute.closed_at is None or at < dispute.closed_at):
        _set(dispute, closed_at=at)
    _set(dispute, funds_withdrawn=dispute.funds_withdrawn or withdrawn)
    session.add(dispute)
    session.flush()
    ids = [value for value in (dispute_id, charge_id, intent_id) if value]
    data = {
        "dispute_id": str(dispute.id),
        "gift_id": str(gift.id) if gift else None,
        "order_id": str(order.id) if order else None,
        "provider_ids": ids,
    }
    money = format_pence(dispute.amount, dispute.currency)
    record_history(
        uow,
        supporter_id,
        type="dispute",
        summary=f"Card dispute of {money} opened ({dispute.reason.replace('_', ' ') or 'no reason given'})",
        at=dispute.opened_at,
        amount=dispute.amount,
        currency=dispute.currency,
        data={**data, "status": "open"},
        dedupe_key=f"dispute:{dispute.id}:opened",
    )
    if dispute.status != DisputeStatus.OPEN and dispute.closed_at is not None and reported and closing:
        # Written by the closing event that reports the decision, dated `closed_at`. Two closing events of one
        # decision (`closed` sent twice, or `created` already decided) may come latest first: the earlier one,
        # processed second, moves the item back to its own time, as it moved `closed_at`.
        summary = f"Card dispute of {money} {_dispute_outcome(dispute, current)}"
        closing_data = {**data, "status": str(dispute.status)}
        closing_key = f"dispute:{dispute.id}:{dispute.status!s}"
        if not record_history(
            uow,
            supporter_id,
            type="dispute",
            summary=summary,
            at=dispute.closed_at,
            amount=-dispute.amount if dispute.status == DisputeStatus.LOST else 0,
            currency=dispute.currency,
            data=closing_data,
            dedupe_key=closing_key,
        ):
            revise_history(uow, closing_key, summary=summary, data=closing_data, at=dispute.closed_at)
    _refunds_reallocated(uow, _recompute_returns(uow, order, gift), order, gift)
    if created or before != dispute.status:
        payouts.on_money_recorded(uow, ids)
    return Effect.processed(f"stripe_dispute:{dispute_id}")


# --- GoCardless ---------------------------------------------------------------------------------------------------

_GC_REGULAR_STATUS = {
    "active": RegularGiftStatus.ACTIVE,
    "paused": RegularGiftStatus.PAUSED,
    "cancelled": RegularGiftStatus.CANCELLED,
    "customer_approval_denied": RegularGiftStatus.CANCELLED,
    "finished": RegularGiftStatus.FINISHED,
    "pending_customer_approval": RegularGiftStatus.PENDING,
}


def end_gocardless_billing_request(uow: UnitOfWork, gocardless: GoCardlessGateway, billing_request_id: str) -> Effect:
    """`billing_requests.cancelled` / `.failed`: the donor's Direct Debit set-up will never be fulfilled, so its
    checkout expires (as `checkout.session.expired` does for a card). The request is re-fetched: one fulfilled after
    all is left to `billing_requests.fulfilled`."""
    request = gocardless.get_billing_request(billing_request_id)
    if request.get("status") not in ("cancelled", "failed"):
        return Effect.processed(note=f"the billing request is {request.get('status')} now")
    checkout = repository.checkout_locked(
        uow.session,
        _uuid((request.get("metadata") or {}).get("checkout_id")),
        gocardless_billing_request_id=billing_request_id,
    )
    if checkout is None:
        return Effect.ignored("not one of our billing requests")
    if checkout.status in (CheckoutStatus.PENDING, CheckoutStatus.OPEN):
        _set(checkout, status=CheckoutStatus.EXPIRED)
        uow.session.add(checkout)
    return Effect.processed()


def record_gocardless_billing_request(
    uow: UnitOfWork, gocardless: GoCardlessGateway, billing_request_id: str, *, at: dt.datetime
) -> Effect:
    """`billing_requests.fulfilled`: link the supporter to the customer and mandate; start the gift.

    A monthly gift's subscription comes from the billing request's subscription request, or is created here with an
    idempotency key derived from our checkout id (so a redelivered event finds the same subscription). A one-off
    Direct Debit gift is one payment on the new mandate, created the same way.
    """
    request = gocardless.get_billing_request(billing_request_id)
    links = request.get("links") or {}
    metadata = request.get("metadata") or {}
    checkout = repository.checkout_locked(
        uow.session, _uuid(metadata.get("checkout_id")), gocardless_billing_request_id=billing_request_id
    )
    if checkout is None:
        return Effect.ignored("not one of our billing requests")
    mandate_id, customer_id = links.get("mandate_request_mandate"), links.get("customer")
    if not mandate_id:
        return Effect.ignored("the billing request set up no mandate")
    closed = checkout.status == CheckoutStatus.CANCELLED
    if closed and checkout.frequency != Frequency.MONTHLY:
        # No money moves until we create the payment: none is taken from a supporter whose data was erased. The
        # mandate the donor set up (no row of ours names it) is cancelled, and their customer removed, by the job.
        ask_providers_to_forget(uow, [checkout.supporter_id], mandate_ids=[str(mandate_id)])
        return Effect.processed(note="the checkout was closed (the supporter's data was erased): no payment taken")
    _set(
        checkout,
        gocardless_billing_request_id=checkout.gocardless_billing_request_id or billing_request_id,
        status=CheckoutStatus.COMPLETED,
        completed_at=checkout.completed_at or at,
    )
    uow.session.add(checkout)
    keys = [f"gocardless_mandate:{mandate_id}"]
    if checkout.frequency == Frequency.MONTHLY:
        # A replay (a redelivery days later, `giving events replay`) finds the subscription this checkout started
        # rather than asking GoCardless again: an idempotency key is not kept for ever, a second plan would be.
        subscription_id = links.get("subscription_request_subscription") or repository.gocardless_id_of_checkout(
            uow.session, RegularGift, "gocardless_subscription_id", checkout.id
        )
        if subscription_id:
            subscription = gocardless.get_subscription(subscription_id)
        else:
            subscription = gocardless.create_subscription(
                {
                    "amount": checkout.amount,
                    "currency": checkout.currency,
                    "interval_unit": "monthly",
                    "name": MONTHLY_LINE_NAME,  # as the donor saw it on the form, and Stripe's line says
                    "links": {"mandate": mandate_id},
                    "metadata": {"checkout_id": str(checkout.id), "supporter_id": str(checkout.supporter_id)},
                },
                idempotency_key=f"checkout:{checkout.id}:subscription",
            )
            subscription_id = subscription["id"]

        def build() -> RegularGift:
            now = utc_now()
            return RegularGift(
                supporter_id=checkout.supporter_id,
                amount=int(subscription.get("amount") or checkout.amount),
                currency=str(subscription.get("currency") or checkout.currency).upper(),
                provider=Provider.GOCARDLESS,
                method=Method.DIRECT_DEBIT,
                appeal=checkout.appeal,
                declaration_id=checkout.declaration_id,
                checkout_id=checkout.id,
                donor=checkout.donor,
                gocardless_mandate_id=mandate_id,
                gocardless_subscription_id=subscription_id,
                gocardless_customer_id=customer_id,
                created_at=now,
                updated_at=now,
            )

        regular, _ = _regular_or_insert(uow, "gocardless_subscription_id", str(subscription_id), build)
        _apply_gocardless_subscription(uow, regular, subscription, at=at)
        _stop_if_started_by_closed_checkout(uow, regular, closed=closed)
        keys.append(f"gocardless_subscription:{subscription_id}")
        return Effect.processed(*keys)
    taken = repository.gocardless_id_of_checkout(uow.session, Gift, "gocardless_payment_id", checkout.id)
    if taken is not None:
        # Its payment is recorded: a replay takes no second one (whatever GoCardless remembers of the key).
        keys.append(f"gocardless_payment:{taken}")
        return Effect.processed(*keys)
    payment = gocardless.create_payment(
        {
            "amount": checkout.amount,
            "currency": checkout.currency,
            "description": "Gift",
            "links": {"mandate": mandate_id},
            "metadata": {"checkout_id": str(checkout.id)},
        },
        idempotency_key=f"checkout:{checkout.id}:payment",
    )
    payment_id = str(payment["id"])

    def build_gift() -> Gift:
        return _gift_from_checkout(
            checkout,
            amount=int(payment.get("amount") or checkout.amount),
            gocardless_payment_id=payment_id,
            gocardless_mandate_id=mandate_id,
            due_on=_charge_day(payment.get("charge_date")),
        )

    _gift_or_insert(uow, "gocardless_payment_id", payment_id, build_gift)
    keys.append(f"gocardless_payment:{payment_id}")
    return Effect.processed(*keys)


def _apply_gocardless_subscription(
    uow: UnitOfWork, regular: RegularGift, subscription: dict[str, Any], *, at: dt.datetime
) -> None:
    _started_at_provider(uow, regular, _gc_time(subscription.get("created_at")))
    status = _GC_REGULAR_STATUS.get(str(subscription.get("status")), regular.status)
    amount = subscription.get("amount")
    if isinstance(amount, int) and amount > 0:
        _set(regular, amount=amount)
    upcoming = [_charge_day(p.get("charge_date")) for p in subscription.get("upcoming_payments") or []]
    # GoCardless lists only payments it has not created yet: one created and still unpaid is expected first.
    unsettled = _earliest_unsettled(repository.instalments(uow.session, regular.id), regular.last_paid_on)
    upcoming_days = [day for day in [*upcoming, unsettled] if day is not None]
    if upcoming_days:
        _set(regular, next_due_on=min(upcoming_days))
    uow.session.add(regular)
    if status == RegularGiftStatus.PENDING:
        return
    if regular.status == RegularGiftStatus.PAUSED and status == RegularGiftStatus.ACTIVE:
        regular.status = RegularGiftStatus.ACTIVE
        _touch(regular)
        _refresh_arrears(uow, regular)
        return
    _set_regular_status(uow, regular, status, at=at, reason=f"subscription {status.value}")


def sync_gocardless_subscription(
    uow: UnitOfWork, gocardless: GoCardlessGateway, subscription_id: str, *, at: dt.datetime
) -> Effect:
    """`subscriptions.*` (amended, paused, resumed, finished, cancelled, ...): mirror the subscription as it is now."""
    regular = repository.first_locked(
        uow.session, repository.by_key(RegularGift, "gocardless_subscription_id", subscription_id)
    )
    if regular is None:
        regular = _adopt_gocardless_subscription(uow, gocardless, subscription_id, at=at)
        if regular is None:
            return Effect.waiting(f"gocardless_subscription:{subscription_id}")
        return Effect.processed(f"gocardless_subscription:{subscription_id}")
    _apply_gocardless_subscription(uow, regular, gocardless.get_subscription(subscription_id), at=at)
    return Effect.processed()


def _known_mandate_owner(
    uow: UnitOfWork, gocardless: GoCardlessGateway, mandate_id: str
) -> tuple[uuid.UUID, str | None] | None:
    """(supporter, GoCardless customer) of a mandate one of our regular or one-off Direct Debit gifts is on, or
    that GoCardless replaced (`links.new_mandate`, followed as `sync_gocardless_mandate` does) by one our regular
    gifts moved to."""
    owner = _mandate_owner(uow.session, mandate_id)
    if owner is not None:
        return owner
    try:
        moved_to = _replacement_with_gifts(uow, gocardless, mandate_id, gocardless.get_mandate(mandate_id))
    except ProviderRefused:
        return None  # a mandate GoCardless does not show us (not ours): not a supporter we know; keep waiting
    return _mandate_owner(uow.session, moved_to) if moved_to is not None else None


def _mandate_owner(session: Session, mandate_id: str) -> tuple[uuid.UUID, str | None] | None:
    on_mandate = repository.regular_gifts_for_mandate(session, mandate_id)
    if on_mandate:
        return on_mandate[0].supporter_id, on_mandate[0].gocardless_customer_id
    one_off = session.exec(
        select(Gift.supporter_id).where(Gift.gocardless_mandate_id == mandate_id).order_by(col(Gift.created_at))
    ).first()
    return (one_off, None) if one_off is not None else None


def _adopt_gocardless_subscription(
    uow: UnitOfWork, gocardless: GoCardlessGateway, subscription_id: str, *, at: dt.datetime
) -> RegularGift | None:
    """A subscription staff set up in the GoCardless dashboard on the mandate of a supporter we know (a regular or
    one-off Direct Debit gift of theirs is on it): its payments are that supporter's gifts, so it becomes a regular
    gift of theirs rather than waiting a week for a checkout that will never come. None (keep waiting): the
    subscription is one our checkout made (its `billing_requests.fulfilled` records it) or its mandate is not ours."""
    subscription = gocardless.get_subscription(subscription_id)
    if (subscription.get("metadata") or {}).get("checkout_id"):
        return None
    mandate_id = (subscription.get("links") or {}).get("mandate")
    if not mandate_id:
        return None
    owner = _known_mandate_owner(uow, gocardless, str(mandate_id))
    if owner is None:
        return None
    supporter_id, customer_id = owner

    def build() -> RegularGift:
        now = utc_now()
        return RegularGift(
            supporter_id=supporter_id,
            amount=int(subscription.get("amount") or 0),
            currency=str(subscription.get("currency") or "GBP").upper(),
            provider=Provider.GOCARDLESS,
            method=Method.DIRECT_DEBIT,
            gocardless_mandate_id=str(mandate_id),
            gocardless_subscription_id=subscription_id,
            gocardless_customer_id=customer_id,
            created_at=now,
            updated_at=now,
        )

    regular, _ = _regular_or_insert(uow, "gocardless_subscription_id", subscription_id, build)
    _apply_gocardless_subscription(uow, regular, subscription, at=at)
    _stop_if_supporter_erased(uow, regular)
    return regular


_MANDATE_ENDED = {"cancelled", "failed", "expired", "consumed", "blocked"}


def sync_gocardless_mandate(
    uow: UnitOfWork,
    gocardless: GoCardlessGateway,
    mandate_id: str,
    *,
    action: str,
    links: dict[str, Any],
    details: dict[str, Any],
    at: dt.datetime,
) -> Effect:
    """`mandates.*`: cancelled, failed or expired ends the regular gifts on it; replaced or transferred moves them
    to the new mandate. The mandate is re-fetched, so a late `cancelled` after a reinstatement does nothing."""
    regulars = repository.regular_gifts_for_mandate(uow.session, mandate_id)
    if not regulars and repository.one_off_gift_on_mandate(uow.session, mandate_id):
        # A one-off gift's mandate (it expires 13 months after its payment): no regular gift to end or move, and
        # nothing will ever be recorded for it, so waiting would wait for ever.
        return Effect.ignored(f"mandate {action}: the mandate of a one-off gift, no regular gift on it")
    if action not in ("replaced", "transferred", *_MANDATE_ENDED):
        return Effect.processed() if regulars else Effect.ignored(f"mandate {action}: nothing to change")
    if not regulars:
        # Moved already: a late event of a mandate that was replaced (GoCardless cancels the old one; `replaced`
        # delivered again as an event of its own) concerns gifts now on its replacement, which the old mandate's
        # end does not end. Without this it waited a week for a gift that would never be on the old mandate.
        following = links.get("new_mandate") or gocardless.get_mandate(mandate_id)
        moved_to = _replacement_with_gifts(uow, gocardless, mandate_id, following)
        if moved_to is not None:
            return Effect.processed(note=f"mandate {action}: its regular gifts moved to mandate {moved_to}")
        return Effect.waiting(f"gocardless_mandate:{mandate_id}")
    if action in ("replaced", "transferred"):
        new_mandate = links.get("new_mandate") or (gocardless.get_mandate(mandate_id).get("links") or {}).get(
            "new_mandate"
        )
        if new_mandate and new_mandate != mandate_id:
            for regular in regulars:
                _set(regular, gocardless_mandate_id=new_mandate)
                uow.session.add(regular)
            # Events of the old mandate waiting meanwhile run again and find where its gifts went.
            return Effect.processed(f"gocardless_mandate:{new_mandate}", f"gocardless_mandate:{mandate_id}")
        return Effect.processed()
    mandate = gocardless.get_mandate(mandate_id)
    if mandate.get("status") not in _MANDATE_ENDED:
        return Effect.processed(note=f"the mandate is {mandate.get('status')} now")
    reason = str(details.get("description") or details.get("cause") or f"mandate {action}")
    code = details.get("reason_code")
    for regular in regulars:
        status, why = RegularGiftStatus.CANCELLED, f"{reason} ({code})" if code else reason
        # A subscription that had already finished stays finished at GoCardless when its mandate ends later: ask
        # it, so the order of the two events does not decide between finished and cancelled.
        if regular.gocardless_subscription_id:
            subscription = gocardless.get_subscription(regular.gocardless_subscription_id)
            if _GC_REGULAR_STATUS.get(str(subscription.get("status"))) == RegularGiftStatus.FINISHED:
                status, why = RegularGiftStatus.FINISHED, f"subscription {RegularGiftStatus.FINISHED.value}"
        if not _set_regular_status(uow, regular, status, at=at, reason=why) and status == RegularGiftStatus.CANCELLED:
            _restate_cancellation(uow, regular, why)
    return Effect.processed()


_REPLACEMENT_HOPS = 5


def _replacement_with_gifts(
    uow: UnitOfWork, gocardless: GoCardlessGateway, mandate_id: str, new: str | dict[str, Any]
) -> str | None:
    """The mandate that replaced `mandate_id` (GoCardless's `links.new_mandate`, followed through a few
    replacements) on which our regular gifts now are; None when it was not replaced or none of them is there."""
    seen = {mandate_id}
    for _ in range(_REPLACEMENT_HOPS):
        following = new if isinstance(new, str) else (new.get("links") or {}).get("new_mandate")
        if not following or following in seen:
            return None
        if repository.regular_gifts_for_mandate(uow.session, str(following)):
            return str(following)
        seen.add(str(following))
        new = gocardless.get_mandate(str(following))
    return None


_GC_PAID = {"confirmed", "paid_out"}
_GC_EVIDENCE_OF_PAYMENT = {
    "confirmed",
    "paid_out",
    "charged_back",
    "chargeback_cancelled",
    "chargeback_settled",
    "late_failure_settled",
}
# GoCardless resubmitting a failed payment (`will_attempt_retry`): the attempt failed, the payment goes on.
_GC_RETRYING = {"pending_submission", "submitted"}


def sync_gocardless_payment(
    uow: UnitOfWork,
    gocardless: GoCardlessGateway,
    payment_id: str,
    *,
    action: str,
    details: dict[str, Any],
    at: dt.datetime,
) -> Effect:
    """`payments.*`: the payment as GoCardless has it now decides the gift's state.

    confirmed / paid_out → paid at the charge date; failed before it was paid → failed (arrears for a regular gift);
    failed after it was paid (late failure) or charged_back → reversed; chargeback_cancelled → paid again.
    That it was paid once is known from the gift or from the event itself, so the order of arrival does not matter.
    late_failure_settled, chargeback_settled and surcharge_fee_debited are payout debits for reconciliation.
    """
    payment = gocardless.get_payment(payment_id)
    links = payment.get("links") or {}
    subscription_id, mandate_id = links.get("subscription"), links.get("mandate")
    session = uow.session
    regular = (
        repository.first_locked(session, repository.by_key(RegularGift, "gocardless_subscription_id", subscription_id))
        if subscription_id
        else None
    )
    adopted = False
    if regular is None and subscription_id:
        regular = _adopt_gocardless_subscription(uow, gocardless, str(subscription_id), at=at)
        adopted = regular is not None
    gift = repository.first_locked(session, repository.by_key(Gift, "gocardless_payment_id", payment_id))
    charge_day = _charge_day(payment.get("charge_date"))
    if gift is None and regular is None and not subscription_id:
        gift = _dashboard_gocardless_payment(uow, gocardless, payment, charge_day)
    if gift is None:
        if regular is None:
            return Effect.waiting(_gocardless_payment_waits_for(payment, subscription_id, mandate_id))
        owner = regular

        def build() -> Gift:
            now = utc_now()
            return Gift(
                supporter_id=owner.supporter_id,
                amount=int(payment.get("amount") or owner.amount),
                currency=str(payment.get("currency") or owner.currency).upper(),
                provider=Provider.GOCARDLESS,
                method=Method.DIRECT_DEBIT,
                appeal=owner.appeal,
                declaration_id=owner.declaration_id,
                donor=owner.donor,
                regular_gift_id=owner.id,
                due_on=charge_day,
                gocardless_payment_id=payment_id,
                gocardless_mandate_id=mandate_id,
                gocardless_subscription_id=subscription_id,
                created_at=now,
                updated_at=now,
            )

        gift, _ = _gift_or_insert(uow, "gocardless_payment_id", payment_id, build)
    if charge_day is not None and gift.due_on != charge_day:
        _set(gift, due_on=charge_day)
    status = str(payment.get("status"))
    received_at = _noon(charge_day) if charge_day else at
    # Paid once, whatever arrived first: the gift says so, the payment is paid now or was paid out (its payout link
    # stays after a late failure), or this event is itself a step only a paid payment takes.
    was_paid = (
        gift.received_at is not None
        or status in _GC_PAID
        or action in _GC_EVIDENCE_OF_PAYMENT
        or bool(links.get("payout"))
    )
    # The bank's cause and code come with the event of the failure or chargeback itself: another event processed
    # after it (`created`, `confirmed`, ...) sees the payment's state but not why, and leaves that to its own event.
    reason = str(details.get("description") or details.get("cause") or status)
    if details.get("reason_code"):
        reason = f"{reason} ({details['reason_code']})"
    retry = " (GoCardless will retry)" if details.get("will_attempt_retry") else ""
    # Each failed attempt is its own item, keyed by its event's time: a retry that failed again is not a repeat of
    # the first failure (whose item says GoCardless will retry), as each Stripe invoice attempt is its own.
    attempt = _gc_attempt_key(payment_id, at)
    if status in _GC_PAID:
        restored = gift.status == GiftStatus.REVERSED
        if restored:
            _restore_gift(uow, gift)
        else:
            _mark_gift_paid(uow, gift, received_at)
        if restored or action == "failed":
            _collected_after_all(uow, gift, charge_day, at, failed_before=action == "failed")
        if action == "chargeback_cancelled":
            # Dated by its own event, whichever event first saw the payment paid again.
            _chargeback_cancelled_at(uow, gift, at)
        if action == "failed":
            # An attempt that failed before the retry that paid: it happened whatever arrived first, so it is in the
            # history as it would be had this event come before the retry.
            _payment_failed_history(uow, gift, reason + retry, at, attempt)
    elif status == "charged_back" and action == "chargeback_cancelled" and gift.status == GiftStatus.REVERSED:
        # Cancelled, and charged back again since: the gift stays reversed, as GoCardless has it now.
        _chargeback_cancelled_late(uow, gift, at)
    elif status == "charged_back" and action == "charged_back":
        _reverse_gift(uow, gift, kind="chargeback", reason=reason, received_at=received_at, at=at)
    elif status == "failed" and action == "failed":
        if was_paid:
            _reverse_gift(uow, gift, kind="late_failure", reason=reason, received_at=received_at, at=at)
        elif _fail_gift(uow, gift, reason) or gift.status == GiftStatus.FAILED:
            if gift.failed_at is None or at > gift.failed_at:
                # The provider's time of the (latest) failure: dates a late failure found out later. Its reason is
                # the gift's (and so the plan's arrears'): a retry that failed again replaces the first's.
                _set(gift, failed_at=at, failure_reason=reason[:500])
            _payment_failed_history(uow, gift, reason + retry, at, attempt)
    elif status == "failed" and was_paid and gift.status == GiftStatus.FAILED:
        # Recorded as a plain failure before anything showed it had been paid: a late failure, with its bank reason,
        # dated by the failure's own event (kept on the gift), not by this one that proved the payment.
        _reverse_gift(
            uow,
            gift,
            kind="late_failure",
            reason=gift.failure_reason or status,
            received_at=received_at,
            at=gift.failed_at or at,
            # The latest failure's item (an item written before items were per attempt is keyed on the payment).
            replaces=(
                f"payment_failed:{_gc_attempt_key(payment_id, gift.failed_at or at)}",
                f"payment_failed:{payment_id}",
            ),
        )
    elif (
        status in ("failed", "charged_back") and action in _GC_EVIDENCE_OF_PAYMENT and gift.status == GiftStatus.PENDING
    ):
        # It was paid before it was taken back: recorded so now; the failure's or chargeback's own event reverses it
        # with the bank's reason, whichever of the two is processed first.
        _mark_gift_paid(uow, gift, received_at)
    elif status in _GC_RETRYING and action == "failed":
        # The attempt failed and GoCardless is trying again: the gift waits for the retry, the failure is history.
        _payment_failed_history(uow, gift, reason + retry, at, attempt)
    elif status in ("cancelled", "customer_approval_denied") and gift.status == GiftStatus.PENDING:
        _set(gift, status=GiftStatus.CANCELLED, failure_reason=reason[:500])
    session.add(gift)
    session.flush()
    if regular is None and gift.regular_gift_id is not None:
        regular = session.get(RegularGift, gift.regular_gift_id)
    if regular is not None:
        if gift.status == GiftStatus.CANCELLED and gift.due_on is not None:
            # A payment cancelled before collection (staff skipped the month, ...): GoCardless will not ask for that
            # month again, so it is no longer expected, as a voided Stripe invoice's is not.
            _closed_period(uow, regular, gift.due_on)
        _refresh_arrears(uow, regular)
    return Effect.processed(
        f"gocardless_payment:{payment_id}", f"gocardless_subscription:{subscription_id}" if adopted else None
    )


def _gc_attempt_key(payment_id: str, at: dt.datetime) -> str:
    """One failed attempt of a payment: the payment and its `failed` event's time."""
    return f"{payment_id}:{_gc_moment(at)}"


def _gc_moment(at: dt.datetime) -> str:
    """An event's time in a dedupe key."""
    return at.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _gocardless_payment_waits_for(payment: dict[str, Any], subscription_id: Any, mandate_id: Any) -> str:
    """What an unrecorded payment's event waits for: its subscription; or the payment itself, recorded by our
    checkout's `billing_requests.fulfilled` (its `checkout_id`); or, taken in the dashboard on a mandate not known
    yet, that mandate, which the billing request that set it up records (waiting for the payment itself, the event
    was woken by nothing and ran again only at the sweep's hourly look)."""
    if subscription_id:
        return f"gocardless_subscription:{subscription_id}"
    if mandate_id and not (payment.get("metadata") or {}).get("checkout_id"):
        return f"gocardless_mandate:{mandate_id}"
    return f"gocardless_payment:{payment['id']}"


def _dashboard_gocardless_payment(
    uow: UnitOfWork, gocardless: GoCardlessGateway, payment: dict[str, Any], charge_day: dt.date | None
) -> Gift | None:
    """A one-off payment staff took in the GoCardless dashboard on the mandate of a supporter we know: a gift of
    theirs. None (keep waiting): a payment our checkout made (its `checkout_id` metadata: `billing_requests.fulfilled`
    records it) or one on a mandate none of our gifts is on."""
    if (payment.get("metadata") or {}).get("checkout_id"):
        return None
    mandate_id = (payment.get("links") or {}).get("mandate")
    owner = _known_mandate_owner(uow, gocardless, str(mandate_id)) if mandate_id else None
    if owner is None:
        return None
    supporter_id, payment_id = owner[0], str(payment["id"])

    def build() -> Gift:
        now = utc_now()
        return Gift(
            supporter_id=supporter_id,
            amount=int(payment.get("amount") or 0),
            currency=str(payment.get("currency") or "GBP").upper(),
            provider=Provider.GOCARDLESS,
            method=Method.DIRECT_DEBIT,
            due_on=charge_day,
            gocardless_payment_id=payment_id,
            gocardless_mandate_id=str(mandate_id),
            created_at=now,
            updated_at=now,
        )

    gift, _ = _gift_or_insert(uow, "gocardless_payment_id", payment_id, build)
    return gift


def _reverse_gift(
    uow: UnitOfWork,
    gift: Gift,
    *,
    kind: str,
    reason: str,
    received_at: dt.datetime,
    at: dt.datetime,
    replaces: tuple[str, ...] = (),
) -> None:
    """A Direct Debit paid and then taken back by the bank (chargeback or late failure): the gift no longer counts.
    `replaces`: the history item of a plain failure this turns out to have been (the first of these keys there is),
    said again as the reversal."""
    session = uow.session
    if gift.received_at is None:
        # It was paid before it was taken back: the gift happened, and so did its reversal.
        gift.received_at = received_at
        gift.received_on = uk_date(received_at)
        session.add(gift)
        session.flush()
        _gift_history(uow, gift)
    payment_id = gift.gocardless_payment_id
    dispute = repository.first_locked(session, repository.by_key(Dispute, "gocardless_payment_id", payment_id))
    again = False
    if dispute is None:
        now = utc_now()
        repository.insert_once(
            session,
            Dispute(
                supporter_id=gift.supporter_id,
                gift_id=gift.id,
                kind=kind,
                amount=gift.amount,
                currency=gift.currency,
                status=DisputeStatus.LOST,
                reason=reason[:200],
                funds_withdrawn=True,
                provider=Provider.GOCARDLESS,
                opened_at=at,
                closed_at=at,
                gocardless_payment_id=payment_id,
                created_at=now,
                updated_at=now,
            ),
        )
        dispute = repository.first_locked(session, repository.by_key(Dispute, "gocardless_payment_id", payment_id))
        assert dispute is not None
    elif dispute.status != DisputeStatus.LOST:
        # Given back since (a chargeback cancelled, a late failure collected after all) and taken back again: a
        # reversal of its own, which the dispute now describes, with its own history item (keyed on its event).
        again = gift.status != GiftStatus.REVERSED
        _set(dispute, status=DisputeStatus.LOST, kind=kind, reason=reason[:200], closed_at=at)
        if again:
            _set(dispute, opened_at=at)
        session.add(dispute)
    elif (
        kind == dispute.kind == "chargeback"
        and gift.status == GiftStatus.REVERSED
        and dispute.opened_at is not None
        and at > dispute.opened_at
    ):
        # A later `charged_back` of a payment charged back already: GoCardless charges a payment back once per
        # chargeback, so the first was cancelled in between (its `chargeback_cancelled` not processed yet, or
        # processed when the payment was charged back again: `_chargeback_cancelled_late`). A reversal of its own.
        _set(dispute, kind=kind, reason=reason[:200], opened_at=at, closed_at=at)
        session.add(dispute)
        session.flush()
        _reversal_history(uow, gift, dispute, kind=kind, reason=reason, at=at, again=True, replaces=replaces)
        return
    if gift.status == GiftStatus.REVERSED:
        return
    _set(gift, status=GiftStatus.REVERSED, failure_reason=reason[:500])
    session.add(gift)
    session.flush()
    _reversal_history(uow, gift, dispute, kind=kind, reason=reason, at=at, again=again, replaces=replaces)


def _reversal_history(
    uow: UnitOfWork,
    gift: Gift,
    dispute: Dispute,
    *,
    kind: str,
    reason: str,
    at: dt.datetime,
    again: bool,
    replaces: tuple[str, ...],
) -> None:
    """The history item of a reversal (`_reverse_gift`): the first keyed on the dispute, a later one on its event."""
    label = "Chargeback" if kind == "chargeback" else "Late failure"
    summary = f"{label}: the gift of {format_pence(gift.amount, gift.currency)} was taken back ({reason})"
    data = {
        "gift_id": str(gift.id),
        "dispute_id": str(dispute.id),
        "kind": kind,
        "reason": reason,
        "provider_ids": _provider_ids(gift),
    }
    if not any(revise_history(uow, key, summary=summary, data=data, amount=-gift.amount) for key in replaces):
        record_history(
            uow,
            gift.supporter_id,
            type="dispute" if kind == "chargeback" else "payment_failed",
            summary=summary,
            at=at,
            amount=-gift.amount,
            currency=gift.currency,
            data=data,
            dedupe_key=f"reversed:{gift.id}:{dispute.id}" + (f":{_gc_moment(at)}" if again else ""),
        )
    payouts.on_money_recorded(uow, _provider_ids(gift))


def _restore_gift(uow: UnitOfWork, gift: Gift) -> None:
    """`chargeback_cancelled`: the bank's claim was withdrawn; the gift counts again, with its receipt. The receipt
    job is asked for again: when the chargeback was the first we heard of the payment, no receipt was issued (the
    job finds the gift reversed); when one was, the job finds it and issues nothing.

    Any event that finds the payment paid again restores it (the state follows GoCardless at once), but only the
    `chargeback_cancelled` event says when: the chargeback's `closed_at` and its history item wait for that event's
    own time (`_chargeback_cancelled_at`), so an older event processed first does not date it."""
    session = uow.session
    _set(gift, status=GiftStatus.PAID, failure_reason="")
    session.add(gift)
    uow.enqueue(RECEIPT_FOR_GIFT, gift_id=str(gift.id))
    dispute = repository.first_locked(
        session, repository.by_key(Dispute, "gocardless_payment_id", gift.gocardless_payment_id)
    )
    if dispute is not None and dispute.status != DisputeStatus.WON:
        _set(dispute, status=DisputeStatus.WON, closed_at=None)
        session.add(dispute)
        session.flush()
    payouts.on_money_recorded(uow, _provider_ids(gift))


def _chargeback_cancelled_at(uow: UnitOfWork, gift: Gift, at: dt.datetime) -> None:
    """The `chargeback_cancelled` event's own time dates the won chargeback and its history item (once: the
    earliest such event, whatever order they are processed in)."""
    session = uow.session
    dispute = repository.first_locked(
        session, repository.by_key(Dispute, "gocardless_payment_id", gift.gocardless_payment_id)
    )
    if dispute is None or dispute.status != DisputeStatus.WON:
        return
    summary = f"Chargeback cancelled: the gift of {format_pence(gift.amount, gift.currency)} counts again"
    if dispute.closed_at is None:
        _set(dispute, closed_at=at)
        session.add(dispute)
        session.flush()
        _restored_history(uow, gift, dispute, summary, {})
    elif at < dispute.closed_at:
        _set(dispute, closed_at=at)
        session.add(dispute)
        session.flush()
        _restored_history(uow, gift, dispute, summary, {}, earlier=True)


def _chargeback_cancelled_late(uow: UnitOfWork, gift: Gift, at: dt.datetime) -> None:
    """A `chargeback_cancelled` processed when GoCardless has the payment charged back again: the cancellation
    happened all the same, so its history item is written, dated by its own event and keyed on the reversal it
    ended, as `_chargeback_cancelled_at` would have keyed it had it been processed in time (so a replay of it, or of
    that, is the same item). The later chargeback's own event writes its reversal (`_reverse_gift`); the dispute
    describes that one. The reversal it ended: the one the dispute describes when it began before this event (the
    first, or a later one whose item is keyed on its time), else the one before that, the first (a payment charged
    back three times or more, with its events processed out of order, may miss an item here)."""
    session = uow.session
    dispute = repository.first_locked(
        session, repository.by_key(Dispute, "gocardless_payment_id", gift.gocardless_payment_id)
    )
    if dispute is None or dispute.kind != "chargeback" or dispute.opened_at is None:
        return
    first = f"restored:{gift.id}:{dispute.id}"
    key = first
    if dispute.opened_at < at:
        again = f"reversed:{gift.id}:{dispute.id}:{_gc_moment(dispute.opened_at)}"
        if repository.exists(session, HistoryEntry, "dedupe_key", again):
            key = f"{first}:{_gc_moment(dispute.opened_at)}"
    record_history(
        uow,
        gift.supporter_id,
        type="dispute",
        summary=f"Chargeback cancelled: the gift of {format_pence(gift.amount, gift.currency)} counts again",
        at=at,
        amount=gift.amount,
        currency=gift.currency,
        data={"gift_id": str(gift.id), "dispute_id": str(dispute.id), "provider_ids": _provider_ids(gift)},
        dedupe_key=key,
    )


def _collected_after_all(
    uow: UnitOfWork, gift: Gift, charge_day: dt.date | None, at: dt.datetime, *, failed_before: bool = False
) -> None:
    """A late failure GoCardless retried and collected (`resubmission_requested`, then `confirmed`/`paid_out` at a
    new charge date): the gift is dated by the collection that succeeded (contract.md: the Direct Debit's charge
    date), unless a live Gift Aid claim has it (HMRC has its first date: the new one is only in the history item).
    The late failure is won, dated by that charge date (no event of its own says when, as `chargeback_cancelled`
    does for a chargeback), with a history item: whichever event first finds the payment paid again writes both.
    `failed_before`: this is the late failure's own `failed` event, processed only after the retry was collected
    (nothing reversed the gift): the gift is dated by the collection all the same."""
    session = uow.session
    dispute = repository.first_locked(
        session, repository.by_key(Dispute, "gocardless_payment_id", gift.gocardless_payment_id)
    )
    won = dispute is not None and dispute.kind == "late_failure" and dispute.status == DisputeStatus.WON
    if not (won or (failed_before and gift.status == GiftStatus.PAID)):
        return
    when = _noon(charge_day) if charge_day else at
    moved = charge_day is not None and gift.received_on is not None and gift.received_on != charge_day
    claimed = moved and repository.gift_in_a_claim(session, gift.id)
    if moved and not claimed:
        _set(gift, received_at=when, received_on=charge_day)
        session.add(gift)
    if dispute is None or not won or dispute.closed_at is not None:
        return
    _set(dispute, closed_at=when)
    session.add(dispute)
    session.flush()
    summary = f"Late failure resolved: the gift of {format_pence(gift.amount, gift.currency)} was collected after all"
    extra: dict[str, Any] = {}
    if charge_day is not None:
        summary += f" on {charge_day:%d/%m/%Y}"
        extra["charge_date"] = charge_day.isoformat()
        if claimed and gift.received_on is not None and gift.received_on != charge_day:
            summary += f" (it keeps its date, {gift.received_on:%d/%m/%Y}: a Gift Aid claim has it)"
    _restored_history(uow, gift, dispute, summary, extra)


def _restored_history(
    uow: UnitOfWork, gift: Gift, dispute: Dispute, summary: str, extra: dict[str, Any], *, earlier: bool = False
) -> None:
    """The item of a reversal given back, dated `dispute.closed_at`. The first is keyed on the dispute (as it always
    was); one that ends a later reversal (charged back again after a cancelled chargeback) is keyed on that
    reversal too (`opened_at`: `_reverse_gift` moves it there), so it is an item of its own. `earlier`: the item is
    there, an earlier event of the same restoration moves it back to `closed_at`."""
    data = {"gift_id": str(gift.id), "dispute_id": str(dispute.id), "provider_ids": _provider_ids(gift), **extra}
    first = f"restored:{gift.id}:{dispute.id}"
    later = f"{first}:{_gc_moment(dispute.opened_at)}" if dispute.opened_at else first
    if earlier:
        for key in (later, first):
            if revise_history(uow, key, summary=summary, data=data, amount=gift.amount, at=dispute.closed_at):
                return
        return
    for key in (first, later):
        if record_history(
            uow,
            gift.supporter_id,
            type="dispute",
            summary=summary,
            at=dispute.closed_at,
            amount=gift.amount,
            currency=gift.currency,
            data=data,
            dedupe_key=key,
        ):
            return


_GC_REFUND_STATUS = {
    "created": RefundStatus.PENDING,
    "pending_submission": RefundStatus.PENDING,
    "submitted": RefundStatus.SUCCEEDED,
    "paid": RefundStatus.SUCCEEDED,
    "cancelled": RefundStatus.CANCELLED,
    "bounced": RefundStatus.FAILED,
    "funds_returned": RefundStatus.FAILED,
}


def sync_gocardless_refund(uow: UnitOfWork, gocardless: GoCardlessGateway, refund_id: str) -> Effect:
    """`refunds.*`: the refund as GoCardless has it now, against the gift its payment paid for."""
    listed = gocardless.get_refund(refund_id)
    payment_id = (listed.get("links") or {}).get("payment")
    if not payment_id:
        return Effect.ignored("a refund without a payment")
    gift = repository.first_locked(uow.session, repository.by_key(Gift, "gocardless_payment_id", payment_id))
    if gift is None:
        return Effect.waiting(f"gocardless_payment:{payment_id}")
    status = _GC_REFUND_STATUS.get(str(listed.get("status")), RefundStatus.PENDING)
    refund, was = _refund_row(
        uow,
        "gocardless_refund_id",
        refund_id,
        lambda: Refund(
            supporter_id=gift.supporter_id,
            gift_id=gift.id,
            amount=int(listed.get("amount") or 0),
            currency=str(listed.get("currency") or gift.currency).upper(),
            provider=Provider.GOCARDLESS,
            reason=str(listed.get("reference") or "")[:200],
            refunded_at=_gc_time(listed.get("created_at")),
            gocardless_refund_id=refund_id,
            gocardless_payment_id=payment_id,
        ),
    )
    _set(refund, status=status)
    uow.session.add(refund)
    uow.session.flush()
    reallocated = _recompute_returns(uow, None, gift)
    undone = [refund] if was == RefundStatus.SUCCEEDED and status != RefundStatus.SUCCEEDED else []
    if status == RefundStatus.SUCCEEDED and was != RefundStatus.SUCCEEDED:
        _refund_recorded(uow, refund, None, gift, [payment_id])
        reallocated = [r for r in reallocated if r.id != refund.id]
    _refunds_reallocated(uow, _changed_refunds(reallocated, undone, exclude=set()), None, gift)
    return Effect.processed(f"gocardless_refund:{refund_id}")


def _gc_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


# --- Regular gifts that stopped arriving ---------------------------------------------------------------------------


def missing_instalments(
    session: Session, *, today: dt.date | None = None, grace_days: int = 7
) -> list[MissingInstalment]:
    """Active regular gifts whose expected instalment has not arrived by its due date plus the grace period; not
    those whose cancellation was asked for (they are being stopped: nothing more is expected of them).

    Ordered by due date, then regular gift id (a total order for the staff list)."""
    today = today or uk_today()
    missing = []
    for regular in repository.running_regular_gifts(session):
        if regular.cancel_requested_at is not None:
            continue
        due = regular.next_due_on
        if due is None or due + dt.timedelta(days=grace_days) >= today:
            continue
        last_paid = repository.latest_paid_on(session, regular.id)
        if last_paid is not None and last_paid >= due:
            continue
        missing.append(
            MissingInstalment(
                regular_gift_id=regular.id,
                supporter_id=regular.supporter_id,
                due_on=due,
                amount=regular.amount,
                currency=regular.currency,
                provider=str(regular.provider),
            )
        )
    return sorted(missing, key=lambda m: (m.due_on, str(m.regular_gift_id)))


def raise_missing_instalment_alerts(uow: UnitOfWork, *, grace_days: int, today: dt.date | None = None) -> int:
    """One review item on the supporter per regular gift and due date (running it again raises nothing new); an
    open one whose instalment is no longer missing (it arrived, the plan ended or moved on) is resolved."""
    raised = 0
    missing = missing_instalments(uow.session, today=today, grace_days=grace_days)
    keys = {_missing_key(item.regular_gift_id, item.due_on) for item in missing}
    for item in missing:
        created = raise_review_item(
            uow,
            item.supporter_id,
            kind=MISSING_INSTALMENT,
            detail=f"The monthly gift of {format_pence(item.amount, item.currency)} due on "
            f"{item.due_on:%d/%m/%Y} has not arrived ({item.provider})",
            data={"regular_gift_id": str(item.regular_gift_id), "due_on": item.due_on.isoformat()},
            dedupe_key=_missing_key(item.regular_gift_id, item.due_on),
        )
        raised += created is not None
    for stale in open_review_items(uow.session, kind=MISSING_INSTALMENT):
        if stale.dedupe_key not in keys:
            resolve_review_item(uow, stale.id, by=ALERTS_SETTLED_BY)
    return raised


MISSING_INSTALMENT = "missing_instalment"
ALERTS_SETTLED_BY = "system: the instalment is no longer missing"


def _missing_key(regular_gift_id: uuid.UUID, due_on: dt.date) -> str:
    return f"{MISSING_INSTALMENT}:{regular_gift_id}:{due_on.isoformat()}"


def _settle_missing_alerts(
    uow: UnitOfWork, regular: RegularGift, *, through: dt.date | None, since: dt.date | None = None
) -> None:
    """Resolve the regular gift's open missing-instalment alerts due on or before `through` (an instalment paid up
    to then), or all of them (`None`: the plan ended, nothing more is expected); `since`: only those due on or after
    it (one closed period)."""
    for item in open_review_items(
        uow.session, kind=MISSING_INSTALMENT, key_prefix=f"{MISSING_INSTALMENT}:{regular.id}:"
    ):
        due_on = dt.date.fromisoformat(str(item.dedupe_key).rsplit(":", 1)[1])
        if (through is None or due_on <= through) and (since is None or due_on >= since):
            resolve_review_item(uow, item.id, by=ALERTS_SETTLED_BY)


# --- Totals and merges ---------------------------------------------------------------------------------------------


def supporter_totals(session: Session, supporter_ids: Sequence[uuid.UUID]) -> dict[str, Any]:
    """`donated`: paid gifts less refunds and lost disputes (reversed gifts — chargebacks, late failures — count
    nothing); `purchases`: paid orders' goods less refunds of goods (the donation line is a gift);
    `regular_gifts`: active or in-arrears regular gifts."""
    ids = list(supporter_ids)
    donated = _one_currency(repository.gift_totals(session, ids))
    purchases = _one_currency(repository.order_totals(session, ids))
    return {"donated": donated, "purchases": purchases, "regular_gifts": repository.running_regular_count(session, ids)}


def gift_owner(session: Session, gift_id: uuid.UUID) -> uuid.UUID | None:
    """The supporter a gift is recorded against, or None when there is no such gift (crm asks, through the
    composition root, before a declaration names one gift)."""
    gift = session.get(Gift, gift_id)
    return gift.supporter_id if gift is not None else None


def _one_currency(rows: list[tuple[str, int]]) -> Money:
    totals = {currency: amount for currency, amount in rows if amount}
    if not totals:
        return Money.zero()
    if len(totals) > 1:
        log.warning("totals in several currencies (%s); showing GBP", ", ".join(totals))
    currency = "GBP" if "GBP" in totals else next(iter(totals))
    return Money(totals[currency], Currency(currency))


def reassign_supporter(uow: UnitOfWork, from_id: uuid.UUID, to_id: uuid.UUID) -> dict[str, int]:
    """A merge moves every gift, regular gift, checkout, order, refund and dispute to the surviving supporter."""
    if from_id == to_id:
        return {}
    return repository.move_supporter(uow.session, from_id, to_id)
