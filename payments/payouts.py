"""Payouts and their reconciliation (issue "Merchandise and money in the bank").

Interface used by the webhook handlers:
- `record_stripe_payout(uow, payout, event_type)`: a Stripe payout object (dict) from a `payout.*` event (or fetched).
  When the payout's reconciliation is complete (`payout.reconciliation_completed`, or `reconciliation_status ==
  "completed"`) its balance transactions are listed through the SDK and matched.
- `record_gocardless_payout(uow, payout_id, action)`: a GoCardless `payouts.*` event; the payout is fetched through
  the SDK and, once paid, its payout items too, and matched.
- `on_money_recorded(uow, source_ids)`: a gift, order, refund or dispute was just recorded with these provider ids
  (ch_..., pi_..., re_..., dp_..., PM..., RF...); payout lines waiting for them are matched now.

The reading side (`list_payouts`, `payout_json`) serves `GET /api/payouts` and `giving reconcile`.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections import Counter
from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from core.clock import from_unix, utc_now
from core.db import UnitOfWork
from payments.errors import PayoutNotFound
from payments.models import Gift, Payout, PayoutLine, PayoutStatus, Provider, Reconciliation
from payments.reconcile import (
    ACCOUNT_FEE,
    CHARGE,
    CHARGEBACK,
    DISPUTE,
    DISPUTE_REVERSAL,
    FEE,
    LATE_FAILURE,
    OTHER,
    PAYMENT,
    PAYOUT_FAILURE,
    REFUND,
    REFUND_RETURNED,
    LineIn,
    MatchResult,
    allocate_exact_pence,
    match_payout,
    payouts_waiting_for,
    store_lines,
    with_fee_line,
)

if TYPE_CHECKING:
    from payments.providers.stripe import StripeGateway

log = logging.getLogger("giving.payments.payouts")

# Where a payout's amount came from (`payouts.source`): the provider; a file or `--payout-amount` that gave it; or
# nobody, so it is the sum of the lines (recomputed as a file adds lines). JSON `source` says api or csv.
SOURCE_API = "api"
SOURCE_GIVEN = "csv"
SOURCE_LINES = "lines"
AMOUNT_FROM = {SOURCE_API: "provider", SOURCE_GIVEN: "given", SOURCE_LINES: "lines"}

STRIPE_STATUS = {"paid": PayoutStatus.PAID, "failed": PayoutStatus.FAILED, "canceled": PayoutStatus.FAILED}
# `bounced`: the bank rejected the payout, so its money did not arrive.
GOCARDLESS_STATUS = {"paid": PayoutStatus.PAID, "pending": PayoutStatus.PENDING, "bounced": PayoutStatus.FAILED}


# Recording payouts from provider events


def upsert_payout(
    uow: UnitOfWork,
    provider: Provider,
    provider_payout_id: str,
    *,
    amount: int,
    currency: str,
    status: PayoutStatus,
    arrival_date: dt.date | None = None,
    reference: str = "",
    source: str = "api",
    status_is_current: bool = False,
) -> Payout:
    """The payout row, created or brought up to date; a field that did not change is not written.

    `status_is_current`: the status was just fetched from the provider (GoCardless), not read from an event's
    snapshot or a CSV, so it may also take a failed payout to paid (`next_status`)."""
    payout = uow.session.exec(
        select(Payout).where(Payout.provider == provider, Payout.provider_payout_id == provider_payout_id)
    ).first()
    now = utc_now()
    if payout is None:
        payout = Payout(
            provider=provider,
            provider_payout_id=provider_payout_id,
            amount=amount,
            currency=currency.upper(),
            status=status,
            arrival_date=arrival_date,
            reference=reference,
            source=source,
            paid_at=now if status == PayoutStatus.PAID else None,
            created_at=now,
            updated_at=now,
        )
        uow.session.add(payout)
        uow.session.flush()
        return payout
    status = next_status(payout.status, status, reported_is_current=status_is_current)
    wanted: dict[str, Any] = {"amount": amount, "currency": currency.upper(), "status": status}
    if arrival_date is not None:
        wanted["arrival_date"] = arrival_date
    if reference:
        wanted["reference"] = reference
    if source == SOURCE_API or payout.source != SOURCE_API:
        # First known from a file, now reported by the provider: its amount is the provider's from here on (a later
        # file must agree with it, `imports._store`). A file never takes that back.
        wanted["source"] = source
    changed = False
    for name, value in wanted.items():
        if getattr(payout, name) != value:
            setattr(payout, name, value)
            changed = True
    if status == PayoutStatus.PAID and payout.paid_at is None:
        payout.paid_at = now
        changed = True
    if changed:
        payout.updated_at = now
        uow.session.add(payout)
        uow.session.flush()
    return payout


def next_status(current: PayoutStatus, reported: PayoutStatus, *, reported_is_current: bool) -> PayoutStatus:
    """A payout's status once the provider reported `reported`.

    A pending report never takes a paid or failed payout back (a late `payout.created` snapshot, a fetch racing the
    `paid` event). A snapshot never undoes a failure either: Stripe never pays a failed payout again (it pays the money
    out in a later payout), so a late `payout.paid` is older than the `payout.failed`. A status fetched at processing
    time is current, so a bounced GoCardless payout that is later paid moves failed → paid."""
    if reported == PayoutStatus.PENDING and current != PayoutStatus.PENDING:
        return current
    if current == PayoutStatus.FAILED and not reported_is_current:
        return current
    return reported


def record_stripe_payout(uow: UnitOfWork, payout: dict[str, Any], event_type: str = "") -> None:
    """A Stripe payout from a `payout.*` event (or fetched, with no event type): record it; once its reconciliation is
    complete, load and match its lines."""
    status = STRIPE_STATUS.get(str(payout.get("status")), PayoutStatus.PENDING)
    arrival = payout.get("arrival_date")
    row = upsert_payout(
        uow,
        Provider.STRIPE,
        payout["id"],
        amount=int(payout["amount"]),
        currency=str(payout.get("currency") or "gbp"),
        status=status,
        arrival_date=from_unix(arrival).date() if isinstance(arrival, int | float) else None,
        reference=str(payout.get("statement_descriptor") or ""),
    )
    complete = event_type == "payout.reconciliation_completed" or payout.get("reconciliation_status") == "completed"
    if complete and status != PayoutStatus.FAILED and row.lines_from_provider_at is None:
        # Lines read only from a file may be a part of the payout: Stripe's final list completes them (same line
        # ids), also when Stripe first reported the payout while its reconciliation was in progress (it then counts
        # as reported, `source` api, but its lines are still only the file's).
        load_stripe_lines(uow, row)
    failed = row.status == PayoutStatus.FAILED
    match_payout(uow, row.id)
    if failed:
        # Later payouts that paid its money out again (a `payout_failure` line) may have been waiting for the failure.
        on_money_recorded(uow, [payout["id"]])


def _stripe_gateway() -> StripeGateway:
    from payments.providers.stripe import StripeGateway

    return StripeGateway(_settings().stripe)


def load_stripe_lines(uow: UnitOfWork, payout: Payout) -> int:
    transactions = _stripe_gateway().iter_payout_balance_transactions(payout.provider_payout_id)
    return store_lines(uow, payout, stripe_lines(transactions, payout.provider_payout_id), from_provider=True)


def stripe_lines(transactions: Iterable[dict[str, Any]], payout_id: str) -> list[LineIn]:
    """Balance transactions as payout lines: every one but the payout's own, each with its fee as its own line."""
    lines: list[LineIn] = []
    for bt in transactions:
        source = bt.get("source")
        source_id = source.get("id") if isinstance(source, dict) else source
        category = str(bt.get("reporting_category") or bt.get("type") or "")
        if bt.get("type") == "payout" and source_id == payout_id:
            continue  # the payout's own balance transaction
        related = None
        if isinstance(source, dict):
            # A charge names its payment intent (a card's `ch_`, and the `py_` of a Bacs Debit or other non-card
            # payment, also a Charge); a refund or dispute names its charge.
            is_charge = str(source_id or "").startswith(("ch_", "py_"))
            related = source.get("payment_intent") if is_charge else source.get("charge")
            if isinstance(related, dict):
                related = related.get("id")
        lines.extend(
            with_fee_line(
                LineIn(
                    provider_line_id=str(bt["id"]),
                    kind=stripe_kind(category, str(bt.get("type") or ""), int(bt["amount"]), source_id),
                    amount=int(bt["amount"]),
                    fee=int(bt.get("fee") or 0),
                    net=int(bt["net"]) if bt.get("net") is not None else None,
                    currency=str(bt.get("currency") or "gbp"),
                    source_id=source_id,
                    related_id=related,
                    provider_type=category,
                    description=str(bt.get("description") or ""),
                )
            )
        )
    return lines


