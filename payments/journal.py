"""The accounts journal: double-entry postings for every payout that reached the bank in a period.

One journal entry per payout (cash basis, dated the payout's arrival date): the bank is debited with the payout and
each payout line is posted to what it is (donations by appeal or fund, shirt sales with their VAT, partner shares
owed, processing fees, refunds, chargebacks and disputes; a failed payout's money paid out again, what that failed
payout settled). Every line's postings add up to the line, and a payout that does not reconcile posts its
discrepancy and unmatched lines to suspense, so every entry balances to zero in each of its currencies (a payout
GoCardless converted before it reached the bank has two: the bank's and the payout's).
Shirts sent back move no money but change the partner shares owed: `return_postings` gives one entry per return,
dated the day staff recorded it. Gift Aid receivable is not money in a payout: the composition root
(giving/commands/shop.py) adds those entries.

Signs: a posting's `amount` is positive for a debit and negative for a credit (pence).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import functools
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import IO, Any, TypeVar

from sqlmodel import Session, SQLModel, col, select

from core.clock import UK, uk_date
from core.money import Currency, Money, percent_of
from payments import shop
from payments.models import (
    Dispute,
    DisputeStatus,
    Gift,
    Order,
    OrderLine,
    OrderReturn,
    PartnerCampaign,
    Payout,
    PayoutLine,
    PayoutStatus,
    Provider,
    Refund,
    RefundStatus,
)
from payments.reconcile import (
    ACCOUNT_FEE,
    CHARGEBACK,
    DISPUTE,
    DISPUTE_REVERSAL,
    FEE,
    GIFT,
    LATE_FAILURE,
    ORDER,
    PAYOUT_FAILURE,
    REFUND,
    REFUND_RETURNED,
)

BANK = "Bank"
DONATIONS = "Donations"
TRADING = "Trading income: shirts"
VAT_OUTPUT = "VAT output"
PARTNER_COST = "Trading: partner shares"
PARTNER_OWED = "Partner shares owed"
FEES = "Processing fees"
REFUNDS_DONATIONS = "Refunds: donations"
REFUNDS_SHIRTS = "Refunds: shirts"
CHARGEBACKS = "Chargebacks and disputes"
# A shop basket paid a second time (an order with `duplicate_of_id`): the goods part is the donor's money held to
# refund, never a sale (no shirts were sent for it).
DUPLICATE_PAYMENTS = "Duplicate shop payments to refund"
SUSPENSE_UNMATCHED = "Suspense: unmatched payout lines"
SUSPENSE_DISCREPANCY = "Suspense: payout discrepancy"
SUSPENSE_NOT_LOADED = "Suspense: payout lines not loaded"
# A payout converted to another currency before it reached the bank: the payout's currency given for the bank's.
EXCHANGE = "Exchange gains and losses"
ESTIMATED_RATE = " (estimated: GoCardless has not confirmed the rate)"
GENERAL_FUND = "General"
# Currencies Stripe counts in whole units (no minor unit).
ZERO_DECIMAL_CURRENCIES = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"}
)

COLUMNS = [
    "date",
    "entry",
    "account",
    "debit",
    "credit",
    "currency",
    "description",
    "provider_payout_id",
    "source_id",
    "reference_id",
]

T = TypeVar("T", bound=SQLModel)


@dataclasses.dataclass(frozen=True)
class Posting:
    date: dt.date
    entry: str
    account: str
    amount: int  # + debit, - credit
    currency: str = "GBP"
    description: str = ""
    provider_payout_id: str = ""
    source_id: str = ""
    reference_id: str = ""


def payout_date(payout: Payout) -> dt.date:
    """The day the money reached the bank: the arrival date, else when it was paid, else when we recorded it."""
    if payout.arrival_date is not None:
        return payout.arrival_date
    return uk_date(payout.paid_at or payout.created_at)


def _by_ids(session: Session, model: type[T], ids: Iterable[uuid.UUID | None]) -> dict[uuid.UUID, T]:
    wanted = sorted({i for i in ids if i is not None}, key=str)
    found: dict[uuid.UUID, T] = {}
    # Chunks keep each IN list well under SQLite's bound-parameter limit.
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        for row in session.exec(select(model).where(col(model.id).in_(chunk))).all():  # type: ignore[attr-defined]
            found[row.id] = row  # type: ignore[attr-defined]
    return found


@dataclasses.dataclass
class _Context:
    gifts: dict[uuid.UUID, Gift]
    orders: dict[uuid.UUID, Order]
    refunds: dict[uuid.UUID, Refund]
    disputes: dict[uuid.UUID, Dispute]
    order_lines: dict[uuid.UUID, list[OrderLine]]
    campaigns: dict[uuid.UUID, PartnerCampaign]
    refund_vat: dict[uuid.UUID, int] = dataclasses.field(default_factory=dict)
    # Each refund's goods part (VAT included) on a basket, by refund id: its allocation, or for a refund not allocated
    # yet (pending, or failed before it succeeded) what the allocation rule gives it at its place.
    refund_goods: dict[uuid.UUID, int] = dataclasses.field(default_factory=dict)
    # A lost dispute on a basket: (its goods part, VAT included; the VAT inside it), by dispute id.
    dispute_goods: dict[uuid.UUID, tuple[int, int]] = dataclasses.field(default_factory=dict)
    # The change each refund and each lost dispute makes to the basket's partner shares, by campaign id (negative:
    # less owed), by refund id and by dispute id.
    refund_shares: dict[uuid.UUID, dict[uuid.UUID, int]] = dataclasses.field(default_factory=dict)
    dispute_shares: dict[uuid.UUID, dict[uuid.UUID, int]] = dataclasses.field(default_factory=dict)
    # The change each return staff recorded makes (by return id): posted by `return_postings`, on its own day.
    return_shares: dict[uuid.UUID, dict[uuid.UUID, int]] = dataclasses.field(default_factory=dict)
    # Failed Stripe payouts whose money a `payout_failure` line paid out again (by provider payout id), and lines.
    failed_payouts: dict[str, Payout] = dataclasses.field(default_factory=dict)
    lines_by_payout: dict[uuid.UUID, list[PayoutLine]] = dataclasses.field(default_factory=dict)


def payout_postings(session: Session, start: dt.date, end: dt.date) -> list[Posting]:
    """Postings of every payout that arrived between `start` and `end` (inclusive), in date then payout order. Only
    paid ones: a pending payout's arrival date is the provider's estimate and its money is not in the bank yet (cash
    basis), and a failed one never arrives."""
    payouts = [
        p
        for p in session.exec(select(Payout).where(Payout.status == PayoutStatus.PAID)).all()
        if start <= payout_date(p) <= end
    ]
    payouts.sort(key=lambda p: (payout_date(p), p.provider, p.provider_payout_id))
    lines_by_payout: dict[uuid.UUID, list[PayoutLine]] = defaultdict(list)
    _load_lines(session, [p.id for p in payouts], lines_by_payout)
    failed_payouts = _failed_payouts_paid_out_again(session, lines_by_payout)
    every_line = [line for lines in lines_by_payout.values() for line in lines]
    refunds = _by_ids(session, Refund, (line.refund_id for line in every_line))
    disputes = _by_ids(session, Dispute, (line.dispute_id for line in every_line))
    orders = _by_ids(
        session,
        Order,
        [line.order_id for line in every_line]
        + [r.order_id for r in refunds.values()]
        + [d.order_id for d in disputes.values()],
    )
    order_ids = sorted(orders, key=str)
    order_lines = _lines_of(session, order_ids)
    campaigns = {c.id: c for c in session.exec(select(PartnerCampaign)).all()}
    context = _Context(
        gifts=_by_ids(
            session,
            Gift,
            [line.gift_id for line in every_line] + [r.gift_id for r in refunds.values()],
        ),
        orders=orders,
        refunds=refunds,
        disputes=disputes,
        order_lines=order_lines,
        campaigns=campaigns,
        **_returned_goods(
            session,
            orders,
            order_lines,
            campaigns,
            {r.order_id for r in refunds.values() if r.order_id is not None}
            | {d.order_id for d in disputes.values() if d.order_id is not None and d.status == DisputeStatus.LOST},
        ),
        failed_payouts=failed_payouts,
        lines_by_payout=lines_by_payout,
    )
    # A basket's donation is a gift of the order.
    donation_gifts: dict[uuid.UUID, Gift] = {}
    for chunk_start in range(0, len(order_ids), 500):
        chunk = order_ids[chunk_start : chunk_start + 500]
        for gift in session.exec(select(Gift).where(col(Gift.order_id).in_(chunk))).all():
            donation_gifts.setdefault(gift.order_id, gift)  # type: ignore[arg-type]
    postings: list[Posting] = []
    for payout in payouts:
        postings.extend(_payout_entry(payout, lines_by_payout[payout.id], context, donation_gifts))
    return postings


def _lines_of(session: Session, order_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[OrderLine]]:
    """Each order's lines, in SKU order."""
    order_lines: dict[uuid.UUID, list[OrderLine]] = defaultdict(list)
    for chunk_start in range(0, len(order_ids), 500):
        chunk = order_ids[chunk_start : chunk_start + 500]
        for order_line in session.exec(
            select(OrderLine).where(col(OrderLine.order_id).in_(chunk)).order_by(col(OrderLine.sku))
        ).all():
            order_lines[order_line.order_id].append(order_line)
    return order_lines


