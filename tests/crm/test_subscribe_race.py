"""Two confirmation links of one address (Subscribe pressed twice) clicked at the same instant grant the email
consent once: the supporter's row is locked before the check (PostgreSQL; SQLite queues writers anyway)."""

from __future__ import annotations

import threading

from sqlmodel import select

from core.runtime import Runtime
from crm import service
from crm.models import Consent, ConsentStatus, HistoryEntry


def test_two_links_confirmed_at_the_same_instant_grant_once(runtime: Runtime) -> None:
    with runtime.unit_of_work() as uow:
        first = service.start_subscription(uow, "sam@example.org")
    with runtime.unit_of_work() as uow:
        second = service.start_subscription(uow, "sam@example.org")
    assert first is not None and second is not None

    granted_not_committed = threading.Event()
    release = threading.Event()
    results: dict[str, bool] = {}
    errors: list[BaseException] = []

    def confirm_first() -> None:
        try:
            with runtime.unit_of_work() as uow:
                results["first"] = service.confirm_subscription(uow, first.id)
                granted_not_committed.set()
                release.wait(10)
        except BaseException as exc:
            errors.append(exc)
            granted_not_committed.set()

    def confirm_second() -> None:
        try:
            with runtime.unit_of_work() as uow:
                results["second"] = service.confirm_subscription(uow, second.id)
        except BaseException as exc:
            errors.append(exc)

    holder = threading.Thread(target=confirm_first)
    holder.start()
    assert granted_not_committed.wait(10)
    late = threading.Thread(target=confirm_second)
    late.start()
    late.join(1.5)  # let the second click read (and block on the supporter's row) while the first is uncommitted
    release.set()
    holder.join(10)
    late.join(20)

    assert not errors, errors
    assert results == {"first": True, "second": False}
    with runtime.read_session() as session:
        granted = session.exec(select(Consent).where(Consent.status == ConsentStatus.GRANTED)).all()
        items = session.exec(select(HistoryEntry).where(HistoryEntry.type == "consent")).all()
    assert len(granted) == 1
    assert len(items) == 1, [item.summary for item in items]
