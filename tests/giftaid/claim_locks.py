"""What the tests of the claims' lock order share: two units of work on two connections, one held open while the
other runs (PostgreSQL only: SQLite's BEGIN IMMEDIATE serialises writers anyway)."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlmodel import select

from core.db import UnitOfWork
from core.runtime import Runtime
from core.settings import Settings
from giftaid import service
from giftaid.models import Adjustment, Claim


def postgres_only(runtime: Runtime) -> None:
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("locks between two connections: PostgreSQL (SQLite's BEGIN IMMEDIATE serialises writers)")


def build_claim_through(runtime: Runtime, settings: Settings, through: dt.date, today: dt.date) -> service.ClaimResult:
    with runtime.unit_of_work() as uow:
        return service.build_claim(uow, settings, through=through, actor="builder@example.org", today=today)


def standing_adjustments(runtime: Runtime) -> list[Adjustment]:
    with runtime.read_session() as session:
        return list(session.exec(select(Adjustment).where(Adjustment.withdrawn_at.is_(None))))  # type: ignore[union-attr]


def claim_of(runtime: Runtime, claim_id: uuid.UUID) -> Claim:
    with runtime.read_session() as session:
        found = session.get(Claim, claim_id)
        assert found is not None
        return found


def hold_open(
    runtime: Runtime, work: Callable[[UnitOfWork], Any], done: threading.Event, release: threading.Event
) -> Callable[[list[BaseException]], None]:
    """A thread body: `work` in a unit of work left uncommitted until `release`."""

    def run(errors: list[BaseException]) -> None:
        try:
            with runtime.unit_of_work() as uow:
                work(uow)
                uow.session.flush()
                done.set()
                assert release.wait(20)
        except BaseException as exc:
            errors.append(exc)
            done.set()

    return run
