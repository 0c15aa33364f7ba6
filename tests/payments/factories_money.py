"""Rows of money for tests of payouts, the journal and the shop: made directly through the models, committed.

Each helper opens its own unit of work on the runtime and returns the row's id (or the row, detached).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from core.runtime import Runtime
from crm.models import Supporter
from payments.models import (
    Dispute,
    DisputeStatus,
    Gift,
    GiftStatus,
    Method,
    Order,
    OrderLine,
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

RECEIVED = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)


def supporter(runtime: Runtime, email: str | None = None) -> uuid.UUID:
    with runtime.unit_of_work() as uow:
        row = Supporter(email=email or f"{uuid.uuid4().hex[:10]}@example.org", first_name="Ada", last_name="Lovelace")
        uow.session.add(row)
        uow.session.flush()
        return row.id


def gift(runtime: Runtime, supporter_id: uuid.UUID, amount: int, **fields: Any) -> uuid.UUID:
    provider = fields.pop("provider", Provider.GOCARDLESS if "gocardless_payment_id" in fields else Provider.STRIPE)
    values: dict[str, Any] = {
        "supporter_id": supporter_id,
        "amount": amount,
        "status": GiftStatus.PAID,
        "provider": provider,
        "method": Method.DIRECT_DEBIT if provider == Provider.GOCARDLESS else Method.CARD,
        "received_at": RECEIVED,
        "received_on": RECEIVED.date(),
    }
    values.update(fields)
    with runtime.unit_of_work() as uow:
        row = Gift(**values)
        uow.session.add(row)
        uow.session.flush()
        return row.id


def regular_gift(runtime: Runtime, supporter_id: uuid.UUID, amount: int, **fields: Any) -> uuid.UUID:
    with runtime.unit_of_work() as uow:
        row = RegularGift(
            supporter_id=supporter_id,
            amount=amount,
            provider=fields.pop("provider", Provider.STRIPE),
            method=fields.pop("method", Method.CARD),
            status=RegularGiftStatus.ACTIVE,
            **fields,
        )
        uow.session.add(row)
        uow.session.flush()
        return row.id


def campaign(runtime: Runtime, code: str = "LMHR", share_kind: str = "per_item", share_value: int = 500) -> uuid.UUID:
    with runtime.unit_of_work() as uow:
        row = PartnerCampaign(
            code=code,
            name=f"{code} campaign",
            partner_name=f"{code} partner",
            share_kind=share_kind,
            share_value=share_value,
        )
        uow.session.add(row)
        uow.session.flush()
        return row.id


def product(
    runtime: Runtime, code: str, price: int, sizes: dict[str, int], campaign_id: uuid.UUID | None = None
) -> uuid.UUID:
    with runtime.unit_of_work() as uow:
        row = Product(code=code, name=f"{code} T-shirt", partner_campaign_id=campaign_id)
        uow.session.add(row)
        uow.session.flush()
        for position, (size, stock) in enumerate(sizes.items()):
            uow.session.add(
                Sku(sku=f"{code}-{size}", product_id=row.id, size=size, price=price, stock=stock, position=position)
            )
        return row.id


def order(
    runtime: Runtime,
    supporter_id: uuid.UUID,
    lines: list[dict[str, Any]],
    *,
    donation: int = 0,
    status: OrderStatus = OrderStatus.PAID,
    paid_at: dt.datetime = RECEIVED,
    **fields: Any,
) -> uuid.UUID:
    """lines: dicts of sku, quantity, unit_price and optionally vat_amount, partner_campaign_id,
    partner_share_amount (the checkout sets these)."""
    with runtime.unit_of_work() as uow:
        row = Order(supporter_id=supporter_id, status=status, paid_at=paid_at, donation_amount=donation, **fields)
        uow.session.add(row)
        uow.session.flush()
        goods = vat = 0
        for spec in lines:
            line = OrderLine(
                order_id=row.id,
                sku=spec["sku"],
                product_name=spec.get("product_name", spec["sku"]),
                size=spec.get("size", spec["sku"].rsplit("-", 1)[-1]),
                quantity=spec["quantity"],
                unit_price=spec["unit_price"],
                vat_amount=spec.get("vat_amount", 0),
                partner_campaign_id=spec.get("partner_campaign_id"),
                partner_share_amount=spec.get("partner_share_amount", 0),
            )
            uow.session.add(line)
            goods += line.unit_price * line.quantity - line.vat_amount
            vat += line.vat_amount
        row.goods_amount, row.vat_amount = goods, vat
        uow.session.add(row)
        return row.id


def refund(runtime: Runtime, supporter_id: uuid.UUID, amount: int, **fields: Any) -> uuid.UUID:
    values: dict[str, Any] = {
        "supporter_id": supporter_id,
        "amount": amount,
        "status": RefundStatus.SUCCEEDED,
        "provider": Provider.GOCARDLESS if "gocardless_refund_id" in fields else Provider.STRIPE,
        "refunded_at": RECEIVED,
    }
    values.update(fields)
    values.setdefault("gift_amount", amount if values.get("gift_id") and not values.get("order_id") else 0)
    values.setdefault("order_amount", amount - values["gift_amount"])
    with runtime.unit_of_work() as uow:
        row = Refund(**values)
        uow.session.add(row)
        uow.session.flush()
        return row.id


def dispute(runtime: Runtime, supporter_id: uuid.UUID, amount: int, **fields: Any) -> uuid.UUID:
    values: dict[str, Any] = {
        "supporter_id": supporter_id,
        "amount": amount,
        "status": DisputeStatus.LOST,
        "provider": Provider.GOCARDLESS if "gocardless_payment_id" in fields else Provider.STRIPE,
        "opened_at": RECEIVED,
        "funds_withdrawn": True,
    }
    values.update(fields)
    with runtime.unit_of_work() as uow:
        row = Dispute(**values)
        uow.session.add(row)
        uow.session.flush()
        return row.id


def staff_token(runtime: Runtime, role: str = "finance") -> str:
    """A bearer token for a new staff user with this role."""
    from core.auth import create_api_token
    from core.models import StaffRole, StaffUser

    email = f"{role}-{uuid.uuid4().hex[:6]}@example.org"
    with runtime.unit_of_work() as uow:
        uow.session.add(StaffUser(email=email, role=StaffRole(role), password_hash="!"))
        uow.session.flush()
        return create_api_token(uow, email)
