"""Review s17d: the shop's fulfilment and returns.

`giving shop fulfil` (and `POST /api/orders/{id}/fulfil`) run again on an order already posted changes nothing: it
wrote a second `fulfil` audit entry, as if the shirts had been posted twice."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.auth import AuditEntry
from core.runtime import Runtime
from core.settings import Settings
from tests.fakes.provider_server import FakeProvider
from tests.payments import factories_money as make
from tests.payments.payout_fakes import money_settings, run_giving
from tests.payments.test_shop_stock_partners import auth, shop_with_an_order


@pytest.fixture
def settings(database_url: str, tmp_path: Path, fake_stripe: FakeProvider, fake_gocardless: FakeProvider) -> Settings:
    return money_settings(database_url, tmp_path, fake_stripe, fake_gocardless)


def fulfil_audits(runtime: Runtime, order_id: object) -> list[AuditEntry]:
    with runtime.read_session() as session:
        return list(
            session.exec(
                select(AuditEntry).where(AuditEntry.action == "fulfil", AuditEntry.object_id == str(order_id))
            ).all()
        )


def test_fulfilling_an_order_again_on_the_command_line_writes_no_second_audit(
    runtime: Runtime, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    made = shop_with_an_order(runtime)
    for _ in range(2):
        result = run_giving(["shop", "fulfil", str(made["order"])], settings, monkeypatch, tmp_path)
        assert result.exit_code == 0, result.output
    assert len(fulfil_audits(runtime, made["order"])) == 1


def test_fulfilling_an_order_again_through_the_api_writes_no_second_audit(runtime: Runtime, client: TestClient) -> None:
    made = shop_with_an_order(runtime)
    token = make.staff_token(runtime, "fundraiser")
    for _ in range(2):
        assert client.post(f"/api/orders/{made['order']}/fulfil", headers=auth(token)).status_code == 200
    assert len(fulfil_audits(runtime, made["order"])) == 1


def test_returns_recorded_before_they_were_dated_are_kept_dated_their_orders_last_change(
    own_database_url: str,
) -> None:
    """The upgrade that adds `order_returns` keeps each line's shirts already sent back as one return, dated the
    order's last change (the best date there is), so the journal still gives their partner share back."""
    import datetime as dt

    from sqlmodel import Session

    from core import migrate
    from core.db import make_engine
    from core.settings import DatabaseSettings
    from crm.models import Supporter
    from payments.models import Order, OrderLine, OrderReturn, OrderStatus

    migrate.downgrade(own_database_url, "b8e2d4f6a1c3")  # payments' revision before
    engine = make_engine(DatabaseSettings(url=own_database_url))
    changed = dt.datetime(2026, 4, 2, 9, 30, tzinfo=dt.UTC)
    try:
        with Session(engine) as session:
            supporter = Supporter(email="jo@example.org", first_name="Jo", last_name="Bloggs")
            session.add(supporter)
            session.flush()
            order = Order(supporter_id=supporter.id, status=OrderStatus.PAID, goods_amount=3600, updated_at=changed)
            session.add(order)
            session.flush()
            kept = OrderLine(order_id=order.id, sku="A", product_name="T", size="M", quantity=2, unit_price=1800)
            back = OrderLine(
                order_id=order.id, sku="B", product_name="T", size="L", quantity=3, unit_price=1800, refunded_quantity=2
            )
            session.add_all([kept, back])
            session.commit()
            order_id, back_id = order.id, back.id
        migrate.upgrade(own_database_url)
        with Session(engine) as session:
            rows = session.exec(select(OrderReturn)).all()
            assert [(r.order_id, r.order_line_id, r.quantity, r.recorded_at) for r in rows] == [
                (order_id, back_id, 2, changed)
            ]
    finally:
        engine.dispose()
