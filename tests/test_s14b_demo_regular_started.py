"""The demo's monthly gifts start before their first payment. The demo's GoCardless dated a subscription our code
created at its first charge date (09:00 that day) rather than when our code created it, just after the donor set
up the mandate, five days before: so the demo's monthly Direct Debit "started" the very day of its first payment,
which Bacs cannot do (a first collection needs days of notice), and its payments said they were created on their
charge dates while their `payments.created` events came days earlier. Now the world is consistent: the subscription
and the payments our code creates are dated when it created them, in the story's time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from core.clock import uk_date
from giving.demo.run import DATABASE_NAME
from payments.models import Gift, Method, RegularGift
from tests.test_demo import run_demo


@pytest.mark.slow
def test_every_demo_regular_gift_starts_on_or_before_its_first_payment(tmp_path: Path) -> None:
    result = run_demo(tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'var' / 'demo' / DATABASE_NAME}")
    try:
        with Session(engine) as session:
            regulars = session.exec(select(RegularGift)).all()
            assert {r.method for r in regulars} == {Method.CARD, Method.DIRECT_DEBIT}
            for regular in regulars:
                gifts = session.exec(select(Gift).where(Gift.regular_gift_id == regular.id)).all()
                first = min((g for g in gifts if g.received_at is not None), key=lambda g: g.received_at)  # type: ignore[arg-type,return-value]
                assert regular.started_at is not None and first.received_at is not None and first.received_on
                assert regular.started_at <= first.received_at, (regular.method, regular.started_at, first.received_at)
                assert uk_date(regular.started_at) <= first.received_on, regular.method
                if regular.method == Method.DIRECT_DEBIT:
                    # Bacs collects on a date notified in advance: set up days before the first charge, not on it.
                    assert first.due_on is not None
                    assert uk_date(regular.started_at) <= first.due_on - dt.timedelta(days=3), (
                        regular.started_at,
                        first.due_on,
                    )
    finally:
        engine.dispose()
