"""The shop's rules: stock, how a refund on a mixed basket is allocated, partner shares, fulfilment, statements.

Allocation rule (documented in docs/payments.md; staff can re-allocate a refund): a refund on a basket is taken
from the goods first (the usual case is a shirt sent back), up to what is left of the goods; the rest comes off the
donation line. A refund of the whole basket covers both.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

import sqlalchemy as sa
from babel import Locale
from babel.lists import format_list
from sqlmodel import Session, col, select

from core.clock import UK, uk_date, utc_now
from core.db import UnitOfWork
from core.errors import BadRequest
from core.money import percent_of
from core.settings import ShopSettings
from crm.models import Supporter
from payments import repository
from payments.errors import OrderNotFound, PaymentsError
from payments.models import Gift, Order, OrderLine, OrderReturn, OrderStatus, PartnerCampaign, Product, Sku

log = logging.getLogger(__name__)


class OrderNotFulfillable(BadRequest, PaymentsError):
    """The order is not in a state for this (not paid, or refunded)."""

    status_code = 409


# Postage (docs/checkout.md, "Postage"). The prices include postage to `[shop] uk_postage_countries`; an order posted
# anywhere else pays `[shop] international_postage` once, as an order line of its own: part of the sale (goods, with
# the goods' VAT rate), never a shirt (no SKU row, no stock, no partner share). With no international price set, the
# shop does not post abroad and the checkout refuses such an address.
POSTAGE_SKU = "POSTAGE"
POSTAGE_LINE_NAME = "Postage outside the UK"


# How the page and the refusal name countries of `uk_postage_countries`: the UK and the Channel Islands (both of
# Guernsey and Jersey) as people say them, any other by its English name from babel (CLDR), "the" before the names
# that take it.
_UK = "the UK"
_CHANNEL_ISLANDS = frozenset({"GG", "JE"})
_NAMES_WITH_THE = frozenset({"Netherlands", "Bahamas", "Gambia", "Philippines", "Maldives", "Seychelles"})


def _country_name(code: str) -> str:
    name = Locale("en", "GB").territories.get(code) or code
    if name in _NAMES_WITH_THE or name.startswith(("United ", "Isle of ")) or name.endswith(("Islands", "Republic")):
        return f"the {name}"
    return name


def postage_area(settings: ShopSettings) -> str:
    """Where the prices include postage, in words: "the UK, the Channel Islands and the Isle of Man"."""
    codes = settings.uk_postage
    names = [_UK] if "GB" in codes else []
    if codes >= _CHANNEL_ISLANDS:
        names.append("the Channel Islands")
    rest = codes - {"GB"} - (_CHANNEL_ISLANDS if codes >= _CHANNEL_ISLANDS else frozenset())
    names += sorted((_country_name(code) for code in rest), key=lambda name: name.removeprefix("the "))
    return format_list(names, locale="en_GB")


def no_postage_there(settings: ShopSettings) -> str:
    """The checkout's refusal of an address the shop does not post to."""
    return f"Sorry, we can only post shirts to addresses in {postage_area(settings)}"


def postage_for(settings: ShopSettings, country: str) -> int | None:
    """What posting an order to `country` costs the buyer, in pence (0: the prices include it); None when the shop
    does not post there."""
    if country.upper() in settings.uk_postage:
        return 0
    return settings.international_postage or None


def is_postage(line: OrderLine) -> bool:
    return line.sku == POSTAGE_SKU


def take_stock(uow: UnitOfWork, order: Order) -> None:
    """A paid order takes its shirts from stock. Stock may go negative: the order was paid (stock is checked at the
    checkout, not reserved), so the sale stands; a warning is logged and the SKU heads the low-stock list."""
    shirts = [line for line in _lines(uow, order) if not is_postage(line)]
    for line in sorted(shirts, key=lambda line: line.sku):  # SKU rows are locked in code order
        stock = _adjust(uow, line.sku, -line.quantity)
        if stock is not None and stock < 0:
            log.warning("SKU %s oversold: stock %d after order %s was paid", line.sku, stock, order.id)


def return_stock(uow: UnitOfWork, line: OrderLine, quantity: int) -> None:
    """Shirts refunded go back into stock (postage is no stock)."""
    if not is_postage(line):
        _adjust(uow, line.sku, quantity)


def shelved(order: Order) -> bool:
    """The shirts of a paid basket are back on the shelves, not sold: its goods were refunded in full (refunds or
    lost disputes) before it was posted. They never left, so no return will ever be recorded for them."""
    return (
        order.fulfilled_at is None
        and order.status in (OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED)
        and goods_refunded_in_full(order)
    )


