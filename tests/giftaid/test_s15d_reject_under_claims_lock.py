"""Rejecting a claim (by hand, or by a poll that has HMRC's business error) releases its gifts and voids the
adjustments about them, under the claims' lock, as building a claim does: a build that starts while a rejection is
uncommitted waits for it, so it never creates an adjustment about a gift of the claim being rejected (the next claim
would take back tax HMRC never paid). A poll takes the claims' lock before the claim's row, as every path taking
both does, so a poll that rejects and a build that locks the polled claim's row cannot deadlock.

PostgreSQL only: these are waits between two connections; SQLite's BEGIN IMMEDIATE serialises writers anyway."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable

import pytest
from sqlmodel import select

from core.db import UnitOfWork
from core.runtime import Runtime
from core.settings import Settings
from giftaid import service
from giftaid.models import Claim, ClaimEvent, ClaimGift, ClaimStatus
from tests.giftaid.claim_locks import build_claim_through, claim_of, hold_open, postgres_only, standing_adjustments
from tests.giftaid.factories import TODAY, donor, make_gift, set_gift
from tests.giftaid.fake_gateway import FakeGateway, gateway, settings

__all__ = ["gateway", "settings"]


def _submit(runtime: Runtime, settings: Settings, claim_id: uuid.UUID) -> None:
    """Through the (fake) gateway: the claim is submitted with a correlation id to poll."""
    with runtime.unit_of_work() as uow:
        claim = service.submit_claim(uow, settings, claim_id, actor="finance@example.org")
        assert claim.status == ClaimStatus.SUBMITTED and claim.correlation_id


def _reject_by_hand(uow: UnitOfWork, settings: Settings, claim_id: uuid.UUID) -> None:
    service.change_status(uow, claim_id, ClaimStatus.REJECTED, actor="finance@example.org", reason="HMRC said no")


def _reject_by_poll(uow: UnitOfWork, settings: Settings, claim_id: uuid.UUID) -> None:
    claim = service.poll_claim(uow, settings, claim_id, actor="system:poll")
    assert claim.status == ClaimStatus.REJECTED


REJECTIONS: dict[str, Callable[[UnitOfWork, Settings, uuid.UUID], None]] = {
    "by_hand": _reject_by_hand,
    "by_poll": _reject_by_poll,
}


@pytest.mark.parametrize("how", sorted(REJECTIONS))
def test_a_build_waits_for_a_rejection_and_adjusts_no_gift_of_the_rejected_claim(
    runtime: Runtime, settings: Settings, gateway: FakeGateway, how: str
) -> None:
    """A submitted claim whose gift was refunded since: the next build would take its Gift Aid back. HMRC rejects the
    claim (so never paid that tax) while a build starts. Without the claims' lock the build read the claim as still
    submitted and its gift as claimed (the rejection was not committed), and took 25% of the refund back in the new
    claim: a deduction of tax HMRC never paid, which nothing would ever void."""
    postgres_only(runtime)
    refunded = make_gift(runtime, donor(runtime), amount=10_000, received_on=dt.date(2025, 6, 1))
    first = build_claim_through(runtime, settings, TODAY, TODAY)
    assert first.claim_id is not None and first.gifts == 1
    rejected_id = first.claim_id
    if how == "by_poll":
        _submit(runtime, settings, rejected_id)
        gateway.outcome = "business_error"
    else:
        with runtime.unit_of_work() as uow:
            service.change_status(uow, rejected_id, ClaimStatus.SUBMITTED, actor="finance@example.org")
    set_gift(runtime, refunded, returned_amount=10_000)
    make_gift(runtime, donor(runtime), amount=50_000, received_on=dt.date(2025, 10, 1))

    rejected, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def reject(uow: UnitOfWork) -> None:
        REJECTIONS[how](uow, settings, rejected_id)

    first_thread = threading.Thread(target=hold_open(runtime, reject, rejected, release), args=(errors,))
    first_thread.start()
    assert rejected.wait(20) and not errors, errors
    results: list[service.ClaimResult] = []
    finished_at: list[float] = []

    def build() -> None:
        try:
            results.append(build_claim_through(runtime, settings, TODAY, TODAY))
            finished_at.append(time.monotonic())
        except BaseException as exc:
            errors.append(exc)

    second = threading.Thread(target=build)
    second.start()
    second.join(1.5)
    build_waited = second.is_alive()  # for the rejection's commit
    released_at = time.monotonic()
    release.set()
    first_thread.join(20)
    second.join(30)
    assert not errors, errors
    assert build_waited
    assert finished_at and finished_at[0] > released_at
    assert claim_of(runtime, rejected_id).status == ClaimStatus.REJECTED
    # The build saw the claim rejected: nothing taken back about its gift, and the new claim carries no adjustment.
    assert standing_adjustments(runtime) == []
    [result] = results
    assert result.claim_id is not None and result.adjustment == 0 and result.total == 50_000
    assert claim_of(runtime, result.claim_id).adjustment == 0
    with runtime.read_session() as session:
        [row] = session.exec(select(ClaimGift).where(ClaimGift.gift_id == refunded)).all()
        assert row.claim_id == rejected_id and row.live is None and row.adjusted_returned == 0


def test_a_rejection_waits_for_a_build_and_voids_the_adjustment_it_made(runtime: Runtime, settings: Settings) -> None:
    """The other order: the build holds the claims' lock and takes the refunded gift's Gift Aid back in a new claim;
    the rejection waits for it to commit, then voids that adjustment and takes it off the new claim (still built)."""
    postgres_only(runtime)
    refunded = make_gift(runtime, donor(runtime), amount=10_000, received_on=dt.date(2025, 6, 1))
    first = build_claim_through(runtime, settings, TODAY, TODAY)
    assert first.claim_id is not None
    rejected_id = first.claim_id
    with runtime.unit_of_work() as uow:
        service.change_status(uow, rejected_id, ClaimStatus.SUBMITTED, actor="finance@example.org")
    set_gift(runtime, refunded, returned_amount=10_000)
    make_gift(runtime, donor(runtime), amount=50_000, received_on=dt.date(2025, 10, 1))
    results: list[service.ClaimResult] = []
    built, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def build_held(uow: UnitOfWork) -> None:
        results.append(service.build_claim(uow, settings, through=TODAY, actor="builder", today=TODAY))

    first_thread = threading.Thread(target=hold_open(runtime, build_held, built, release), args=(errors,))
    first_thread.start()
    assert built.wait(20) and not errors, errors
    assert results[0].adjustment == 2_500  # not committed yet

    def reject() -> None:
        try:
            with runtime.unit_of_work() as uow:
                _reject_by_hand(uow, settings, rejected_id)
        except BaseException as exc:
            errors.append(exc)

    second = threading.Thread(target=reject)
    second.start()
    second.join(1.5)
    rejection_waited = second.is_alive()  # for the build's commit
    release.set()
    first_thread.join(20)
    second.join(30)
    assert not errors, errors
    assert rejection_waited
    assert standing_adjustments(runtime) == []
    carrier = results[0].claim_id
    assert carrier is not None and claim_of(runtime, carrier).adjustment == 0
    assert claim_of(runtime, rejected_id).status == ClaimStatus.REJECTED


def test_a_poll_that_rejects_and_a_build_that_locks_the_polled_claim_cannot_deadlock(
    runtime: Runtime, settings: Settings, gateway: FakeGateway
) -> None:
    """A poll of a claim HMRC rejects, while a build holds the claims' lock and is about to lock that claim's row
    (the money of an adjustment the claim carries came back). Were the poll to lock the claim's row first and the
    claims' lock only to reject it, each would wait for the other (PostgreSQL ends one with a deadlock error);
    claims' lock first, the poll waits for the build and then rejects the claim."""
    postgres_only(runtime)
    refunded = make_gift(runtime, donor(runtime), amount=10_000, received_on=dt.date(2025, 1, 10))
    earlier = build_claim_through(runtime, settings, dt.date(2025, 2, 1), dt.date(2025, 2, 1))
    assert earlier.claim_id is not None
    with runtime.unit_of_work() as uow:
        service.change_status(uow, earlier.claim_id, ClaimStatus.SUBMITTED, actor="t")
    set_gift(runtime, refunded, returned_amount=10_000)
    make_gift(runtime, donor(runtime), amount=100_000, received_on=dt.date(2025, 6, 1))
    carrier = build_claim_through(runtime, settings, TODAY, TODAY)
    carrier_id = carrier.claim_id
    assert carrier_id is not None and carrier.adjustment == 2_500
    _submit(runtime, settings, carrier_id)
    gateway.outcome = "business_error"
    set_gift(runtime, refunded, returned_amount=0)  # a dispute won: the money came back

    locked, poll_started, built, release = (threading.Event() for _ in range(4))
    errors: list[BaseException] = []
    results: list[service.ClaimResult] = []

    def build() -> None:
        try:
            with runtime.unit_of_work() as uow:
                # The claims' lock first (as a build takes it), then the build itself once the poll is under way.
                service.wait_for_claim_builds(uow.session)
                locked.set()
                assert poll_started.wait(20)
                time.sleep(1.0)
                results.append(service.build_claim(uow, settings, through=TODAY, actor="builder", today=TODAY))
                built.set()
                assert release.wait(20)
        except BaseException as exc:
            errors.append(exc)
            built.set()

    first = threading.Thread(target=build)
    first.start()
    assert locked.wait(20)
    polled: list[Claim] = []

    def poll() -> None:
        try:
            with runtime.unit_of_work() as uow:
                poll_started.set()
                polled.append(service.poll_claim(uow, settings, carrier_id, actor="system:poll"))
        except BaseException as exc:
            errors.append(exc)

    second = threading.Thread(target=poll)
    second.start()
    assert built.wait(30)
    # The build is done but uncommitted: the poll still waits for the claims' lock it holds.
    poll_waited = second.is_alive() and not polled
    release.set()
    first.join(30)
    second.join(30)
    assert not first.is_alive() and not second.is_alive()
    assert not errors, errors
    assert poll_waited
    assert polled and polled[0].status == ClaimStatus.REJECTED
    assert claim_of(runtime, carrier_id).status == ClaimStatus.REJECTED
    # The build ran first, with the carrier submitted: HMRC had its deduction, so the gift whose money came back was
    # released from its claim and claimed again by the new claim; the rejection then says HMRC never had it.
    [result] = results
    assert result.claim_id is not None and result.gifts == 1 and result.total == 10_000
    with runtime.read_session() as session:
        events = session.exec(
            select(ClaimEvent).where(ClaimEvent.claim_id == carrier_id, ClaimEvent.status == ClaimStatus.REJECTED)
        ).all()
    [rejection] = events
    assert rejection.detail["gifts_claimed_again"] == [str(refunded)]