def stripe_kind(category: str, bt_type: str, amount: int, source_id: str | None) -> str:
    if category in ("charge", "payment") or bt_type in ("charge", "payment"):
        return CHARGE
    if category in ("refund", "payment_refund") or bt_type in ("refund", "payment_refund"):
        return REFUND
    if category == "refund_failure" or bt_type == "refund_failure":
        return REFUND_RETURNED  # a refund that failed: its money came back to us
    if category == "dispute_reversal":
        return DISPUTE_REVERSAL
    if category == "dispute" or (source_id or "").startswith(("dp_", "du_")):
        return DISPUTE if amount <= 0 else DISPUTE_REVERSAL
    if category == "fee" or bt_type in ("stripe_fee", "tax_fee"):
        return ACCOUNT_FEE
    if category == "payout_reversal" or bt_type in ("payout_failure", "payout_cancel"):
        return PAYOUT_FAILURE
    return OTHER


def record_gocardless_payout(uow: UnitOfWork, payout_id: str, action: str) -> None:
    """A GoCardless `payouts.*` event: fetch the payout; once paid, fetch its items and match them. The event
    carries only ids, so the fetched status is the payout's current one and is taken as it is (`next_status`)."""
    from payments.providers.gocardless import GoCardlessGateway

    gateway = GoCardlessGateway(_settings().gocardless)
    payout = gateway.get_payout(payout_id)
    status = GOCARDLESS_STATUS.get(str(payout.get("status")), PayoutStatus.PENDING)
    if action == "paid" and status == PayoutStatus.PENDING:
        # The event says it was paid; a fetch racing it can still read pending (never a bounce, which comes later).
        status = PayoutStatus.PAID
    arrival = payout.get("arrival_date")
    row = upsert_payout(
        uow,
        Provider.GOCARDLESS,
        payout_id,
        amount=int(payout["amount"]),
        currency=str(payout.get("currency") or "GBP"),
        status=status,
        arrival_date=dt.date.fromisoformat(arrival) if arrival else None,
        reference=str(payout.get("reference") or ""),
        status_is_current=True,
    )
    _record_fx(uow, row, payout.get("fx"))
    if row.status == PayoutStatus.PAID and row.lines_from_provider_at is None:
        store_lines(uow, row, gocardless_lines(gateway.iter_payout_items(payout_id), row.currency), from_provider=True)
    match_payout(uow, row.id)