def return_postings(session: Session, start: dt.date, end: dt.date) -> list[Posting]:
    """One entry per return of shirts staff recorded between `start` and `end` (UK dates, inclusive), dated the
    day it was recorded: the change it makes to the partner shares owed (Dr `Partner shares owed: <campaign>` / Cr
    `Trading: partner shares` for a share that drops). No money moves with a return (the refund, if any, is money
    in a payout and posts its own VAT and refund), so nothing else is posted: the sale, its VAT and its income stand
    until money goes back, and the journal keeps no stock. A return that changes no share (no partner campaign, or
    the goods were refunded in full before it) posts nothing."""
    since = dt.datetime.combine(start, dt.time(), tzinfo=UK).astimezone(dt.UTC)
    until = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), tzinfo=UK).astimezone(dt.UTC)
    found = list(
        session.exec(
            select(OrderReturn)
            .where(col(OrderReturn.recorded_at) >= since, col(OrderReturn.recorded_at) < until)
            .order_by(col(OrderReturn.recorded_at), col(OrderReturn.id))
        ).all()
    )
    if not found:
        return []
    orders = _by_ids(session, Order, (r.order_id for r in found))
    order_lines = _lines_of(session, sorted(orders, key=str))
    campaigns = {c.id: c for c in session.exec(select(PartnerCampaign)).all()}
    changes = _returned_goods(session, orders, order_lines, campaigns, orders)["return_shares"]
    postings: list[Posting] = []
    for returned in found:
        order = orders.get(returned.order_id)
        day, entry = uk_date(returned.recorded_at), f"return:{returned.id}"

        post = functools.partial(
            _return_posting, postings, day, entry, order.currency if order else "GBP", str(returned.id)
        )
        _post_partner_shares(
            changes.get(returned.id, {}), campaigns, post, 1, ": shirts sent back", None, returned.order_id
        )
    return postings


