"""The shop's rules that order processing needs: stock, and how a refund on a mixed basket is allocated.

Allocation rule (documented in docs/payments.md; staff can re-allocate a refund): a refund on a basket is taken
from the goods first (the usual case is a shirt sent back), up to what is left of the goods; the rest comes off the
donation line. A refund of the whole basket covers both.
"""

from __future__ import annotations

from sqlmodel import select

from core.db import UnitOfWork
from payments.models import Order, OrderLine, Sku


def take_stock(uow: UnitOfWork, order: Order) -> None:
    """A paid order takes its shirts from stock (stock may go negative: the order was paid, finance sees it)."""
    for line in _lines(uow, order):
        _adjust(uow, line.sku, -line.quantity)


def return_stock(uow: UnitOfWork, line: OrderLine, quantity: int) -> None:
    """Shirts refunded go back into stock."""
    _adjust(uow, line.sku, quantity)


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


def _adjust(uow: UnitOfWork, sku_code: str, delta: int) -> None:
    sku = uow.session.exec(select(Sku).where(Sku.sku == sku_code)).first()
    if sku is not None:
        sku.stock += delta
        uow.session.add(sku)