def restock_if_refunded_unposted(uow: UnitOfWork, order: Order, *, shelved_before: bool) -> None:
    """The basket's goods were refunded in full before it was posted (`shelved` now, not before): its shirts go
    back into stock, those not already given back by a recorded return; a refund that failed after succeeding (no
    longer refunded in full) takes them again. Only when that changes, and the order's `refunded_amount` is
    computed afresh from every refund, so duplicates and any order of events restore them once. The caller holds
    the order's lock and passes `shelved(order)` read before the refunds were recomputed."""
    now_shelved = shelved(order)
    if now_shelved == shelved_before:
        return
    shirts = [line for line in _lines(uow, order) if not is_postage(line)]
    for line in sorted(shirts, key=lambda line: line.sku):  # SKU rows are locked in code order
        left = line.quantity - line.refunded_quantity
        if left > 0:
            _adjust(uow, line.sku, left if now_shelved else -left)


def allocate_refund(order: Order, amount: int) -> tuple[int, int]:
    """(goods part, donation part) of a refund of `amount` on `order`, by the rule above."""
    goods_left = max(order.goods_amount + order.vat_amount - _goods_refunded(order), 0)
    goods_part = min(amount, goods_left)
    return goods_part, amount - goods_part


def _goods_refunded(order: Order) -> int:
    # refunded_amount counts only the goods part; the donation part is returned on the gift.
    return order.refunded_amount


def _lines(uow: UnitOfWork, order: Order) -> list[OrderLine]:
    return list(uow.session.exec(select(OrderLine).where(OrderLine.order_id == order.id)).all())


def _adjust(uow: UnitOfWork, sku_code: str, delta: int) -> int | None:
    """Add `delta` to a SKU's stock in one statement, `stock = stock + delta`, and return the new stock (None for a
    SKU we do not sell any more). Atomic: two orders paid at once each take their shirts, where reading the stock
    and writing back `old + delta` would lose one (the second waits on the first's row lock, then adds to what it
    committed)."""
    statement = (
        sa.update(Sku)
        .where(col(Sku.sku) == sku_code)
        .values(stock=col(Sku.stock) + delta)
        .returning(col(Sku.stock))
        .execution_options(synchronize_session="fetch")
    )
    return uow.session.execute(statement).scalar_one_or_none()


def split_returns(goods_total: int, amounts: list[int], *, goods_taken: int = 0) -> list[tuple[int, int]]:
    """(goods part, donation part) of each amount returned on a basket, oldest first, by the rule above.

    Applied to every refund and lost dispute of the basket in the order they happened, so the split does not depend
    on the order the provider's events arrived in. `goods_taken` is what staff re-allocations already put on goods.
    """
    parts = []
    goods_left = max(goods_total - goods_taken, 0)
    for amount in amounts:
        goods_part = min(amount, goods_left)
        goods_left -= goods_part
        parts.append((goods_part, amount - goods_part))
    return parts


# Prices, VAT and partner shares. A line's `unit_price` is what the buyer pays for one shirt (VAT included when VAT
# is on); `vat_amount` is the VAT inside `unit_price * quantity`, so the line's net is the difference.

SHARE_PER_ITEM = "per_item"
SHARE_PERCENT_OF_NET = "percent_of_net"


def vat_included(gross: int, rate_bp: int) -> int:
    """The VAT inside a VAT-inclusive price at `rate_bp` basis points (2000 = 20%: a sixth), rounded half up."""
    if rate_bp <= 0:
        return 0
    return percent_of(gross, rate_bp, 10_000 + rate_bp)


def line_net(line: OrderLine) -> int:
    return line.unit_price * line.quantity - line.vat_amount


def goods_refunded_in_full(order: Order) -> bool:
    """Every penny of the basket's goods (VAT included) went back: by refunds or lost disputes."""
    return _all_goods_back(order.goods_amount + order.vat_amount, order.refunded_amount)


def _all_goods_back(goods_total: int, goods_returned: int) -> bool:
    return goods_total > 0 and goods_returned >= goods_total


def kept_after(line: OrderLine, *, goods_total: int, goods_returned: int, returned: int) -> int:
    """Shirts of the line still sold once `goods_returned` of the basket's `goods_total` (VAT included) went back
    and `returned` of the line's shirts were sent back: none once the goods were refunded in full (sent back or
    not, nothing was sold), else those not sent back. A refund of part of the goods without a return recorded (a
    goodwill refund) keeps the shirts: only staff know which shirts came back, and they record it as a return."""
    if _all_goods_back(goods_total, goods_returned):
        return 0
    return max(line.quantity - returned, 0)