def _return_posting(
    postings: list[Posting],
    day: dt.date,
    entry: str,
    currency: str,
    source: str,
    account: str,
    amount: int,
    description: str,
    _line: PayoutLine | None,
    ref: Any,
) -> None:
    if amount:
        postings.append(Posting(day, entry, account, amount, currency, description, "", source, str(ref)))


def _load_lines(
    session: Session, payout_ids: Sequence[uuid.UUID], lines_by_payout: dict[uuid.UUID, list[PayoutLine]]
) -> None:
    """Add the lines of these payouts to `lines_by_payout`, each payout's in the provider's order."""
    for chunk_start in range(0, len(payout_ids), 500):
        chunk = payout_ids[chunk_start : chunk_start + 500]
        for line in session.exec(
            select(PayoutLine)
            .where(col(PayoutLine.payout_id).in_(chunk))
            .order_by(col(PayoutLine.position), col(PayoutLine.provider_line_id))
        ).all():
            lines_by_payout[line.payout_id].append(line)


def _failed_payouts_paid_out_again(
    session: Session, lines_by_payout: dict[uuid.UUID, list[PayoutLine]]
) -> dict[str, Payout]:
    """The failed Stripe payouts named by the matched `payout_failure` lines of these payouts (and, in turn, by
    those of their own lines, for money that failed more than once), with their lines added to `lines_by_payout`."""
    found: dict[str, Payout] = {}
    wanted = {
        line.source_id
        for lines in lines_by_payout.values()
        for line in lines
        if line.kind == PAYOUT_FAILURE and line.matched_at is not None and line.source_id
    }
    while wanted:
        refs = sorted(wanted - set(found))
        new: list[Payout] = []
        for chunk_start in range(0, len(refs), 500):
            chunk = refs[chunk_start : chunk_start + 500]
            new.extend(
                session.exec(
                    select(Payout).where(
                        Payout.provider == Provider.STRIPE,
                        Payout.status == PayoutStatus.FAILED,
                        col(Payout.provider_payout_id).in_(chunk),
                    )
                ).all()
            )
        found.update((p.provider_payout_id, p) for p in new)
        before = set(lines_by_payout)
        _load_lines(session, [p.id for p in new if p.id not in before], lines_by_payout)
        wanted = {
            line.source_id
            for p in new
            for line in lines_by_payout.get(p.id, [])
            if line.kind == PAYOUT_FAILURE and line.matched_at is not None and line.source_id
        } - set(found)
    return found


def _payout_entry(
    payout: Payout, lines: list[PayoutLine], ctx: _Context, donation_gifts: dict[uuid.UUID, Gift]
) -> list[Posting]:
    day = payout_date(payout)
    entry = f"payout:{payout.provider}:{payout.provider_payout_id}"
    provider = "Stripe" if payout.provider == Provider.STRIPE else "GoCardless"
    out: list[Posting] = []

    def post(
        account: str,
        amount: int,
        description: str,
        line: PayoutLine | None = None,
        ref: Any = None,
        currency: str | None = None,
    ) -> None:
        if amount == 0:
            return
        out.append(
            Posting(
                date=day,
                entry=entry,
                account=account,
                amount=amount,
                currency=currency or payout.currency,
                description=description,
                provider_payout_id=payout.provider_payout_id,
                source_id=(line.source_id or line.provider_line_id) if line else "",
                reference_id=str(ref) if ref else "",
            )
        )

    bank = f"{BANK}: {provider} payouts"
    if payout.fx_currency and payout.fx_amount is not None:
        # Converted before it reached the bank: the bank has what reached it, in its own currency; the lines stay in
        # the payout's. `Exchange gains and losses` gives the one for the other (a posting in each currency), so each
        # currency of the entry balances, and valued in the books' currency the account holds the exchange
        # difference. An estimated rate (GoCardless has not confirmed it) says so on each of these postings.
        converted = (
            f"{provider} payout {payout.reference}".strip()
            + f" converted: {payout.currency} {_plain(payout.amount, payout.currency)}"
            + f" to {payout.fx_currency} {_plain(payout.fx_amount, payout.fx_currency)}"
            + (ESTIMATED_RATE if payout.exchange_rate_estimated else "")
        )
        post(bank, payout.fx_amount, _bank_description(payout, provider), currency=payout.fx_currency)
        post(EXCHANGE, payout.amount, converted)
        post(EXCHANGE, -payout.fx_amount, converted, currency=payout.fx_currency)
    else:
        post(bank, payout.amount, _bank_description(payout, provider))
    if payout.lines_loaded_at is None:
        post(SUSPENSE_NOT_LOADED, -payout.amount, "the payout's lines are not loaded yet")
        return out
    for line in lines:
        _line_postings(line, ctx, donation_gifts, provider, post)
    total = sum(line.amount for line in lines)
    if payout.amount != total:
        post(SUSPENSE_DISCREPANCY, -(payout.amount - total), "payout amount less its lines")
    return out