# Currencies counted in whole units (no minor unit), for converting minor units between two currencies.
_ZERO_DECIMAL = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)


def _rate(value: Any) -> Decimal | None:
    """A GoCardless exchange rate (a decimal string such as "1.1234567890"), never through a float."""
    if value is None or isinstance(value, float):
        return None
    try:
        rate = Decimal(str(value))
    except InvalidOperation:
        return None
    return rate if rate.is_finite() and rate > 0 else None


def fx_of(amount: int, currency: str, fx: Any) -> dict[str, Any] | None:
    """What a GoCardless payout converted to another currency (its `fx`) put in the bank: `fx_currency`,
    `fx_amount` (minor units of it), `exchange_rate` (the decimal string) and `exchange_rate_estimated`.

    GoCardless gives `estimated_exchange_rate` until the rate is confirmed (`payouts.fx_rate_confirmed`), then
    `exchange_rate` and `fx_amount`. Until then the amount is the estimate (`amount` times the estimated rate, rounded
    half up to the bank currency's minor unit, in Decimal), marked estimated. None for a payout paid in its own
    currency (no `fx`, or `fx_currency` the payout's)."""
    if not isinstance(fx, dict) or not fx.get("fx_currency"):
        return None
    fx_currency = str(fx["fx_currency"]).upper()
    if fx_currency == currency.upper():
        return None
    confirmed = _rate(fx.get("exchange_rate"))
    rate = confirmed or _rate(fx.get("estimated_exchange_rate"))
    fx_amount = fx.get("fx_amount")
    if isinstance(fx_amount, int) and not isinstance(fx_amount, bool):
        bank_amount: int | None = fx_amount
    elif rate is not None:
        shift = (0 if fx_currency in _ZERO_DECIMAL else 2) - (0 if currency.upper() in _ZERO_DECIMAL else 2)
        bank_amount = int((Decimal(amount) * rate).scaleb(shift).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    else:
        bank_amount = None
    return {
        "fx_currency": fx_currency,
        "fx_amount": bank_amount,
        "exchange_rate": str(confirmed if confirmed is not None else rate) if rate is not None else None,
        "exchange_rate_estimated": confirmed is None or not isinstance(fx_amount, int),
    }


def _record_fx(uow: UnitOfWork, row: Payout, fx: Any) -> None:
    """The payout's conversion as GoCardless has it now (fetched at processing time, so a confirmed rate replaces
    the estimate; a snapshot never goes back from confirmed to estimated)."""
    wanted = fx_of(row.amount, row.currency, fx) or {
        "fx_currency": None,
        "fx_amount": None,
        "exchange_rate": None,
        "exchange_rate_estimated": None,
    }
    if row.exchange_rate_estimated is False and wanted["exchange_rate_estimated"]:
        return
    changed = False
    for name, value in wanted.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    if changed:
        row.updated_at = utc_now()
        uow.session.add(row)
        uow.session.flush()


GOCARDLESS_KINDS = {
    "payment_paid_out": PAYMENT,
    "payment_failed": LATE_FAILURE,
    "payment_charged_back": CHARGEBACK,
    "payment_refunded": REFUND,
    "refund": REFUND,
    "refund_funds_returned": REFUND_RETURNED,
    "gocardless_fee": FEE,
    "app_fee": FEE,
    "surcharge_fee": FEE,
    "revenue_share": FEE,
}


def gocardless_lines(items: Iterable[dict[str, Any]], currency: str = "GBP") -> list[LineIn]:
    """Payout items as lines. Amounts are decimal pence ("-12.5"): added exactly and rounded once for the payout,
    each line getting its whole-penny share of that total (`allocate_exact_pence`)."""
    items = list(items)
    amounts = allocate_exact_pence([str(item.get("amount") or "0") for item in items])
    seen: Counter[str] = Counter()
    lines = []
    for item, amount in zip(items, amounts, strict=True):
        item_type = str(item.get("type") or "")
        links = item.get("links") or {}
        payment, refund = links.get("payment"), links.get("refund")
        kind = GOCARDLESS_KINDS.get(item_type, OTHER)
        if kind in (REFUND, REFUND_RETURNED) or (kind == FEE and refund and not payment):
            source, related = refund or payment, payment if refund else None
        else:
            source, related = payment or refund, None
        # Payout items carry no id of their own: type + what they name, numbered if repeated, is stable.
        base = f"{item_type}:{source or ''}"
        seen[base] += 1
        lines.append(
            LineIn(
                provider_line_id=f"{base}:{seen[base]}",
                kind=kind,
                amount=amount,
                currency=currency,
                source_id=source,
                related_id=related,
                fee_for=source if kind == FEE else None,
                provider_type=item_type,
                amount_exact=str(item.get("amount")),
            )
        )
    return lines


def on_money_recorded(uow: UnitOfWork, source_ids: list[str]) -> None:
    """Lines that arrived before their gift, refund or dispute are matched as soon as it is recorded."""
    for payout_id in payouts_waiting_for(uow, source_ids):
        match_payout(uow, payout_id)


def rematch(uow: UnitOfWork, payout_id: uuid.UUID | None = None, *, fetch_missing: bool = False) -> list[MatchResult]:
    """`giving reconcile`: match again one payout or every payout (and, with `fetch_missing`, load the lines of
    paid payouts that have none yet from the provider)."""
    query = select(Payout).order_by(col(Payout.created_at), col(Payout.id))
    if payout_id is not None:
        query = query.where(Payout.id == payout_id)
    results = []
    for payout in uow.session.exec(query).all():
        if fetch_missing and payout.lines_loaded_at is None and payout.status == PayoutStatus.PAID:
            fetch_payout(uow, payout)
        results.append(match_payout(uow, payout.id))
    return results


def fetch_payout(uow: UnitOfWork, payout: Payout) -> None:
    """The payout as the provider has it now, with its lines if they are final."""
    if payout.provider == Provider.STRIPE:
        # Through the payout itself: its balance transactions load only once Stripe's reconciliation of it is
        # complete; an in-progress list is incomplete, and lines are loaded once.
        record_stripe_payout(uow, _stripe_gateway().retrieve_payout(payout.provider_payout_id))
    elif payout.provider == Provider.GOCARDLESS:
        record_gocardless_payout(uow, payout.provider_payout_id, "paid")


def _settings() -> Any:
    from core.runtime import get_runtime

    return get_runtime().settings


# Reading payouts


def _money(amount: int, currency: str) -> dict[str, Any]:
    return {"amount": int(amount), "currency": currency}


def _status(payout: Payout) -> str:
    return "reconciled" if payout.reconciliation == Reconciliation.RECONCILED else "unreconciled"


def payout_summary(payout: Payout) -> dict[str, Any]:
    return {
        "id": str(payout.id),
        "provider": str(payout.provider),
        "provider_payout_id": payout.provider_payout_id,
        "amount": _money(payout.amount, payout.currency),
        "status": _status(payout),
        "discrepancy": _money(payout.discrepancy, payout.currency),
        # `pending`: the provider has not finished the payout's reconciliation, so its lines are not loaded yet.
        "reconciliation": str(payout.reconciliation),
        "payout_status": str(payout.status),
        "arrival_date": payout.arrival_date.isoformat() if payout.arrival_date else None,
        "reference": payout.reference,
        "source": SOURCE_API if payout.source == SOURCE_API else "csv",
        # provider | given (a file or --payout-amount) | lines (nobody gave it: the sum of the lines)
        "amount_from": AMOUNT_FROM.get(payout.source, "given"),
        "reconciled_at": payout.reconciled_at,
        # What reached the bank: `amount` unless GoCardless converted the payout to another currency (`fx`: the
        # amount in that currency, the rate as a decimal string, and whether GoCardless has confirmed it yet).
        "bank_amount": (
            _money(payout.fx_amount, payout.fx_currency)
            if payout.fx_currency and payout.fx_amount is not None
            else _money(payout.amount, payout.currency)
        ),
        "fx": (
            {
                "currency": payout.fx_currency,
                "amount": _money(payout.fx_amount, payout.fx_currency) if payout.fx_amount is not None else None,
                "exchange_rate": payout.exchange_rate,
                "estimated": bool(payout.exchange_rate_estimated),
            }
            if payout.fx_currency
            else None
        ),
    }


def line_json(
    line: PayoutLine, regular_gift_id: uuid.UUID | None = None, failed_payout_id: uuid.UUID | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": line.kind,
        "amount": _money(line.amount, line.currency),
        "source_id": line.source_id,
        "provider_line_id": line.provider_line_id,
        "provider_type": line.provider_type,
        "matched": line.matched_at is not None,
    }
    for name in ("gift_id", "order_id", "refund_id", "dispute_id"):
        value = getattr(line, name)
        if value is not None:
            body[name] = str(value)
    if regular_gift_id is not None:
        body["regular_gift_id"] = str(regular_gift_id)
    if failed_payout_id is not None:
        body["failed_payout_id"] = str(failed_payout_id)
    if line.kind in (FEE, ACCOUNT_FEE):
        body["fee_for"] = line.fee_for or "account"
    elif line.fee:
        # The gross line of a Stripe balance transaction; its fee is the next line.
        body["fee"] = _money(line.fee, line.currency)
        body["net"] = _money(line.net, line.currency)
    if line.related_id:
        body["related_id"] = line.related_id
    if line.amount_exact is not None:
        body["amount_exact"] = line.amount_exact
    if line.description:
        body["description"] = line.description
    return body


def find_payout(session: Session, payout_ref: str) -> Payout:
    """By our id, or by the provider's payout id (po_..., PO...)."""
    if "\x00" in payout_ref:  # no payout's id has one (and PostgreSQL refuses it in text)
        raise PayoutNotFound(f"no payout {payout_ref!r}")
    payout = None
    try:
        payout = session.get(Payout, uuid.UUID(payout_ref))
    except ValueError:
        payout = session.exec(select(Payout).where(Payout.provider_payout_id == payout_ref)).first()
    if payout is None:
        raise PayoutNotFound(f"no payout {payout_ref}")
    return payout


def payout_json(session: Session, payout: Payout) -> dict[str, Any]:
    """`GET /api/payouts/{id}`: the payout with its lines in the provider's order (never the payout's own line)."""
    # A matched payout_failure line settles our failed payout that its `source_id` names (unique per provider).
    failed = aliased(Payout)
    settles_failed = sa.and_(
        col(PayoutLine.kind) == PAYOUT_FAILURE,
        col(PayoutLine.matched_at).is_not(None),
        col(failed.provider) == payout.provider,
        col(failed.provider_payout_id) == col(PayoutLine.source_id),
    )
    rows = session.exec(
        select(PayoutLine, Gift.regular_gift_id, failed.id)
        .outerjoin(Gift, col(Gift.id) == col(PayoutLine.gift_id))
        .outerjoin(failed, settles_failed)
        .where(PayoutLine.payout_id == payout.id)
        .order_by(col(PayoutLine.position), col(PayoutLine.provider_line_id))
    ).all()
    lines = [line_json(line, regular, failed_id) for line, regular, failed_id in rows]
    body = payout_summary(payout)
    body["lines"] = lines
    body["unmatched"] = [line["provider_line_id"] for line in lines if not line["matched"]]
    return body


def payout_order() -> list[Any]:
    """Newest first: by arrival date (payouts without one first, as the newest), then when we recorded them,
    then id, so the order is total."""
    return [
        sa.case((col(Payout.arrival_date).is_(None), 0), else_=1),
        col(Payout.arrival_date).desc(),
        col(Payout.created_at).desc(),
        col(Payout.id).desc(),
    ]


def list_payouts(session: Session, *, limit: int | None = None, offset: int = 0) -> tuple[list[dict[str, Any]], bool]:
    """(payouts newest first, whether there are more after this page)."""
    query = select(Payout).order_by(*payout_order()).offset(offset)
    if limit is not None:
        query = query.limit(limit + 1)
    payouts = list(session.exec(query).all())
    more = limit is not None and len(payouts) > limit
    payouts = payouts[:limit] if limit is not None else payouts
    return payout_summaries(session, payouts), more


def payout_summaries(session: Session, payouts: list[Payout]) -> list[dict[str, Any]]:
    """Each payout's summary with how many of its lines are not matched yet (one query for them all)."""
    counts = _unmatched_counts(session, [p.id for p in payouts])
    return [{**payout_summary(payout), "unmatched_lines": counts.get(payout.id, 0)} for payout in payouts]


def _unmatched_counts(session: Session, payout_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    if not payout_ids:
        return {}
    rows = session.exec(
        select(PayoutLine.payout_id, sa.func.count())
        .where(col(PayoutLine.payout_id).in_(payout_ids), col(PayoutLine.matched_at).is_(None))
        .group_by(col(PayoutLine.payout_id))
    ).all()
    return {payout_id: int(count) for payout_id, count in rows}