def shirts_kept(line: OrderLine, order: Order) -> int:
    """Shirts of the line still sold now (`kept_after` the order's goods refunded and the line's returns)."""
    return kept_after(
        line,
        goods_total=order.goods_amount + order.vat_amount,
        goods_returned=order.refunded_amount,
        returned=line.refunded_quantity,
    )


def kept_net(line: OrderLine, kept: int) -> int:
    """The net (VAT excluded) of `kept` shirts of the line: the line's net shared per shirt, rounded half up."""
    if kept <= 0 or line.quantity <= 0:
        return 0
    return percent_of(line_net(line), kept, line.quantity)


def partner_share_for(campaign: PartnerCampaign, line: OrderLine, quantity: int | None = None) -> int:
    """The partner's share of `quantity` shirts of the line (default: those not sent back)."""
    kept = line.quantity - line.refunded_quantity if quantity is None else quantity
    return partner_share_of(campaign, net=line_net(line), quantity=line.quantity, kept=kept)


def partner_share_of(campaign: PartnerCampaign, *, net: int, quantity: int, kept: int) -> int:
    """The partner's share of `kept` of `quantity` shirts whose net (ex VAT) is `net`: pence per shirt, or basis
    points of the net of the shirts kept, rounded once. The one rule, for a basket being priced and for a line sold."""
    if kept <= 0 or quantity <= 0:
        return 0
    if campaign.share_kind == SHARE_PERCENT_OF_NET:
        return percent_of(net * kept, campaign.share_value, 10_000 * quantity)
    return campaign.share_value * kept


def partner_share_after(
    campaign: PartnerCampaign | None, line: OrderLine, *, goods_total: int, goods_returned: int, returned: int
) -> int:
    """The partner's share of the line once `goods_returned` of the basket's goods went back and `returned` of its
    shirts were sent back (`kept_after`): the one rule behind the order line's share (so the partner statement) and
    the journal's partner share postings (payments/journal.py: as sold, and each change a refund or lost dispute
    makes), so the books and the statement agree."""
    if campaign is None:
        return 0
    kept = kept_after(line, goods_total=goods_total, goods_returned=goods_returned, returned=returned)
    return partner_share_for(campaign, line, kept)


def recompute_partner_share(session: Session, line: OrderLine, order: Order | None = None) -> int:
    """Set the line's partner share from its campaign and the shirts still kept (`shirts_kept`) after a return or
    refund. Changes nothing when the share is right already."""
    if line.partner_campaign_id is None:
        return 0
    if order is None:
        order = session.get(Order, line.order_id)
    share = partner_share_after(
        session.get(PartnerCampaign, line.partner_campaign_id),
        line,
        goods_total=order.goods_amount + order.vat_amount if order is not None else 0,
        goods_returned=order.refunded_amount if order is not None else 0,
        returned=line.refunded_quantity,
    )
    if share != line.partner_share_amount:
        line.partner_share_amount = share
        session.add(line)
    return share


def recompute_partner_shares(session: Session, order: Order) -> None:
    """Every line's partner share, after the money returned on the order changed (a refund or a lost dispute)."""
    for line in session.exec(select(OrderLine).where(OrderLine.order_id == order.id)).all():
        recompute_partner_share(session, line, order)


# Orders for staff


def get_order(session: Session, order_id: uuid.UUID) -> Order:
    order = session.get(Order, order_id)
    if order is None:
        raise OrderNotFound(f"no order {order_id}")
    return order


# An order held, not posted: its supporter's data was erased (before or after it was paid), so there is no address
# to post the shirts to. Staff refund it at Stripe (a review item asks them to when it is paid after the erasure).
NO_ADDRESS = "no_address"