def _bank_description(payout: Payout, provider: str) -> str:
    """The bank posting's words. A payout GoCardless converted to another currency (its `fx`) says what reached the
    bank, in which currency and at what rate (estimated until GoCardless confirms it). Without even an estimated
    amount (no rate at all), the bank posting stays the payout's own amount in its currency and says only where
    it went."""
    words = f"{provider} payout {payout.reference}".strip()
    if not payout.fx_currency:
        return words
    if payout.fx_amount is not None:
        words += f"; reached the bank as {payout.fx_currency} {_plain(payout.fx_amount, payout.fx_currency)}"
    else:
        words += f"; paid to the bank in {payout.fx_currency}"
    if payout.exchange_rate:
        words += f" at {payout.currency}/{payout.fx_currency} {payout.exchange_rate}"
    if payout.exchange_rate_estimated:
        words += ESTIMATED_RATE
    return words


def _donation_account(gift: Gift | None) -> str:
    return f"{DONATIONS}: {(gift.appeal if gift and gift.appeal else GENERAL_FUND)}"


def _line_postings(
    line: PayoutLine,
    ctx: _Context,
    donation_gifts: dict[uuid.UUID, Gift],
    provider: str,
    post: Any,
    seen: frozenset[str] = frozenset(),
) -> None:
    """Post one line: its postings always add up to minus the line's amount (a line in is a credit)."""
    unmatched = line.matched_at is None
    if unmatched:
        post(SUSPENSE_UNMATCHED, -line.amount, f"unmatched {line.kind} {line.provider_type}".strip(), line)
        return
    kind = line.kind
    if kind in (FEE, ACCOUNT_FEE):
        post(f"{FEES}: {provider}", -line.amount, f"fee on {line.fee_for or 'the account'}", line)
    elif kind == GIFT:
        gift = ctx.gifts.get(line.gift_id) if line.gift_id else None
        post(
            _donation_account(gift),
            -line.amount,
            "regular gift" if gift and gift.regular_gift_id else "gift",
            line,
            line.gift_id,
        )
    elif kind == ORDER:
        _order_postings(line, ctx, donation_gifts, post)
    elif kind in (REFUND, REFUND_RETURNED) or line.refund_id is not None:
        # A matched line naming a refund is that refund's money: given back, or (positive: a GoCardless
        # `refund_funds_returned`, a Stripe `refund_failure`) back with us after the refund failed.
        _refund_postings(line, ctx, post)
    elif kind in (DISPUTE, DISPUTE_REVERSAL, CHARGEBACK, LATE_FAILURE):
        _dispute_postings(line, ctx, post)
    elif kind == PAYOUT_FAILURE:
        _payout_failure_postings(line, ctx, donation_gifts, provider, post, seen)
    else:
        post(SUSPENSE_UNMATCHED, -line.amount, f"{kind} {line.provider_type}".strip(), line)


def _payout_failure_postings(
    line: PayoutLine,
    ctx: _Context,
    donation_gifts: dict[uuid.UUID, Gift],
    provider: str,
    post: Any,
    seen: frozenset[str],
) -> None:
    """A failed Stripe payout's money, paid out again in this payout. The failed payout never reached the bank and
    the journal posts nothing for it, so what it settled (its gifts, sales, refunds, disputes and fees) reaches
    the bank now: its lines are posted here, each under its own source id. Unknown lines (never loaded) are
    suspense, and so is any difference between this line and the failed payout's lines."""
    failed = ctx.failed_payouts.get(line.source_id or "")
    if failed is None or failed.provider_payout_id in seen:
        post(SUSPENSE_UNMATCHED, -line.amount, f"failed payout {line.source_id} not found", line)
        return
    ref = failed.provider_payout_id
    if failed.lines_loaded_at is None:
        post(SUSPENSE_NOT_LOADED, -line.amount, f"failed payout {ref} paid out again: its lines are not loaded", line)
        return

    def again(account: str, amount: int, description: str, inner: PayoutLine | None = None, r: Any = None) -> None:
        post(account, amount, f"{description} (failed payout {ref} paid out again)", inner or line, r)

    failed_lines = ctx.lines_by_payout.get(failed.id, [])
    for failed_line in failed_lines:
        _line_postings(failed_line, ctx, donation_gifts, provider, again, seen | {ref})
    left = line.amount - sum(failed_line.amount for failed_line in failed_lines)
    if left:
        post(SUSPENSE_DISCREPANCY, -left, f"failed payout {ref} paid out again less its lines", line)


