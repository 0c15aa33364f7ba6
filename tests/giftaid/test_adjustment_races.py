"""Adjustments found in review: one refund is taken back once even when found at the same moment by two
transactions, and a voided declaration takes back nothing that another declaration still covers."""

from __future__ import annotations

import datetime as dt
import threading

from sqlmodel import select

from core.runtime import Runtime
from crm.models import DeclarationMethod
from giftaid import service
from giftaid.models import Adjustment
from tests.giftaid.factories import donor, make_declaration, make_gift, make_supporter, set_gift


def build(runtime: Runtime, through: dt.date, today: dt.date) -> service.ClaimResult:
    with runtime.unit_of_work() as uow:
        return service.build_claim(uow, runtime.settings, through=through, actor="test", today=today)


def adjustments(runtime: Runtime) -> list[Adjustment]:
    with runtime.read_session() as session:
        return list(session.exec(select(Adjustment)).all())


def test_a_refund_is_taken_back_once_when_a_declaration_is_voided_while_a_claim_is_built(runtime: Runtime) -> None:
    """§5: a refund after the claim is ONE adjustment of 25% of the refunded part. Voiding an oral declaration runs
    the adjustment search; a claim built at the same moment runs it too. Without the claims' lock around the search
    (PostgreSQL: SQLite serialises writers anyway) both found the same refund and HMRC was repaid the tax twice."""
    today = dt.date(2025, 11, 1)
    bob = donor(runtime, first_name="Bob", last_name="Jones")
    refunded = make_gift(runtime, bob, amount=10_000, received_on=dt.date(2025, 6, 1))
    oral_donor = make_supporter(runtime)
    oral = make_declaration(
        runtime,
        oral_donor,
        method=DeclarationMethod.ORAL,
        made_on=dt.date(2025, 10, 20),
        confirmation_sent_on=dt.date(2025, 10, 21),
    )
    assert build(runtime, dt.date(2025, 9, 30), today).total == 10_000
    set_gift(runtime, refunded, returned_amount=10_000)
    make_gift(runtime, bob, amount=50_000, received_on=dt.date(2025, 10, 1))

    voided_not_committed = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    def void() -> None:
        try:
            with runtime.unit_of_work() as uow:
                service.cancel_declaration(
                    uow, runtime.settings, oral, effective_on=dt.date(2025, 10, 25), actor="f", today=today
                )
                voided_not_committed.set()
                release.wait(10)
        except BaseException as exc:
            errors.append(exc)
            voided_not_committed.set()

    results: list[service.ClaimResult] = []

    def claim() -> None:
        try:
            results.append(build(runtime, today, today))
        except BaseException as exc:
            errors.append(exc)

    t1 = threading.Thread(target=void)
    t1.start()
    assert voided_not_committed.wait(10)
    t2 = threading.Thread(target=claim)
    t2.start()
    t2.join(1.5)  # let the builder read (and, on PostgreSQL, block on the row the voiding updated)
    release.set()
    t1.join(10)
    t2.join(20)
    assert not errors, errors
    found = [(a.gift_id, a.amount) for a in adjustments(runtime)]
    assert found == [(refunded, 2_500)]


def test_voiding_an_oral_declaration_does_not_take_back_gift_aid_a_valid_written_declaration_still_covers(
    runtime: Runtime,
) -> None:
    """Found in review. §1C rule 13 / §5: voiding an oral declaration makes *it* never made; a gift that a valid
    written declaration (made earlier, enduring) also covers is still a gift HMRC lets us claim: no tax is taken
    back. A gift the void declaration alone covered is still adjusted."""
    ada = make_supporter(runtime)
    make_declaration(runtime, ada, made_on=dt.date(2024, 1, 10))  # written, enduring, never cancelled
    oral = make_declaration(
        runtime,
        ada,
        method=DeclarationMethod.ORAL,
        made_on=dt.date(2025, 9, 1),
        confirmation_sent_on=dt.date(2025, 9, 2),
    )
    gift = make_gift(runtime, ada, amount=10_000, received_on=dt.date(2025, 8, 1))
    today = dt.date(2025, 10, 3)  # the oral declaration's 30-day window closed on 2 October
    first = build(runtime, today, today)
    assert first.total == 10_000
    # The donor's cancellation letter, dated within the 30 days, arrives late: the oral declaration is void.
    with runtime.unit_of_work() as uow:
        change = service.cancel_declaration(
            uow, runtime.settings, oral, effective_on=dt.date(2025, 10, 1), actor="f@example.org", today=today
        )
    # The written declaration still covers the gift...
    with runtime.read_session() as session:
        explanation = service.explain(session, runtime.settings, gift, today=today)
    assert explanation.code == "already_claimed"
    # ...so no Gift Aid should be taken back on it.
    assert change.adjusted_gift_ids == []
    assert adjustments(runtime) == []
    # The same, for a donor whose only declaration was the oral one: the Gift Aid is taken back.
    bea = make_supporter(runtime)
    only_oral = make_declaration(
        runtime,
        bea,
        method=DeclarationMethod.ORAL,
        made_on=dt.date(2025, 9, 1),
        confirmation_sent_on=dt.date(2025, 9, 2),
    )
    beas_gift = make_gift(runtime, bea, amount=10_000, received_on=dt.date(2025, 8, 1))
    assert build(runtime, today, today).total == 10_000
    with runtime.unit_of_work() as uow:
        change = service.cancel_declaration(
            uow, runtime.settings, only_oral, effective_on=dt.date(2025, 10, 1), actor="f@example.org", today=today
        )
    assert change.adjusted_gift_ids == [beas_gift]
    assert [(a.gift_id, a.amount) for a in adjustments(runtime)] == [(beas_gift, 2_500)]
