"""Rows for receipts tests, written straight through the models (the webhook paths are other packages' tests)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from core.clock import UK
from core.runtime import Runtime
from crm.models import (
    Declaration,
    DeclarationMethod,
    DeclarationScope,
    StatementPreference,
    Supporter,
    SupporterAddress,
)
from payments.models import (
    Checkout,
    CheckoutKind,
    DonorType,
    Gift,
    GiftStatus,
    Method,
    Order,
    OrderLine,
    OrderStatus,
    Provider,
    Refund,
    RefundStatus,
)

ADDRESS = {"address_line1": "12 Acacia Avenue", "address_line2": "", "town": "Dover", "postcode": "CT16 1AA"}


def at_uk(day: dt.date, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), UK).astimezone(dt.UTC)


def donor(
    first_name: str = "Ada", last_name: str = "Lovelace", email: str | None = "ada@example.org"
) -> dict[str, Any]:
    return {"title": "Ms", "first_name": first_name, "last_name": last_name, "email": email, "country": "GB", **ADDRESS}


def supporter(
    runtime: Runtime,
    *,
    email: str | None = "ada@example.org",
    first_name: str = "Ada",
    last_name: str = "Lovelace",
    preference: StatementPreference = StatementPreference.PER_GIFT,
) -> uuid.UUID:
    with runtime.unit_of_work() as uow:
        row = Supporter(
            email=email,
            title="Ms",
            first_name=first_name,
            last_name=last_name,
            postcode=ADDRESS["postcode"],
            statement_preference=preference,
        )
        uow.session.add(row)
        uow.session.flush()
        uow.session.add(
            SupporterAddress(
                supporter_id=row.id,
                line1=ADDRESS["address_line1"],
                town=ADDRESS["town"],
                postcode=ADDRESS["postcode"],
                valid_from=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
            )
        )
        return row.id


def declaration(
    runtime: Runtime,
    supporter_id: uuid.UUID,
    *,
    made_on: dt.date = dt.date(2025, 4, 1),
    method: DeclarationMethod = DeclarationMethod.ONLINE,
    scope: DeclarationScope = DeclarationScope.PAST_4_YEARS_AND_FUTURE,
    start: dt.date | None = None,
    end: dt.date | None = None,
    gift_id: uuid.UUID | None = None,
    cancellation_effective_on: dt.date | None = None,
) -> uuid.UUID:
    if scope == DeclarationScope.PAST_4_YEARS_AND_FUTURE and start is None:
        start = made_on.replace(year=made_on.year - 4)
    with runtime.unit_of_work() as uow:
        row = Declaration(
            supporter_id=supporter_id,
            method=method,
            made_on=made_on,
            scope=scope,
            start=start,
            end=end,
            gift_id=gift_id,
            title="Ms",
            first_name="Ada",
            last_name="Lovelace",
            address_line1=ADDRESS["address_line1"],
            town=ADDRESS["town"],
            house="12",
            postcode=ADDRESS["postcode"],
            wording_version="hmrc-enduring-2025",
            source="test",
            cancellation_effective_on=cancellation_effective_on,
            cancelled_at=at_uk(cancellation_effective_on) if cancellation_effective_on else None,
        )
        uow.session.add(row)
        uow.session.flush()
        return row.id


def gift(
    runtime: Runtime,
    supporter_id: uuid.UUID,
    *,
    amount: int = 2500,
    received_on: dt.date = dt.date(2025, 10, 5),
    method: Method = Method.CARD,
    appeal: str | None = "winter-appeal",
    status: GiftStatus = GiftStatus.PAID,
    donor_type: DonorType = DonorType.INDIVIDUAL,
    order_id: uuid.UUID | None = None,
    regular: bool = False,
    returned_amount: int = 0,
    donor_details: dict[str, Any] | None = None,
    declaration_id: uuid.UUID | None = None,
) -> uuid.UUID:
    with runtime.unit_of_work() as uow:
        row = Gift(
            supporter_id=supporter_id,
            declaration_id=declaration_id,
            amount=amount,
            status=status,
            provider=Provider.GOCARDLESS if method == Method.DIRECT_DEBIT else Provider.STRIPE,
            method=method,
            donor_type=donor_type,
            received_at=at_uk(received_on),
            received_on=received_on,
            appeal=appeal,
            order_id=order_id,
            donor=donor_details if donor_details is not None else donor(),
            returned_amount=returned_amount,
        )
        if regular:
            from payments.models import RegularGift, RegularGiftStatus

            regular_gift = RegularGift(
                supporter_id=supporter_id,
                amount=amount,
                provider=row.provider,
                method=method,
                status=RegularGiftStatus.ACTIVE,
            )
            uow.session.add(regular_gift)
            uow.session.flush()
            row.regular_gift_id = regular_gift.id
        uow.session.add(row)
        uow.session.flush()
        return row.id


def order(
    runtime: Runtime,
    supporter_id: uuid.UUID,
    *,
    lines: list[tuple[str, str, int, int]],
    donation: int = 0,
    vat_rate_bp: int = 0,
    paid_on: dt.date = dt.date(2025, 11, 3),
) -> tuple[uuid.UUID, uuid.UUID | None]:
    """(order id, donation gift id); `lines` are (product, size, quantity, unit price)."""
    with runtime.unit_of_work() as uow:
        goods = sum(q * p for _, _, q, p in lines)
        # Prices include VAT: the VAT part of a gross price is rate / (1 + rate).
        line_vat = [q * p * vat_rate_bp // (10_000 + vat_rate_bp) for _, _, q, p in lines]
        row = Order(
            supporter_id=supporter_id,
            status=OrderStatus.PAID,
            goods_amount=goods - sum(line_vat),  # net of VAT, as payments.checkout records it
            vat_amount=sum(line_vat),
            vat_rate_bp=vat_rate_bp,
            donation_amount=donation,
            paid_at=at_uk(paid_on),
        )
        uow.session.add(row)
        uow.session.flush()
        for (name, size, quantity, price), vat in zip(lines, line_vat, strict=True):
            uow.session.add(
                OrderLine(
                    order_id=row.id,
                    sku=f"{name[:3].upper()}-{size}",
                    product_name=name,
                    size=size,
                    quantity=quantity,
                    unit_price=price,
                    vat_amount=vat,
                )
            )
        uow.session.add(
            Checkout(
                kind=CheckoutKind.SHOP,
                supporter_id=supporter_id,
                amount=goods + donation,
                order_id=row.id,
                donor=donor(),
                provider=Provider.STRIPE,
            )
        )
        order_id = row.id
    gift_id = (
        gift(runtime, supporter_id, amount=donation, received_on=paid_on, order_id=order_id, appeal=None)
        if donation
        else None
    )
    return order_id, gift_id


def refund(
    runtime: Runtime,
    *,
    supporter_id: uuid.UUID,
    amount: int,
    gift_id: uuid.UUID | None = None,
    order_id: uuid.UUID | None = None,
    gift_amount: int = 0,
    order_amount: int = 0,
    refunded_on: dt.date = dt.date(2025, 12, 1),
    reason: str = "requested by the donor",
    mark_gift: bool = True,
) -> uuid.UUID:
    with runtime.unit_of_work() as uow:
        row = Refund(
            supporter_id=supporter_id,
            gift_id=gift_id,
            order_id=order_id,
            amount=amount,
            gift_amount=gift_amount,
            order_amount=order_amount,
            status=RefundStatus.SUCCEEDED,
            provider=Provider.STRIPE,
            reason=reason,
            refunded_at=at_uk(refunded_on),
        )
        uow.session.add(row)
        if gift_id is not None and mark_gift:
            gift_row = uow.session.get(Gift, gift_id)
            assert gift_row is not None
            gift_row.returned_amount += gift_amount or amount
            uow.session.add(gift_row)
        uow.session.flush()
        return row.id