def _order_postings(line: PayoutLine, ctx: _Context, donation_gifts: dict[uuid.UUID, Gift], post: Any) -> None:
    order = ctx.orders.get(line.order_id) if line.order_id else None
    if order is None:
        post(SUSPENSE_UNMATCHED, -line.amount, "order not found", line)
        return
    gift = ctx.gifts.get(line.gift_id) if line.gift_id else donation_gifts.get(order.id)
    if order.duplicate_of_id is not None:  # whatever its status since (refunded, say)
        parts = [
            (DUPLICATE_PAYMENTS, order.goods_amount + order.vat_amount, "basket paid twice: goods to refund"),
            (_donation_account(gift), order.donation_amount, "donation with an order"),
        ]
    else:
        parts = [
            (TRADING, order.goods_amount, "shirts"),
            (VAT_OUTPUT, order.vat_amount, "VAT on shirts"),
            (_donation_account(gift), order.donation_amount, "donation with an order"),
        ]
    left = line.amount
    for account, amount, description in parts:
        post(account, -amount, description, line, order.id)
        left -= amount
    if left:
        # The charge is not what the order says it was: finance looks at it.
        post(SUSPENSE_DISCREPANCY, -left, "charge differs from the order's total", line, order.id)
    if order.duplicate_of_id is None:
        # The partner's share of the shirts is owed to them: a cost of the sale and a creditor. As sold, whatever
        # happened since: the refund or lost dispute that takes goods back posts the change it makes, so this
        # period's postings stay the same when it is exported again.
        goods_total = order.goods_amount + order.vat_amount
        sold = _partner_shares(ctx.order_lines.get(order.id, []), ctx.campaigns, goods_total, 0, {})
        _post_partner_shares(sold, ctx.campaigns, post, 1, "", line, order.id)


def _partner_shares(
    lines: Sequence[OrderLine],
    campaigns: dict[uuid.UUID, PartnerCampaign],
    goods_total: int,
    goods_returned: int,
    returned: dict[uuid.UUID, int],
) -> dict[uuid.UUID, int]:
    """Each campaign's share of a basket once `goods_returned` (VAT included) of its `goods_total` went back and
    `returned` shirts of each line (by line id) were sent back, by the shop's rule (`shop.partner_share_after`, the
    one behind the partner statement): nothing once the goods went back in full, else the share of the shirts
    kept."""
    shares: dict[uuid.UUID, int] = defaultdict(int)
    for line in lines:
        if line.partner_campaign_id is not None:
            shares[line.partner_campaign_id] += shop.partner_share_after(
                campaigns.get(line.partner_campaign_id),
                line,
                goods_total=goods_total,
                goods_returned=goods_returned,
                returned=min(returned.get(line.id, 0), line.quantity),
            )
    return shares


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _placed(returns: Sequence[OrderReturn], moments: Sequence[dt.datetime]) -> dict[int, list[OrderReturn]]:
    """Where each return (oldest recorded first) goes among the basket's refunds and lost disputes, in the order
    the rule takes them, `moments` being when we recorded each: after the last of them we had recorded when the
    return was (-1: before them all). What we knew then, never the provider's times: a return recorded after a
    refund was (so, perhaps, after the refund was exported) goes after it and leaves its postings as they were."""
    placed: dict[int, list[OrderReturn]] = defaultdict(list)
    for returned in sorted(returns, key=lambda r: (_utc(r.recorded_at), str(r.id))):
        at = _utc(returned.recorded_at)
        place = max((i for i, moment in enumerate(moments) if _utc(moment) <= at), default=-1)
        placed[place].append(returned)
    return placed


def _take_returns(
    returns: Sequence[OrderReturn],
    lines: Sequence[OrderLine],
    campaigns: dict[uuid.UUID, PartnerCampaign],
    goods_total: int,
    goods_returned: int,
    sent_back: dict[uuid.UUID, int],
    shares: dict[uuid.UUID, int],
    return_shares: dict[uuid.UUID, dict[uuid.UUID, int]],
) -> dict[uuid.UUID, int]:
    """Count these returns (recorded at one place among the basket's refunds and disputes) in `sent_back`, each
    with the change it makes to the `shares` (into `return_shares`); the shares after them."""
    for returned in returns:
        sent_back[returned.order_line_id] += returned.quantity
        after = _partner_shares(lines, campaigns, goods_total, goods_returned, sent_back)
        return_shares[returned.id] = _share_change(shares, after)
        shares = after
    return shares


