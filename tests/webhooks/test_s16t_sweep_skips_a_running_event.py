"""The sweep never writes back over an event a run is processing (found in review, h12): read without a lock, a
waiting event processed meanwhile was set back to pending (its handler run again) or, past its give-up, marked
ignored, though it had recorded its gift. PostgreSQL: locks between two connections (SQLite serialises writers)."""

from __future__ import annotations

import datetime as dt
import threading
import time

import sqlalchemy as sa

from core.clock import utc_now
from core.runtime import Runtime
from tests.giftaid.claim_locks import postgres_only
from webhooks import service
from webhooks.models import EventStatus, InboundEvent


def _waiting_event(runtime: Runtime, received_days_ago: int) -> InboundEvent:
    long_ago = utc_now() - dt.timedelta(days=received_days_ago)
    event = InboundEvent(
        provider="stripe",
        external_id=f"evt_sweep_race_{received_days_ago}",
        event_type="invoice.paid",
        body="{}",
        status=EventStatus.WAITING,
        waiting_for="stripe_subscription:sub_x",
        received_at=long_ago,
        touched_at=long_ago,
    )
    with runtime.unit_of_work() as uow:
        uow.session.add(event)
    return event


def test_an_event_processed_while_the_sweep_runs_stays_processed(runtime: Runtime) -> None:
    postgres_only(runtime)
    events = [_waiting_event(runtime, 2), _waiting_event(runtime, 30)]  # re-sent; past the give-up
    swept: list[int] = []
    with runtime.engine.connect() as run:
        # A run holds both rows and records their effects (committed below, while the sweep is under way).
        run.execute(
            sa.update(InboundEvent.__table__)  # type: ignore[attr-defined]
            .where(InboundEvent.__table__.c.id.in_([e.id for e in events]))  # type: ignore[attr-defined]
            .values(status=EventStatus.PROCESSED.value, waiting_for=None, processed_at=utc_now())
        )

        def sweep() -> None:
            with runtime.unit_of_work() as uow:
                swept.append(service.sweep(uow))

        sweeping = threading.Thread(target=sweep)
        sweeping.start()
        time.sleep(0.5)
        run.commit()
    sweeping.join(20)
    assert not sweeping.is_alive()
    with runtime.read_session() as session:
        statuses = [session.get(InboundEvent, e.id).status for e in events]  # type: ignore[union-attr]
    assert statuses == [EventStatus.PROCESSED, EventStatus.PROCESSED]
    assert swept == [0]
