"""A poll takes the claims' lock before the claim's row (its verdict may reject the claim), so it waits behind a
claim being built (10-30 s for a million gifts, more on a slow day), and that wait counted in the poll job's 120 s
time limit: a poll stuck behind a long build was killed as a failure and retried to exhaustion. The sweep's poll job
now waits a bounded time (`tasks.POLL_LOCK_WAIT_SECONDS`, a `lock_timeout` in a savepoint) and then leaves the claim
to the next sweep, having asked HMRC nothing: not a failure. A poll by hand still waits.

PostgreSQL only: a wait between two connections; SQLite's BEGIN IMMEDIATE serialises writers anyway."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from core.db import UnitOfWork
from core.runtime import Runtime
from core.settings import Settings
from giftaid import service, tasks
from giftaid.models import ClaimStatus
from tests.giftaid.claim_locks import claim_of, hold_open, postgres_only
from tests.giftaid.factories import TODAY, donor, make_gift
from tests.giftaid.fake_gateway import FakeGateway, gateway, settings

__all__ = ["gateway", "settings"]


def _submitted(runtime: Runtime, settings: Settings) -> uuid.UUID:
    make_gift(runtime, donor(runtime), amount=10_000, received_on=dt.date(2025, 6, 1))
    with runtime.unit_of_work() as uow:
        built = service.build_claim(uow, settings, through=dt.date(2025, 7, 1), actor="t", today=TODAY)
    assert built.claim_id is not None
    with runtime.unit_of_work() as uow:
        claim = service.submit_claim(uow, settings, built.claim_id, actor="finance@example.org", today=TODAY)
        assert claim.status == ClaimStatus.SUBMITTED
    return built.claim_id


def _polls_sent(gateway: FakeGateway) -> int:
    return sum(1 for raw in gateway.requests if b"<Qualifier>poll</Qualifier>" in raw)


def test_the_sweeps_poll_behind_a_long_build_leaves_the_claim_to_the_next_poll(
    runtime: Runtime, settings: Settings, gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    postgres_only(runtime)
    claim_id = _submitted(runtime, settings)
    make_gift(runtime, donor(runtime), amount=20_000, received_on=dt.date(2025, 9, 1))
    monkeypatch.setattr(tasks, "POLL_LOCK_WAIT_SECONDS", 1.0)

    def build(uow: UnitOfWork) -> None:  # a build, left uncommitted: it holds the claims' lock
        service.build_claim(uow, settings, through=TODAY, actor="builder", today=TODAY)

    built, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    builder = threading.Thread(target=hold_open(runtime, build, built, release), args=(errors,))
    builder.start()
    outcome: list[str] = []
    try:
        assert built.wait(20) and not errors, errors

        def job() -> None:  # the job as the worker runs it, in its own unit of work
            try:
                with runtime.unit_of_work() as uow:
                    outcome.append(tasks.poll_claim(uow, str(claim_id)))
            except BaseException as exc:
                errors.append(exc)

        started = time.monotonic()
        poller = threading.Thread(target=job)
        poller.start()
        poller.join(8)
        # Done while the build still holds the lock, after the bounded wait, without failing.
        assert not poller.is_alive() and not errors, errors
        assert outcome == ["busy"] and time.monotonic() - started >= 1.0
    finally:
        release.set()
        builder.join(30)
    assert not errors, errors
    # HMRC was asked nothing; the claim waits for the next poll, which (no build running) has HMRC's verdict.
    assert _polls_sent(gateway) == 0
    assert claim_of(runtime, claim_id).status == ClaimStatus.SUBMITTED
    with runtime.unit_of_work() as uow:
        assert tasks.poll_claim(uow, str(claim_id)) == str(ClaimStatus.ACCEPTED)
    assert _polls_sent(gateway) == 1


def test_a_poll_whose_wait_ends_within_the_bound_goes_on(
    runtime: Runtime, settings: Settings, gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bound only cuts a long wait: a build committing within it lets the poll ask HMRC, and its locks are then
    held as before (the lock timeout is put back for the rest of the poll's transaction)."""
    postgres_only(runtime)
    claim_id = _submitted(runtime, settings)
    monkeypatch.setattr(tasks, "POLL_LOCK_WAIT_SECONDS", 10.0)
    held, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    holder = threading.Thread(
        target=hold_open(runtime, lambda uow: service.wait_for_claim_builds(uow.session), held, release),
        args=(errors,),
    )
    holder.start()
    assert held.wait(20)
    threading.Timer(1.0, release.set).start()
    with runtime.unit_of_work() as uow:
        assert tasks.poll_claim(uow, str(claim_id)) == str(ClaimStatus.ACCEPTED)
        setting = uow.session.execute(sa.text("SHOW lock_timeout")).scalar_one()
    holder.join(20)
    assert not errors, errors
    assert setting == "0"