def _share_change(before: dict[uuid.UUID, int], after: dict[uuid.UUID, int]) -> dict[uuid.UUID, int]:
    return {
        c: after.get(c, 0) - before.get(c, 0)
        for c in before.keys() | after.keys()
        if after.get(c, 0) != before.get(c, 0)
    }


def _post_partner_shares(
    shares: dict[uuid.UUID, int],
    campaigns: dict[uuid.UUID, PartnerCampaign],
    post: Any,
    sign: int,
    words: str,
    line: PayoutLine | None,
    ref: Any,
    part: tuple[int, int] | None = None,
) -> None:
    """Dr `Trading: partner shares` / Cr `Partner shares owed: <campaign>` with each campaign's share (or, for a
    change that lowers it, the other way round), times `sign`; `part` (this line's money, the whole's) for a line
    that carries part of a refund's or dispute's money: its share of the change, rounded half up."""
    for campaign_id, whole in sorted(shares.items(), key=lambda kv: str(kv[0])):
        share = whole if part is None else percent_of(part[0], whole, part[1])
        campaign = campaigns.get(campaign_id)
        code = campaign.code if campaign else str(campaign_id)
        post(PARTNER_COST, sign * share, f"partner share {code}{words}", line, ref)
        post(f"{PARTNER_OWED}: {code}", -sign * share, f"partner share {code}{words}", line, ref)


def _allocated(refund: Refund) -> bool:
    """The service allocates a refund to the goods and the donation once it has succeeded; one still pending at the
    provider (its money already out of the balance, so in a payout) or that failed before it succeeded has none."""
    return bool(refund.order_amount or refund.gift_amount)


def _goods_part(refund: Refund, magnitude: int, goods: int | None = None) -> int:
    """The part of `magnitude` (a refund's money) that gave back goods: by the refund's allocation, or `goods` (its
    goods part by the allocation rule, `_returned_vat`) when it has none yet."""
    if not refund.order_id:
        return 0
    if _allocated(refund):
        return min(refund.order_amount, magnitude)
    if goods is not None:
        return min(goods, magnitude)
    # Not allocated and not worked out by the rule: an order without a donation is all goods.
    return 0 if refund.gift_id else magnitude


def _refund_order_key(refund: Refund) -> tuple[dt.datetime, dt.datetime, str]:
    return (refund.refunded_at or refund.created_at, refund.created_at, str(refund.id))


