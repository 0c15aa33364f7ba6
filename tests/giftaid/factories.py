"""Supporters, declarations and gifts for Gift Aid tests, written straight through the models (the webhooks that
create gifts are built elsewhere), plus a staff token and a CLI runner."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

from core import auth
from core.clock import UK
from core.runtime import Runtime
from core.settings import Settings
from crm.models import Declaration, DeclarationMethod, DeclarationScope, Supporter
from payments.models import DonorType, Gift, GiftStatus, Method, Order, OrderStatus, Provider

PASSWORD = "correct horse battery staple"
TODAY = dt.date(2025, 11, 1)


def noon(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(12, 0), tzinfo=UK).astimezone(dt.UTC)


def make_supporter(runtime: Runtime, *, first_name: str = "Ada", last_name: str = "Lovelace") -> uuid.UUID:
    with runtime.unit_of_work() as uow:
        supporter = Supporter(first_name=first_name, last_name=last_name)
        uow.session.add(supporter)
        uow.session.flush()
        return supporter.id


def make_declaration(
    runtime: Runtime,
    supporter_id: uuid.UUID,
    *,
    made_on: dt.date = dt.date(2024, 1, 10),
    scope: DeclarationScope = DeclarationScope.PAST_4_YEARS_AND_FUTURE,
    method: DeclarationMethod = DeclarationMethod.ONLINE,
    start: dt.date | None = None,
    end: dt.date | None = None,
    gift_id: uuid.UUID | None = None,
    title: str | None = "Ms",
    first_name: str = "Ada",
    last_name: str = "Lovelace",
    house: str = "12",
    postcode: str = "CT16 1AA",
    country: str = "GB",
    confirmation_sent_on: dt.date | None = None,
    cancellation_effective_on: dt.date | None = None,
    voided: bool = False,
    evidence: dict[str, Any] | None = None,
) -> uuid.UUID:
    if scope == DeclarationScope.PAST_4_YEARS_AND_FUTURE and start is None:
        start = made_on.replace(year=made_on.year - 4)
    with runtime.unit_of_work() as uow:
        declaration = Declaration(
            supporter_id=supporter_id,
            method=method,
            made_on=made_on,
            scope=scope,
            start=start,
            end=end,
            gift_id=gift_id,
            title=title,
            first_name=first_name,
            last_name=last_name,
            address_line1=f"{house} Acacia Avenue" if house else "",
            house=house,
            postcode=postcode,
            country=country,
            non_uk=country != "GB",
            confirmation_sent_on=confirmation_sent_on,
            cancelled_at=noon(cancellation_effective_on) if cancellation_effective_on else None,
            cancellation_effective_on=cancellation_effective_on,
            voided=voided,
            evidence=evidence or {},
        )
        uow.session.add(declaration)
        uow.session.flush()
        return declaration.id


def make_gift(
    runtime: Runtime,
    supporter_id: uuid.UUID,
    *,
    amount: int = 10_000,
    received_on: dt.date = dt.date(2025, 6, 1),
    status: GiftStatus = GiftStatus.PAID,
    returned_amount: int = 0,
    benefit_amount: int = 0,
    donor_type: DonorType = DonorType.INDIVIDUAL,
    declaration_id: uuid.UUID | None = None,
    order_id: uuid.UUID | None = None,
    currency: str = "GBP",
) -> uuid.UUID:
    with runtime.unit_of_work() as uow:
        gift = Gift(
            supporter_id=supporter_id,
            amount=amount,
            currency=currency,
            status=status,
            provider=Provider.STRIPE,
            method=Method.CARD,
            donor_type=donor_type,
            received_at=noon(received_on) if status != GiftStatus.PENDING else None,
            received_on=received_on if status != GiftStatus.PENDING else None,
            returned_amount=returned_amount,
            benefit_amount=benefit_amount,
            declaration_id=declaration_id,
            order_id=order_id,
        )
        uow.session.add(gift)
        uow.session.flush()
        return gift.id


def make_order(runtime: Runtime, supporter_id: uuid.UUID, *, goods: int = 2000) -> uuid.UUID:
    with runtime.unit_of_work() as uow:
        order = Order(supporter_id=supporter_id, status=OrderStatus.PAID, goods_amount=goods)
        uow.session.add(order)
        uow.session.flush()
        return order.id


def set_gift(runtime: Runtime, gift_id: uuid.UUID, **values: Any) -> None:
    with runtime.unit_of_work() as uow:
        gift = uow.session.get(Gift, gift_id)
        assert gift is not None
        for key, value in values.items():
            setattr(gift, key, value)
        uow.session.add(gift)


def donor(runtime: Runtime, **declaration: Any) -> uuid.UUID:
    """A supporter with an enduring declaration (past four years and future)."""
    supporter_id = make_supporter(runtime)
    make_declaration(runtime, supporter_id, **declaration)
    return supporter_id


def staff_headers(runtime: Runtime, role: str) -> dict[str, str]:
    email = f"{role}-{uuid.uuid4().hex[:8]}@example.org"
    with runtime.unit_of_work() as uow:
        auth.add_staff_user(uow, email, role, PASSWORD, issuer="Giving tests")
    with runtime.unit_of_work() as uow:
        token = auth.create_api_token(uow, email, lifetime=dt.timedelta(days=1))
    return {"Authorization": f"Bearer {token}"}


def run_giving(args: list[str], settings: Settings, monkeypatch: Any, tmp_path: Path) -> Any:
    """Run a `giving` command in-process against the test's database; the test's runtime is put back after."""
    from typer.testing import CliRunner

    from core.runtime import get_runtime, set_runtime
    from core.settings import get_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIVING_ENV", "test")
    monkeypatch.setenv("GIVING_DATABASE__URL", settings.database.url)
    for section in ("charity", "giftaid"):
        for key, value in getattr(settings, section).model_dump().items():
            monkeypatch.setenv(f"GIVING_{section.upper()}__{key.upper()}", str(value))
    get_settings.cache_clear()
    previous = get_runtime()
    try:
        from giving.cli import app

        return CliRunner().invoke(app, args, catch_exceptions=False)
    finally:
        set_runtime(previous)
        get_settings.cache_clear()


def make_many_gifts(
    runtime: Runtime,
    supporter_id: uuid.UUID,
    count: int,
    *,
    amount: int = 3_000,
    first_day: dt.date = dt.date(2025, 1, 1),
) -> list[uuid.UUID]:
    """`count` paid gifts from one donor on successive days (cycling through 200 days), in one transaction."""
    ids = []
    with runtime.unit_of_work() as uow:
        for index in range(count):
            day = first_day + dt.timedelta(days=index % 200)
            gift = Gift(
                supporter_id=supporter_id,
                amount=amount + index,
                status=GiftStatus.PAID,
                provider=Provider.GOCARDLESS,
                method=Method.DIRECT_DEBIT,
                received_at=noon(day),
                received_on=day,
            )
            uow.session.add(gift)
            ids.append(gift.id)
    return ids