def erased_supporters(session: Session, supporter_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Those of these supporters whose data was erased (no address left to post anything to)."""
    wanted = sorted(set(supporter_ids), key=str)
    if not wanted:
        return set()
    return set(
        session.exec(
            select(Supporter.id).where(col(Supporter.id).in_(wanted), col(Supporter.erased_at).is_not(None))
        ).all()
    )


def held_reason(order: Order, erased: bool) -> str | None:
    """Why a paid order that is not posted yet cannot be posted (`NO_ADDRESS`), or None."""
    if erased and order.fulfilled_at is None and order.status in (OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED):
        return NO_ADDRESS
    return None


def mark_fulfilled(uow: UnitOfWork, order_id: uuid.UUID) -> Order:
    """Staff posted the shirts (`fulfil`, without saying whether this call posted them)."""
    return fulfil(uow, order_id)[0]


def fulfil(uow: UnitOfWork, order_id: uuid.UUID) -> tuple[Order, bool]:
    """Staff posted the shirts: the order, and whether this call marked it (False: it was posted already, and
    nothing changed, so the caller audits nothing either). Only a paid order whose shirts were not refunded in full
    can be fulfilled. An order of a supporter whose data was erased has no address to post to: refused (refund it
    instead). The order is read `FOR UPDATE` (PostgreSQL; SQLite serialises writers): two marks at once are one
    change, the second sees the first's."""
    order = repository.order_locked(uow.session, order_id)
    if order is None:
        raise OrderNotFound(f"no order {order_id}")
    if order.fulfilled_at is not None:
        return order, False
    if order.status not in (OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED):
        raise OrderNotFulfillable(f"order {order_id} is {order.status}: only a paid order can be fulfilled")
    if goods_refunded_in_full(order):
        # A basket whose shirts were refunded and whose donation was kept is partly refunded, but nothing is sold.
        raise OrderNotFulfillable(f"order {order_id} has its shirts refunded in full: there is nothing to post")
    if erased_supporters(uow.session, [order.supporter_id]):
        raise OrderNotFulfillable(
            f"order {order_id} has no address to post to: the supporter's data was erased; refund it at Stripe"
        )
    now = utc_now()
    order.fulfilled_at = now
    order.updated_at = now
    uow.session.add(order)
    uow.session.flush()
    return order, True


def record_returns(uow: UnitOfWork, order_id: uuid.UUID, returns: list[dict[str, Any]]) -> Order:
    """Shirts sent back, per line: `[{"line_id" or "sku", "quantity"}]`. Stock goes back, the partner's share is
    recomputed and each line's return is kept, dated (`OrderReturn`: the journal's). Refuses (nothing written) a
    quantity larger than what is left on the line.

    The order and its lines are read with `FOR UPDATE` (PostgreSQL; SQLite serialises writers anyway): two returns
    recorded at once are checked one after the other, so the second sees what the first took and is refused whole
    if it asks for more than is left."""
    session = uow.session
    order = repository.order_locked(session, order_id)
    if order is None:
        raise OrderNotFound(f"no order {order_id}")
    if order.status in (OrderStatus.PENDING, OrderStatus.CANCELLED, OrderStatus.DUPLICATE_PAYMENT):
        raise OrderNotFulfillable(f"order {order_id} is {order.status}: nothing was sold")
    lines = repository.all_locked(
        session, select(OrderLine).where(OrderLine.order_id == order.id).order_by(col(OrderLine.id))
    )
    plan: list[tuple[OrderLine, int]] = []
    for spec in returns:
        if not isinstance(spec, dict):
            raise BadRequest('each return is {"line_id" or "sku", "quantity"}')
        quantity = spec.get("quantity")
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
            raise BadRequest("quantity must be a positive whole number")
        line = next(
            (
                candidate
                for candidate in lines
                if str(candidate.id) == str(spec.get("line_id")) or (spec.get("sku") and candidate.sku == spec["sku"])
            ),
            None,
        )
        if line is None:
            raise BadRequest(f"order {order_id} has no line {spec.get('line_id') or spec.get('sku')}")
        already = sum(q for planned, q in plan if planned is line)
        if quantity + already > line.quantity - line.refunded_quantity:
            raise BadRequest(
                f"line {line.sku} has {line.quantity - line.refunded_quantity} shirt(s) left to return, not {quantity}"
            )
        plan.append((line, quantity))
    now = utc_now()
    on_shelves = shelved(order)
    for line, quantity in sorted(plan, key=lambda step: step[0].sku):  # SKU rows are locked in code order
        line.refunded_quantity += quantity
        uow.session.add(line)
        # Dated: the journal gives back the share it changes on this day (payments/journal.py, `return_postings`).
        uow.session.add(OrderReturn(order_id=order.id, order_line_id=line.id, quantity=quantity, recorded_at=now))
        if not on_shelves:  # shirts of a basket refunded in full before posting went back into stock then
            return_stock(uow, line, quantity)
        recompute_partner_share(uow.session, line, order)
    order.updated_at = now
    uow.session.add(order)
    uow.session.flush()
    return order


def _donation_returned(session: Session, order_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """What was returned of each order's donation line (its Gift's `returned_amount`), in one query."""
    if not order_ids:
        return {}
    rows = session.exec(select(Gift.order_id, Gift.returned_amount).where(col(Gift.order_id).in_(order_ids))).all()
    return {order_id: int(returned or 0) for order_id, returned in rows if order_id is not None}


def order_json(
    session: Session, order: Order, donation_returned: int | None = None, erased: bool | None = None
) -> dict[str, Any]:
    """The order for staff. `refunded` is all the money returned on the basket (refunds and lost disputes): its
    goods part (VAT included) in `goods_refunded`, its donation line's in `donation_refunded`, so a basket refunded
    in full has `refunded` equal to `total`. `held`: `no_address` for a paid order not posted whose supporter's data
    was erased (it cannot be posted), else None."""
    lines = session.exec(
        select(OrderLine).where(OrderLine.order_id == order.id).order_by(col(OrderLine.sku), col(OrderLine.id))
    ).all()
    if donation_returned is None:
        donation_returned = _donation_returned(session, [order.id]).get(order.id, 0)
    if erased is None:
        erased = bool(erased_supporters(session, [order.supporter_id]))
    return {
        "id": str(order.id),
        "supporter_id": str(order.supporter_id),
        "status": str(order.status),
        # A `duplicate_payment` order: the basket it paid for again (its lines are that basket's).
        "duplicate_of": str(order.duplicate_of_id) if order.duplicate_of_id else None,
        "fulfilled": order.fulfilled_at is not None,
        "fulfilled_at": order.fulfilled_at,
        "held": held_reason(order, erased),
        "paid_at": order.paid_at,
        "goods": _money(order.goods_amount, order.currency),
        "vat": _money(order.vat_amount, order.currency),
        "donation": _money(order.donation_amount, order.currency),
        "total": _money(order.goods_amount + order.vat_amount + order.donation_amount, order.currency),
        "refunded": _money(order.refunded_amount + donation_returned, order.currency),
        "goods_refunded": _money(order.refunded_amount, order.currency),
        "donation_refunded": _money(donation_returned, order.currency),
        "provider_ids": {
            k: v
            for k, v in {
                "checkout_session": order.stripe_checkout_session_id,
                "payment_intent": order.stripe_payment_intent_id,
                "charge": order.stripe_charge_id,
            }.items()
            if v
        },
        "lines": [
            {
                "id": str(line.id),
                "sku": line.sku,
                "product_name": line.product_name,
                "size": line.size,
                "quantity": line.quantity,
                "returned": line.refunded_quantity,
                "unit_price": _money(line.unit_price, order.currency),
                "vat": _money(line.vat_amount, order.currency),
                "partner_share": _money(line.partner_share_amount, order.currency),
            }
            for line in lines
        ],
    }


def list_orders(
    session: Session,
    *,
    status: str | None = None,
    unfulfilled: bool = False,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Newest paid first (then created, then id: a total order). `unfulfilled`: the packing list, the paid orders
    not posted yet that can be posted (not those held for want of an address, nor those whose shirts were refunded
    in full)."""
    query = select(Order).order_by(
        col(Order.paid_at).desc().nulls_last(), col(Order.created_at).desc(), col(Order.id).desc()
    )
    if status:
        query = query.where(Order.status == status)
    if unfulfilled:
        query = query.where(
            col(Order.fulfilled_at).is_(None),
            col(Order.status).in_([OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED]),
            # Not a basket whose shirts were refunded in full (its donation kept): nothing to post.
            col(Order.refunded_amount) < col(Order.goods_amount) + col(Order.vat_amount),
            col(Order.supporter_id).notin_(select(Supporter.id).where(col(Supporter.erased_at).is_not(None))),
        )
    if limit is not None:
        query = query.limit(limit)
    orders = list(session.exec(query.offset(offset)).all())
    returned = _donation_returned(session, [order.id for order in orders])
    erased = erased_supporters(session, [order.supporter_id for order in orders])
    return [
        order_json(session, order, returned.get(order.id, 0), erased=order.supporter_id in erased) for order in orders
    ]


# Stock


def stock_list(session: Session) -> list[dict[str, Any]]:
    """Every SKU of an active product, by product then size position."""
    rows = session.exec(
        select(Sku, Product)
        .join(Product, col(Product.id) == col(Sku.product_id))
        .where(col(Product.active).is_(True))
        .order_by(col(Product.code), col(Sku.position), col(Sku.sku))
    ).all()
    return [
        {
            "sku": sku.sku,
            "product": product.code,
            "name": product.name,
            "size": sku.size,
            "price": _money(sku.price, sku.currency),
            "stock": sku.stock,
        }
        for sku, product in rows
    ]


def low_stock(session: Session, threshold: int) -> list[dict[str, Any]]:
    """SKUs at or below the threshold (`[shop] low_stock_threshold`), fewest first."""
    rows = [row for row in stock_list(session) if row["stock"] <= threshold]
    return sorted(rows, key=lambda row: (row["stock"], row["sku"]))


# Partner statement


def partner_statement(
    session: Session, start: dt.date, end: dt.date, *, campaign_code: str | None = None
) -> dict[str, Any]:
    """What is owed to each partner for shirts of orders paid between `start` and `end` (UK dates, inclusive).

    A share is the line's `partner_share_amount` as it stands now: a return or refund already recomputed it, so a
    statement run again after a return shows the smaller amount owed. An order whose goods were refunded in full
    stays listed (it was paid in the period) with no shirt kept, no net sales and nothing owed.

    `end` may be the last date there is (`9999-12-31`, "everything from `start`"): the period then has no end.
    """
    since = _uk_midnight(start)
    until = _uk_midnight(end + dt.timedelta(days=1)) if end < dt.date.max else None
    campaigns_query = select(PartnerCampaign).order_by(col(PartnerCampaign.code))
    if campaign_code:
        campaigns_query = campaigns_query.where(PartnerCampaign.code == campaign_code)
    campaigns = list(session.exec(campaigns_query).all())
    if campaign_code and not campaigns:
        raise BadRequest(f"no partner campaign {campaign_code}")
    rows = session.exec(
        select(OrderLine, Order)
        .join(Order, col(Order.id) == col(OrderLine.order_id))
        .where(
            col(OrderLine.partner_campaign_id).in_([c.id for c in campaigns]),
            col(Order.status).in_([OrderStatus.PAID, OrderStatus.PARTIALLY_REFUNDED, OrderStatus.REFUNDED]),
            col(Order.paid_at) >= since,
            col(Order.paid_at) < until if until is not None else sa.true(),
        )
        .order_by(col(Order.paid_at), col(Order.id), col(OrderLine.sku), col(OrderLine.id))
    ).all()
    by_campaign: dict[uuid.UUID, list[tuple[OrderLine, Order]]] = {c.id: [] for c in campaigns}
    for line, order in rows:
        by_campaign[line.partner_campaign_id].append((line, order))  # type: ignore[index]
    result = []
    total = 0
    for campaign in campaigns:
        entries = by_campaign[campaign.id]
        owed = sum(line.partner_share_amount for line, _ in entries)
        total += owed
        result.append(
            {
                "code": campaign.code,
                "name": campaign.name,
                "partner_name": campaign.partner_name,
                "share_kind": campaign.share_kind,
                "share_value": campaign.share_value,
                "orders": len({order.id for _, order in entries}),
                "shirts_sold": sum(line.quantity for line, _ in entries),
                "shirts_returned": sum(line.refunded_quantity for line, _ in entries),
                "shirts_kept": sum(shirts_kept(line, order) for line, order in entries),
                # Each line's net of the shirts kept, rounded half up like the share (core.money's one rule).
                "net_sales": _money(sum(kept_net(line, shirts_kept(line, order)) for line, order in entries), "GBP"),
                "owed": _money(owed, "GBP"),
                "lines": [
                    {
                        "order_id": str(order.id),
                        "paid_on": uk_date(order.paid_at).isoformat() if order.paid_at else None,
                        "sku": line.sku,
                        "quantity": line.quantity,
                        "returned": line.refunded_quantity,
                        "kept": shirts_kept(line, order),
                        "share": _money(line.partner_share_amount, order.currency),
                    }
                    for line, order in entries
                ],
            }
        )
    return {"from": start.isoformat(), "to": end.isoformat(), "campaigns": result, "total_owed": _money(total, "GBP")}


def _uk_midnight(day: dt.date) -> dt.datetime:
    """The start of a UK calendar day, in UTC."""
    return dt.datetime.combine(day, dt.time(), tzinfo=UK).astimezone(dt.UTC)


def _money(amount: int, currency: str) -> dict[str, Any]:
    return {"amount": int(amount), "currency": currency}