def _returned_goods(
    session: Session,
    orders: dict[uuid.UUID, Order],
    order_lines: dict[uuid.UUID, list[OrderLine]],
    campaigns: dict[uuid.UUID, PartnerCampaign],
    order_ids: Iterable[uuid.UUID],
) -> dict[str, Any]:
    """The VAT given back by each refund and each lost dispute of these orders (the orders must be in `orders`):
    `refund_vat` (by refund id), `refund_goods` (by refund id: its goods part, VAT included) and `dispute_goods` (by
    dispute id: its goods part, VAT included, and the VAT in it); and the change each makes to the partner shares,
    `refund_shares` and `dispute_shares` (below).

    A refund not allocated yet (still pending at the provider, or failed before it succeeded) is given its goods
    part by the allocation rule at its place (payments/shop.py: goods first, up to what the refunds before it left),
    as the service will allocate it once it succeeds: a shirt's refund in a payout before it succeeded is the
    shirt's, not the basket's donation's.

    Rounded once per order, not once per refund: a refund's VAT is the VAT inside all the goods refunded on the
    order up to and including it, less the VAT inside the goods refunded before it (oldest first, every refund of
    the order whatever payout or period it is in). So the VAT given back never exceeds the VAT the order charged
    (three refunds of £10.00 on a £30.00 order with £5.00 VAT give back £1.67, £1.66 and £1.67), and each refund's
    VAT and shirts add up to its goods part. A refund that failed or was cancelled took nothing back in the end: it
    is given the VAT it would have at its place, its `refund_funds_returned` line reverses that same VAT, and the
    refunds after it are counted as if it had not happened.

    A lost dispute took the sale's money back as surely as a refund: by the allocation rule (payments/shop.py,
    `split_returns`: goods first, refunds before disputes) its goods part is what the refunds left of the goods, and
    it gives back the VAT inside that part, counted on after the refunds' (so all of them together never give back
    more than the order charged).

    Partner shares follow the same places: the order line posts the shares as sold, and each refund or lost
    dispute the change from the shares after the ones before it to the shares after it too (`_partner_shares`, by
    the goods taken back so far). So each period's postings stay as exported whatever happens later (a refund in
    April changes nothing in March), and once every payout is exported the books owe what the partner statement
    says. A refund that failed or was cancelled has the change of its place (its `refund_funds_returned` line
    reverses it) and is not counted before the later ones, as for the VAT. The returns staff recorded (dated
    `OrderReturn` rows) take their places among them too (`_placed`: after the refunds and disputes we had recorded
    when the return was), each with the change it makes, `return_shares` (posted by `return_postings` on its day);
    the refunds and disputes after a return count its shirts as sent back.
    """
    wanted = sorted(
        (i for i in order_ids if (o := orders.get(i)) is not None and o.goods_amount + o.vat_amount), key=str
    )
    by_order: dict[uuid.UUID, list[Refund]] = defaultdict(list)
    lost_by_order: dict[uuid.UUID, list[Dispute]] = defaultdict(list)
    returns_by_order: dict[uuid.UUID, list[OrderReturn]] = defaultdict(list)
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        for refund in session.exec(select(Refund).where(col(Refund.order_id).in_(chunk))).all():
            by_order[refund.order_id].append(refund)  # type: ignore[index]
        for dispute in session.exec(
            select(Dispute).where(
                col(Dispute.order_id).in_(chunk), Dispute.status == DisputeStatus.LOST, Dispute.kind == "dispute"
            )
        ).all():
            lost_by_order[dispute.order_id].append(dispute)  # type: ignore[index]
        for returned in session.exec(select(OrderReturn).where(col(OrderReturn.order_id).in_(chunk))).all():
            returns_by_order[returned.order_id].append(returned)
    vat: dict[uuid.UUID, int] = {}
    refund_goods: dict[uuid.UUID, int] = {}
    dispute_goods: dict[uuid.UUID, tuple[int, int]] = {}
    refund_shares: dict[uuid.UUID, dict[uuid.UUID, int]] = {}
    dispute_shares: dict[uuid.UUID, dict[uuid.UUID, int]] = {}
    return_shares: dict[uuid.UUID, dict[uuid.UUID, int]] = {}
    for order_id in wanted:
        order = orders[order_id]
        goods_total = order.goods_amount + order.vat_amount
        # A basket paid twice sold nothing: no share to change.
        lines = order_lines.get(order_id, []) if order.duplicate_of_id is None else []
        if not any(line.partner_campaign_id for line in lines):
            lines = []
        refunds = sorted(by_order.get(order_id, []), key=_refund_order_key)
        # As `payments.repository.lost_disputes_of` orders them for the allocation rule.
        lost = sorted(lost_by_order.get(order_id, []), key=lambda d: (d.opened_at or d.created_at, str(d.id)))
        placed = _placed(
            returns_by_order.get(order_id, []),
            [r.created_at for r in refunds] + [d.created_at for d in lost],
        )
        goods_so_far = posted = 0
        sent_back: dict[uuid.UUID, int] = defaultdict(int)
        shares = _partner_shares(lines, campaigns, goods_total, 0, sent_back)

        shares = _take_returns(placed.get(-1, []), lines, campaigns, goods_total, 0, sent_back, shares, return_shares)
        for place, refund in enumerate(refunds):
            by_rule = None if _allocated(refund) else min(refund.amount, max(goods_total - goods_so_far, 0))
            refund_goods[refund.id] = _goods_part(refund, refund.amount, by_rule)
            goods = goods_so_far + refund_goods[refund.id]
            inside = percent_of(min(goods, goods_total), order.vat_amount, goods_total)
            vat[refund.id] = inside - posted
            after = _partner_shares(lines, campaigns, goods_total, goods, sent_back)
            refund_shares[refund.id] = _share_change(shares, after)
            if refund.status in (RefundStatus.SUCCEEDED, RefundStatus.PENDING):
                goods_so_far, posted, shares = goods, inside, after
            shares = _take_returns(
                placed.get(place, []), lines, campaigns, goods_total, goods_so_far, sent_back, shares, return_shares
            )
        for place, dispute in enumerate(lost, start=len(refunds)):
            goods_part = max(min(dispute.amount, goods_total - goods_so_far), 0)
            goods = goods_so_far + goods_part
            inside = percent_of(min(goods, goods_total), order.vat_amount, goods_total)
            dispute_goods[dispute.id] = (goods_part, inside - posted)
            after = _partner_shares(lines, campaigns, goods_total, goods, sent_back)
            dispute_shares[dispute.id] = _share_change(shares, after)
            goods_so_far, posted, shares = goods, inside, after
            shares = _take_returns(
                placed.get(place, []), lines, campaigns, goods_total, goods_so_far, sent_back, shares, return_shares
            )
    return {
        "refund_vat": vat,
        "refund_goods": refund_goods,
        "dispute_goods": dispute_goods,
        "refund_shares": refund_shares,
        "dispute_shares": dispute_shares,
        "return_shares": return_shares,
    }


