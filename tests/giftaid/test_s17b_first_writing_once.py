"""Two downloads of one part at the same instant (two people, a double click) both found it unwritten and both
recorded its first writing in the claim's history. The first writing of a part is recorded once: the second download
waits for the first's commit and then finds the part written.

PostgreSQL only: two connections at once (SQLite's BEGIN IMMEDIATE serialises writers anyway)."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from typing import Any

from sqlmodel import col, select

from core.db import UnitOfWork
from core.runtime import Runtime
from giftaid import service
from giftaid.models import ClaimEvent
from giftaid.validator import validate_schedule
from tests.giftaid.claim_locks import hold_open, postgres_only
from tests.giftaid.factories import TODAY, donor, make_gift


def _written(runtime: Runtime, claim_id: uuid.UUID) -> list[tuple[str, dict[str, Any]]]:
    with runtime.read_session() as session:
        events = session.exec(
            select(ClaimEvent).where(ClaimEvent.claim_id == claim_id).order_by(col(ClaimEvent.at), col(ClaimEvent.id))
        ).all()
    return [(e.actor, record) for e in events for record in e.detail.get("parts_written", [])]


def test_two_downloads_of_a_part_at_once_record_one_first_writing(runtime: Runtime) -> None:
    postgres_only(runtime)
    for n in range(3):
        make_gift(runtime, donor(runtime), amount=10_000 + n, received_on=dt.date(2025, 6, 1 + n))
    with runtime.unit_of_work() as uow:
        built = service.build_claim(uow, runtime.settings, through=TODAY, actor="t", today=TODAY)
    claim_id = built.claim_id
    assert claim_id is not None
    files: dict[str, bytes] = {}

    def download(who: str) -> Any:
        def work(uow: UnitOfWork) -> None:
            claim = service.get_claim(uow.session, claim_id)
            files[who] = service.schedule_part(uow.session, runtime.settings, claim, 1, actor=who, today=TODAY)

        return work

    first_done, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    first = threading.Thread(
        target=hold_open(runtime, download("ann@example.org"), first_done, release), args=(errors,)
    )
    first.start()
    second_done, second_release = threading.Event(), threading.Event()
    try:
        assert first_done.wait(20) and not errors, errors
        # The second download is under way while the first is not yet committed.
        second = threading.Thread(
            target=hold_open(runtime, download("bob@example.org"), second_done, second_release), args=(errors,)
        )
        second.start()
        second_done.wait(2)  # with the lock it waits for the first's commit; without, it had recorded its own
    finally:
        release.set()
        first.join(20)
    second_release.set()
    second.join(20)
    assert not errors, errors
    # The same schedule (the files' zip headers carry the time they were written: compare what HMRC reads).
    donations = {who: validate_schedule(data, today=TODAY).donations for who, data in files.items()}
    assert donations["ann@example.org"] == donations["bob@example.org"] and len(donations["bob@example.org"]) == 3
    written = _written(runtime, claim_id)
    assert [(who, r["kind"], r["part"], r["lines"]) for who, r in written] == [
        ("ann@example.org", "schedule", 1, [1, 3])
    ]
