"""Taking gifts off a claim still `built` (`take_off_what_hmrc_would_refuse`, before its files are written or it is
sent) happens under the claims' lock, as building a claim does: a build that starts while a take-off is uncommitted
waits for it, so it never creates an adjustment about a gift the take-off has just removed (the new claim would
carry tax HMRC never had). Every path that takes the claims' lock and a claim's row lock takes the claims' lock
first (submitting too), so a build and a submit cannot deadlock.

PostgreSQL only: these are waits between two connections; SQLite's BEGIN IMMEDIATE serialises writers anyway."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

from sqlmodel import select

from core.db import UnitOfWork
from core.runtime import Runtime
from core.settings import Settings
from giftaid import service
from giftaid.models import Claim, ClaimGift, ClaimStatus
from tests.giftaid.claim_locks import build_claim_through, claim_of, hold_open, postgres_only, standing_adjustments
from tests.giftaid.factories import donor, make_gift, set_gift
from tests.giftaid.fake_gateway import FakeGateway, gateway, settings

__all__ = ["gateway", "settings"]

BUILT_ON = dt.date(2026, 4, 1)  # gifts of the tax year 2021-22 are still in time
LATE = dt.date(2026, 4, 6)  # ... and no longer: their four years ended on 5 April 2026


def _claim_with_an_old_refunded_gift(runtime: Runtime) -> tuple[uuid.UUID, uuid.UUID]:
    """A claim built in time with a gift that passes the four-year limit before it is written, refunded since it
    was built (the next build would take its Gift Aid back); and a new gift for the next claim to claim."""
    old = make_gift(runtime, donor(runtime), amount=10_000, received_on=dt.date(2021, 6, 1))
    make_gift(runtime, donor(runtime), amount=100_000, received_on=dt.date(2025, 6, 1))
    first = build_claim_through(runtime, runtime.settings, BUILT_ON, BUILT_ON)
    assert first.claim_id is not None and first.gifts == 2
    set_gift(runtime, old, returned_amount=10_000)
    make_gift(runtime, donor(runtime), amount=50_000, received_on=dt.date(2026, 4, 2))
    return first.claim_id, old


def test_a_build_waits_for_a_take_off_and_adjusts_nothing_about_the_gift_it_took_off(runtime: Runtime) -> None:
    postgres_only(runtime)
    claim_id, old = _claim_with_an_old_refunded_gift(runtime)

    def take_off(uow: UnitOfWork) -> None:
        claim = service.get_claim(uow.session, claim_id)
        taken = service.take_off_what_hmrc_would_refuse(
            uow.session, runtime.settings, claim, actor="finance@example.org", today=LATE
        )
        assert [h.gift_id for h in taken] == [old]

    taken_off, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    first = threading.Thread(target=hold_open(runtime, take_off, taken_off, release), args=(errors,))
    first.start()
    assert taken_off.wait(20) and not errors, errors
    results: list[service.ClaimResult] = []
    finished_at: list[float] = []

    def build() -> None:
        try:
            results.append(build_claim_through(runtime, runtime.settings, LATE, LATE))
            finished_at.append(time.monotonic())
        except BaseException as exc:
            errors.append(exc)

    second = threading.Thread(target=build)
    second.start()
    second.join(1.5)
    # The build waits on the claims' lock the uncommitted take-off holds.
    assert second.is_alive() and not errors, errors
    released_at = time.monotonic()
    release.set()
    first.join(20)
    second.join(30)
    assert not errors, errors
    assert finished_at and finished_at[0] > released_at
    # It then saw the gift off its claim: nothing to take back about it, and the new claim carries no adjustment.
    assert standing_adjustments(runtime) == []
    [result] = results
    assert result.claim_id is not None and result.adjustment == 0 and result.total == 50_000
    assert claim_of(runtime, result.claim_id).adjustment == 0
    with runtime.read_session() as session:
        assert session.exec(select(ClaimGift).where(ClaimGift.gift_id == old)).all() == []


def test_a_take_off_waits_for_a_build_and_voids_the_adjustment_it_made(runtime: Runtime) -> None:
    """The other order: the build holds the claims' lock and takes the refunded gift's Gift Aid back; the take-off
    waits for it to commit, then takes the gift off and voids that adjustment (HMRC never had that tax)."""
    postgres_only(runtime)
    claim_id, old = _claim_with_an_old_refunded_gift(runtime)
    results: list[service.ClaimResult] = []

    def build(uow: UnitOfWork) -> None:
        results.append(service.build_claim(uow, runtime.settings, through=LATE, actor="builder", today=LATE))

    built, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    first = threading.Thread(target=hold_open(runtime, build, built, release), args=(errors,))
    first.start()
    assert built.wait(20) and not errors, errors
    assert results[0].adjustment == 2_500  # not committed yet

    def take_off() -> None:
        try:
            with runtime.unit_of_work() as uow:
                claim = service.get_claim(uow.session, claim_id)
                service.take_off_what_hmrc_would_refuse(uow.session, runtime.settings, claim, actor="f", today=LATE)
        except BaseException as exc:
            errors.append(exc)

    second = threading.Thread(target=take_off)
    second.start()
    second.join(1.5)
    assert second.is_alive() and not errors, errors  # waiting for the build's commit
    release.set()
    first.join(20)
    second.join(30)
    assert not errors, errors
    assert standing_adjustments(runtime) == []
    carrier = results[0].claim_id
    assert carrier is not None and claim_of(runtime, carrier).adjustment == 0
    with runtime.read_session() as session:
        assert session.exec(select(ClaimGift).where(ClaimGift.gift_id == old)).all() == []


def test_a_submit_and_a_build_that_withdraws_its_adjustment_cannot_deadlock(
    runtime: Runtime, settings: Settings, gateway: FakeGateway
) -> None:
    """A submit of a claim with a gift to take off, while a build holds the claims' lock and is about to lock that
    claim's row (the money of an adjustment it carries came back: it comes off the claim). Were the submit to lock
    the claim's row first and the claims' lock second, each would wait for the other (PostgreSQL ends one with a
    deadlock error); claims' lock first, the submit waits for the build and then sends."""
    postgres_only(runtime)
    refunded = make_gift(runtime, donor(runtime), amount=10_000, received_on=dt.date(2025, 1, 10))
    earlier = build_claim_through(runtime, settings, dt.date(2025, 2, 1), dt.date(2025, 2, 1))
    assert earlier.claim_id is not None
    with runtime.unit_of_work() as uow:
        service.change_status(uow, earlier.claim_id, ClaimStatus.SUBMITTED, actor="t")
    set_gift(runtime, refunded, returned_amount=10_000)
    make_gift(runtime, donor(runtime), amount=10_000, received_on=dt.date(2021, 6, 1))  # out of time when sent
    make_gift(runtime, donor(runtime), amount=100_000, received_on=dt.date(2025, 6, 1))
    carrier = build_claim_through(runtime, settings, BUILT_ON, BUILT_ON)
    assert carrier.claim_id is not None and carrier.adjustment == 2_500
    set_gift(runtime, refunded, returned_amount=0)  # a dispute won: the money came back

    def build(uow: UnitOfWork) -> None:
        # The claims' lock first (as a build takes it), then the build itself once the submit is waiting.
        service.wait_for_claim_builds(uow.session)
        locked.set()
        assert submit_started.wait(20)
        time.sleep(1.0)
        service.build_claim(uow, settings, through=LATE, actor="builder", today=LATE)

    locked, submit_started, release, built = (threading.Event() for _ in range(4))
    release.set()  # commit as soon as the build is done
    errors: list[BaseException] = []
    first = threading.Thread(target=hold_open(runtime, build, built, release), args=(errors,))
    first.start()
    assert locked.wait(20)
    submitted: list[Claim] = []

    def submit() -> None:
        try:
            with runtime.unit_of_work() as uow:
                submit_started.set()
                claim_id = carrier.claim_id
                assert claim_id is not None
                submitted.append(service.submit_claim(uow, settings, claim_id, actor="finance", today=LATE))
        except BaseException as exc:
            errors.append(exc)

    second = threading.Thread(target=submit)
    second.start()
    first.join(30)
    second.join(30)
    assert not first.is_alive() and not second.is_alive()
    assert not errors, errors
    assert carrier.claim_id is not None
    sent = claim_of(runtime, carrier.claim_id)
    # The build withdrew the adjustment before the submit locked the claim: what was sent carries none.
    assert sent.status == ClaimStatus.SUBMITTED and sent.adjustment == 0 and sent.gifts == 1
    assert len(gateway.submissions) == 1
    [submission] = gateway.submissions.values()
    assert b"<Adjustment>" not in submission.document and b"<Date>2021-06-01</Date>" not in submission.document