def _dispute_postings(line: PayoutLine, ctx: _Context, post: Any) -> None:
    """Money a dispute, chargeback or late failure took (or a won dispute gave back): `Chargebacks and disputes`.
    A lost dispute on a basket also took back the sale's goods: the VAT inside its goods part is no longer owed
    (Dr `VAT output`, as a refund's), and the goods part of a basket paid twice is the money held for the donor
    (Dr `Duplicate shop payments to refund`). A reversal (a dispute won) posts only to `Chargebacks and disputes`:
    the dispute is then won, with no goods part."""
    description = line.kind.replace("_", " ")
    dispute = ctx.disputes.get(line.dispute_id) if line.dispute_id else None
    taken = ctx.dispute_goods.get(dispute.id) if dispute is not None else None
    order = ctx.orders.get(dispute.order_id) if dispute is not None and dispute.order_id else None
    magnitude = -line.amount
    if dispute is None or taken is None or order is None or magnitude <= 0 or not taken[0]:
        post(CHARGEBACKS, magnitude, description, line, line.dispute_id)
        return
    goods_part, vat = taken
    if magnitude != dispute.amount and dispute.amount:
        # A line for part of the dispute's money: its share of the goods and of their VAT.
        goods_part, vat = percent_of(magnitude, goods_part, dispute.amount), percent_of(magnitude, vat, dispute.amount)
    goods_part = min(goods_part, magnitude)
    if order.duplicate_of_id is not None:
        post(DUPLICATE_PAYMENTS, goods_part, "basket paid twice: goods taken back by a dispute", line, dispute.id)
        post(CHARGEBACKS, magnitude - goods_part, description, line, dispute.id)
        return
    vat = min(vat, goods_part)
    post(VAT_OUTPUT, vat, "VAT on shirts taken back by a lost dispute", line, dispute.id)
    post(CHARGEBACKS, magnitude - vat, description, line, dispute.id)
    part = (magnitude, dispute.amount) if magnitude != dispute.amount and dispute.amount else None
    shares = ctx.dispute_shares.get(dispute.id, {})
    _post_partner_shares(
        shares, ctx.campaigns, post, 1, ": shirts taken back by a lost dispute", line, dispute.id, part
    )


def _refund_postings(line: PayoutLine, ctx: _Context, post: Any) -> None:
    refund = ctx.refunds.get(line.refund_id) if line.refund_id else None
    sign = 1 if line.amount <= 0 else -1  # refund_funds_returned reverses a refund
    magnitude = abs(line.amount)
    if refund is None:
        post(SUSPENSE_UNMATCHED, -line.amount, "refund not found", line)
        return
    by_rule = ctx.refund_goods.get(refund.id)
    goods_part = _goods_part(refund, magnitude, by_rule)
    donation_part = magnitude - goods_part
    order = ctx.orders.get(refund.order_id) if refund.order_id else None
    if goods_part and order is not None and order.duplicate_of_id is not None:
        # The money held for a basket paid twice goes back: no sale, no VAT to take back.
        post(DUPLICATE_PAYMENTS, sign * goods_part, "basket paid twice: goods refunded", line, refund.id)
    elif goods_part:
        vat = ctx.refund_vat.get(refund.id, 0)
        refund_goods = _goods_part(refund, refund.amount, by_rule)
        if goods_part != refund_goods and refund_goods:
            # A line for part of the refund's money: its share of the refund's VAT.
            vat = percent_of(goods_part, vat, refund_goods)
        vat = min(vat, goods_part)
        post(VAT_OUTPUT, sign * vat, "VAT on shirts refunded", line, refund.id)
        post(REFUNDS_SHIRTS, sign * (goods_part - vat), "shirts refunded", line, refund.id)
        part = (goods_part, refund_goods) if goods_part != refund_goods and refund_goods else None
        words = ": shirts refunded" if sign > 0 else ": the refund failed"
        _post_partner_shares(
            ctx.refund_shares.get(refund.id, {}), ctx.campaigns, post, sign, words, line, refund.id, part
        )
    if donation_part:
        post(REFUNDS_DONATIONS, sign * donation_part, "donation refunded", line, refund.id)


def balances(postings: Sequence[Posting]) -> dict[str, int]:
    """Each entry's sum of postings (all zero when the journal balances), counted in each currency apart: an entry
    of a converted payout has postings in two currencies, and pence of one never pay for pence of another. An entry
    that does not balance in some currency gets that currency's sum (the first such, by currency)."""
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for posting in postings:
        totals[posting.entry][posting.currency] += posting.amount
    return {entry: next((sums[c] for c in sorted(sums) if sums[c]), 0) for entry, sums in totals.items()}


def _plain(amount: int, currency: str) -> str:
    """`1234.50` in the currency's units: a payout can be in any currency the provider pays out, not only those
    `core.money` formats (zero-decimal ones, such as yen, are counted in whole units)."""
    if currency.upper() in ZERO_DECIMAL_CURRENCIES:
        return str(amount)
    try:
        return Money(amount, Currency(currency.upper())).plain()
    except ValueError:  # not a Currency: two decimals, as every other currency Stripe and GoCardless pay out
        return f"{Decimal(amount).scaleb(-2):.2f}"


def write_csv(postings: Sequence[Posting], out: IO[str]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for p in postings:
        money = _plain(abs(p.amount), p.currency)
        writer.writerow(
            [
                p.date.isoformat(),
                p.entry,
                p.account,
                money if p.amount > 0 else "",
                money if p.amount < 0 else "",
                p.currency,
                p.description,
                p.provider_payout_id,
                p.source_id,
                p.reference_id,
            ]
        )
