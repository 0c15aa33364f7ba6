"""Money returned after a gift was claimed (refund, chargeback, lost dispute) and oral declarations voided after a
claim: the Gift Aid claimed on that money becomes an adjustment carried by the NEXT claim — Box 2 of its first
schedule, `Adjustment` + `OtherInfo` in its XML, `adjustment` in its JSON."""

from __future__ import annotations

import datetime as dt
import io
import uuid
import zipfile
from typing import Any

from lxml import etree
from sqlmodel import select

from core.runtime import Runtime
from crm.models import DeclarationMethod
from giftaid import service
from giftaid.models import Adjustment, AdjustmentReason, ClaimStatus
from giftaid.validator import validate_schedule
from giftaid.xml import R68_NS
from payments.models import GiftStatus
from tests.giftaid.factories import TODAY, donor, make_gift, set_gift


def build(runtime: Runtime, today: dt.date = TODAY) -> service.ClaimResult:
    with runtime.unit_of_work() as uow:
        return service.build_claim(uow, runtime.settings, through=today, actor="test", today=today)


def adjustments(runtime: Runtime) -> list[tuple[uuid.UUID, uuid.UUID | None, str, int, int]]:
    with runtime.read_session() as session:
        rows = session.exec(select(Adjustment).order_by(Adjustment.detected_at)).all()
        return [(a.claim_id, a.applied_claim_id, a.reason, a.returned_amount, a.amount) for a in rows]


def xml_of(runtime: Runtime, claim_id: uuid.UUID) -> etree._Element:
    out = io.BytesIO()
    with runtime.unit_of_work() as uow:
        service.write_xml_part(uow.session, runtime.settings, service.get_claim(uow.session, claim_id), 1, out)
    return etree.fromstring(out.getvalue())


def test_a_refund_after_the_claim_is_taken_back_by_the_next_claim(runtime: Runtime) -> None:
    ada = donor(runtime)
    refunded = make_gift(runtime, ada, amount=10_000, received_on=dt.date(2025, 6, 1))
    first = build(runtime).claim_id
    assert first is not None
    set_gift(runtime, refunded, returned_amount=10_000)
    make_gift(runtime, ada, amount=20_000, received_on=dt.date(2025, 10, 1))

    second = build(runtime)

    assert second.adjustment == 2_500
    assert second.to_json()["adjustment"] == {"amount": 2_500, "currency": "GBP"}
    assert second.gift_aid == 5_000
    assert adjustments(runtime) == [(first, second.claim_id, AdjustmentReason.REFUND, 10_000, 2_500)]
    assert second.claim_id is not None
    # Box 2 of the first schedule: the tax, not the donation.
    with runtime.read_session() as session:
        ods = service.schedule_part(session, runtime.settings, service.get_claim(session, second.claim_id), 1)
    report = validate_schedule(ods, today=TODAY)
    assert report.ok and str(report.overclaimed) == "25.00"
    # The XML: Repayment/Adjustment and Claim/OtherInfo explaining it (HMRC rules 7059/7061).
    root = xml_of(runtime, second.claim_id)
    ns = {"r": R68_NS}
    assert root.findtext(".//r:Repayment/r:Adjustment", namespaces=ns) == "25.00"
    other = root.findtext(".//r:Claim/r:OtherInfo", namespaces=ns)
    assert other is not None and other.startswith("Adjustment 25.00: tax previously claimed on 1 donation(s) refunded")
    # Nothing is taken back twice.
    make_gift(runtime, ada, amount=20_000, received_on=dt.date(2025, 10, 2))
    assert build(runtime).adjustment == 0


def test_a_partial_refund_takes_back_25_percent_of_the_refunded_part(runtime: Runtime) -> None:
    ada = donor(runtime)
    gift = make_gift(runtime, ada, amount=10_000, received_on=dt.date(2025, 6, 1))
    first = build(runtime).claim_id
    set_gift(runtime, gift, returned_amount=4_000)
    make_gift(runtime, ada, amount=20_000, received_on=dt.date(2025, 10, 1))
    assert build(runtime).adjustment == 1_000
    set_gift(runtime, gift, returned_amount=10_000)
    make_gift(runtime, ada, amount=20_000, received_on=dt.date(2025, 10, 2))
    assert build(runtime).adjustment == 1_500
    assert [(a[0], a[3], a[4]) for a in adjustments(runtime)] == [(first, 4_000, 1_000), (first, 6_000, 1_500)]


def test_a_gift_refunded_in_part_before_the_claim_is_claimed_on_the_rest_and_adjusted_on_later_refunds(
    runtime: Runtime,
) -> None:
    ada = donor(runtime)
    gift = make_gift(runtime, ada, amount=10_000, returned_amount=2_000, received_on=dt.date(2025, 6, 1))
    assert build(runtime).total == 8_000
    set_gift(runtime, gift, returned_amount=10_000)
    make_gift(runtime, ada, amount=20_000, received_on=dt.date(2025, 10, 1))
    assert build(runtime).adjustment == 2_000  # 25% of the £80 claimed, not of £100


def test_a_chargeback_after_the_claim_is_adjusted(runtime: Runtime) -> None:
    ada = donor(runtime)
    gift = make_gift(runtime, ada, amount=10_000, received_on=dt.date(2025, 6, 1))
    build(runtime)
    set_gift(runtime, gift, status=GiftStatus.REVERSED)
    make_gift(runtime, ada, amount=20_000, received_on=dt.date(2025, 10, 1))
    assert build(runtime).adjustment == 2_500


def test_voiding_an_oral_declaration_after_its_gifts_were_claimed_adjusts_them(runtime: Runtime) -> None:
    today = dt.date(2025, 10, 20)
    oral = donor(
        runtime, method=DeclarationMethod.ORAL, made_on=dt.date(2025, 9, 1), confirmation_sent_on=dt.date(2025, 9, 2)
    )
    with runtime.read_session() as session:
        from crm.models import Declaration

        declaration_id = session.exec(select(Declaration.id).where(Declaration.supporter_id == oral)).one()
    gift = make_gift(runtime, oral, amount=4_000, received_on=dt.date(2025, 8, 1))
    other = make_gift(runtime, donor(runtime), amount=40_000, received_on=dt.date(2025, 10, 1))
    settings = runtime.settings.model_copy(
        update={"giftaid": runtime.settings.giftaid.model_copy(update={"wait_for_oral_cancellation_window": False})}
    )
    with runtime.unit_of_work() as uow:
        first = service.build_claim(uow, settings, through=dt.date(2025, 9, 30), actor="test", today=today)
    assert first.total == 4_000
    with runtime.unit_of_work() as uow:
        change = service.cancel_declaration(
            uow,
            settings,
            declaration_id,
            effective_on=dt.date(2025, 9, 20),
            reason="donor phoned",
            actor="f@example.org",
            today=today,
        )
    assert change.adjusted_gift_ids == [gift]
    with runtime.unit_of_work() as uow:
        second = service.build_claim(uow, settings, through=today, actor="test", today=today)
    assert second.adjustment == 1_000
    assert adjustments(runtime)[0][2] == AdjustmentReason.DECLARATION_VOIDED
    assert other not in change.adjusted_gift_ids


def test_an_adjustment_larger_than_the_next_claim_waits_for_a_larger_one(runtime: Runtime) -> None:
    ada = donor(runtime)
    gift = make_gift(runtime, ada, amount=100_000, received_on=dt.date(2025, 6, 1))
    build(runtime)
    set_gift(runtime, gift, returned_amount=100_000)
    make_gift(runtime, ada, amount=4_000, received_on=dt.date(2025, 10, 1))
    small = build(runtime)
    assert small.adjustment == 0  # £250 to take back; this claim is worth £10
    assert adjustments(runtime)[0][1] is None
    make_gift(runtime, ada, amount=200_000, received_on=dt.date(2025, 10, 2))
    large = build(runtime)
    assert large.adjustment == 25_000
    assert adjustments(runtime)[0][1] == large.claim_id


def test_a_rejected_claim_gives_its_adjustment_back_to_the_next_claim(runtime: Runtime) -> None:
    ada = donor(runtime)
    gift = make_gift(runtime, ada, amount=10_000, received_on=dt.date(2025, 6, 1))
    build(runtime)
    set_gift(runtime, gift, returned_amount=10_000)
    make_gift(runtime, ada, amount=20_000, received_on=dt.date(2025, 10, 1))
    carrying = build(runtime)
    assert carrying.claim_id is not None and carrying.adjustment == 2_500
    with runtime.unit_of_work() as uow:
        service.change_status(uow, carrying.claim_id, ClaimStatus.REJECTED, actor="f@example.org", reason="typo")
    assert adjustments(runtime)[0][1] is None
    again = build(runtime)
    assert again.adjustment == 2_500 and again.total == 20_000


def test_a_rejected_claims_adjustment_comes_off_a_later_claim_still_unsent(runtime: Runtime) -> None:
    """Claim 1 claimed a gift later refunded; claim 2 (built, not sent) took the adjustment; then HMRC rejects
    claim 1. HMRC never paid that tax, so claim 2 no longer deducts it: its JSON, Box 2 and XML say nothing of it,
    and its history says why. Had claim 2 been sent, the deduction stays on record for finance to correct."""
    ada = donor(runtime)
    refunded = make_gift(runtime, ada, amount=10_000, received_on=dt.date(2025, 6, 1))
    first = build(runtime).claim_id
    assert first is not None
    with runtime.unit_of_work() as uow:
        service.change_status(uow, first, ClaimStatus.SUBMITTED, actor="f@example.org")
    set_gift(runtime, refunded, returned_amount=10_000)
    make_gift(runtime, ada, amount=20_000, received_on=dt.date(2025, 10, 1))
    carrying = build(runtime)
    assert carrying.claim_id is not None and carrying.adjustment == 2_500
    assert xml_of(runtime, carrying.claim_id).find(f".//{{{R68_NS}}}Adjustment") is not None

    with runtime.unit_of_work() as uow:
        service.change_status(uow, first, ClaimStatus.REJECTED, actor="f@example.org", reason="wrong reference")

    assert adjustments(runtime) == []
    with runtime.read_session() as session:
        claim = service.get_claim(session, carrying.claim_id)
        body = service.claim_json(session, claim, detail=True)
        ods = service.schedule_part(session, runtime.settings, claim, 1)
    assert body["adjustment"].amount == 0
    [withdrawn] = [e["detail"] for e in body["events"] if "adjustment_withdrawn" in e["detail"]]
    assert withdrawn["adjustment_withdrawn"] == {"amount": 2_500, "currency": "GBP"}
    assert str(first) in withdrawn["reason"]
    assert xml_of(runtime, carrying.claim_id).find(f".//{{{R68_NS}}}Adjustment") is None
    assert validate_schedule(ods).ok
    # The refunded gift's Gift Aid was never paid and nothing is left to claim on it: no later claim deducts it.
    make_gift(runtime, ada, amount=4_000, received_on=dt.date(2025, 10, 2))
    assert build(runtime).adjustment == 0


def test_a_rejected_claims_adjustment_stays_on_a_later_claim_already_sent(runtime: Runtime) -> None:
    ada = donor(runtime)
    refunded = make_gift(runtime, ada, amount=10_000, received_on=dt.date(2025, 6, 1))
    first = build(runtime).claim_id
    assert first is not None
    set_gift(runtime, refunded, returned_amount=10_000)
    make_gift(runtime, ada, amount=20_000, received_on=dt.date(2025, 10, 1))
    carrying = build(runtime)
    assert carrying.claim_id is not None
    with runtime.unit_of_work() as uow:
        service.change_status(uow, first, ClaimStatus.SUBMITTED, actor="f@example.org")
        service.change_status(uow, carrying.claim_id, ClaimStatus.SUBMITTED, actor="f@example.org")
    with runtime.unit_of_work() as uow:
        rejected = service.change_status(uow, first, ClaimStatus.REJECTED, actor="f@example.org", reason="typo")
        [kept] = repository_adjustment_ids(uow.session)
    with runtime.read_session() as session:
        body = service.claim_json(session, service.get_claim(session, first), detail=True)
        assert service.get_claim(session, carrying.claim_id).adjustment == 2_500
    assert body["events"][-1]["detail"]["adjustments_already_deducted"] == [str(kept)]
    assert rejected.status == ClaimStatus.REJECTED


def repository_adjustment_ids(session: Any) -> list[uuid.UUID]:
    return list(session.exec(select(Adjustment.id)).all())


def test_supporter_totals_count_gift_aid_claimable_and_claimed(runtime: Runtime) -> None:
    ada = donor(runtime)
    claimed = make_gift(runtime, ada, amount=10_000, received_on=dt.date(2025, 6, 1))
    with runtime.unit_of_work() as uow:
        service.build_claim(uow, runtime.settings, through=dt.date(2025, 6, 30), actor="t", today=TODAY)
    make_gift(runtime, ada, amount=4_000, received_on=dt.date(2025, 7, 1))
    with runtime.read_session() as session:
        totals = service.supporter_totals(session, [ada], runtime.settings)
    assert totals["gift_aid_claimable"].amount == 1_000
    assert totals["gift_aid_claimed"].amount == 2_500
    set_gift(runtime, claimed, returned_amount=10_000)
    with runtime.unit_of_work() as uow:
        service.detect_adjustments(uow, service.rules_from(runtime.settings, TODAY))
    with runtime.read_session() as session:
        totals = service.supporter_totals(session, [ada], runtime.settings)
    assert totals["gift_aid_claimed"].amount == 0
    assert service.reassign_supporter(None, ada, ada) == {}  # type: ignore[arg-type]


def test_the_first_schedule_carries_box_2_only(runtime: Runtime) -> None:
    ada = donor(runtime)
    gift = make_gift(runtime, ada, amount=10_000, received_on=dt.date(2025, 6, 1))
    build(runtime)
    set_gift(runtime, gift, returned_amount=10_000)
    make_gift(runtime, ada, amount=20_000, received_on=dt.date(2025, 10, 1))
    result = build(runtime)
    with runtime.read_session() as session:
        data = service.schedule_part(session, runtime.settings, service.get_claim(session, result.claim_id), 1)  # type: ignore[arg-type]
    content = zipfile.ZipFile(io.BytesIO(data)).read("content.xml")
    assert b'office:value="25.00"' in content or b'office:value="25"' in content


def test_the_supporter_api_shows_gift_aid_claimable_and_claimed(runtime: Runtime, client) -> None:  # type: ignore[no-untyped-def]
    from core.clock import uk_today
    from tests.giftaid.factories import staff_headers

    today = uk_today()
    ada = donor(runtime, made_on=today - dt.timedelta(days=200))
    make_gift(runtime, ada, amount=10_000, received_on=today - dt.timedelta(days=100))
    with runtime.unit_of_work() as uow:
        service.build_claim(uow, runtime.settings, through=today - dt.timedelta(days=50), actor="t")
    make_gift(runtime, ada, amount=4_000, received_on=today - dt.timedelta(days=10))
    totals = client.get(f"/api/supporters/{ada}", headers=staff_headers(runtime, "finance")).json()["totals"]
    assert totals["gift_aid_claimable"] == {"amount": 1_000, "currency": "GBP"}
    assert totals["gift_aid_claimed"] == {"amount": 2_500, "currency": "GBP"}


def _claim_of_1001_lines_after_a_refund(runtime: Runtime, refunded_pence: int) -> service.ClaimResult:
    """A first claim of a £2,000 gift, then `refunded_pence` of it refunded; the next claim has 1,001 lines: 1,000
    gifts of £1 (the first schedule: £250 of Gift Aid) and a £10,000 gift dated last (on the second schedule)."""
    from payments.models import Gift, Method, Provider
    from tests.giftaid.factories import noon

    ada = donor(runtime)
    refunded = make_gift(runtime, ada, amount=200_000, received_on=dt.date(2024, 12, 1))
    with runtime.unit_of_work() as uow:
        assert service.build_claim(
            uow, runtime.settings, through=dt.date(2024, 12, 31), actor="t", today=TODAY
        ).claim_id
    set_gift(runtime, refunded, returned_amount=refunded_pence)
    with runtime.unit_of_work() as uow:
        for index in range(1_000):
            day = dt.date(2025, 1, 1) + dt.timedelta(days=index % 200)
            uow.session.add(
                Gift(
                    supporter_id=ada,
                    amount=100,
                    status=GiftStatus.PAID,
                    provider=Provider.GOCARDLESS,
                    method=Method.DIRECT_DEBIT,
                    received_at=noon(day),
                    received_on=day,
                )
            )
    make_gift(runtime, ada, amount=1_000_000, received_on=dt.date(2025, 10, 1))
    with runtime.unit_of_work() as uow:
        return service.build_claim(uow, runtime.settings, through=TODAY, actor="t", today=TODAY)


def test_an_adjustment_larger_than_the_first_schedules_gift_aid_waits(runtime: Runtime) -> None:
    """Box 2 of the first schedule (and the first message) carries the adjustment, and each schedule is a claim of
    its own to HMRC: £500 to take back fits the claim's £2,750 of Gift Aid but not its first schedule's £250, so it
    waits for a claim it fits rather than making the first schedule a negative claim."""
    result = _claim_of_1001_lines_after_a_refund(runtime, 200_000)
    assert (result.lines, result.gift_aid, result.adjustment) == (1_001, 275_000, 0)
    with runtime.read_session() as session:
        (pending,) = session.exec(select(Adjustment)).all()
        assert (pending.amount, pending.applied_claim_id) == (50_000, None)


def test_an_adjustment_that_fits_the_first_schedule_is_in_its_box_2(runtime: Runtime) -> None:
    result = _claim_of_1001_lines_after_a_refund(runtime, 60_000)  # £150 of tax to take back
    assert (result.lines, result.adjustment) == (1_001, 15_000)
    with runtime.read_session() as session:
        ods = service.schedule_part(session, runtime.settings, service.get_claim(session, result.claim_id), 1)
    report = validate_schedule(ods, today=TODAY)
    assert report.overclaimed is not None and report.overclaimed * 4 <= report.total


def test_a_claim_written_with_the_default_settings_is_a_real_one(runtime: Runtime) -> None:
    """Found in review: `[hmrc] test_mode` was on by default, so every file and submission said GatewayTest and HMRC
    would have checked the claim and thrown it away. Off by default now; on, the message says so."""
    make_gift(runtime, donor(runtime), amount=10_000, received_on=dt.date(2025, 6, 1))
    claim_id = build(runtime).claim_id
    assert claim_id is not None
    gateway_test = "{http://www.govtalk.gov.uk/CM/envelope}GatewayTest"
    assert xml_of(runtime, claim_id).find(f".//{gateway_test}") is None
    testing = runtime.settings.model_copy(update={"hmrc": runtime.settings.hmrc.model_copy(update={"test_mode": True})})
    out = io.BytesIO()
    with runtime.unit_of_work() as uow:
        service.write_xml_part(uow.session, testing, service.get_claim(uow.session, claim_id), 1, out)
    assert etree.fromstring(out.getvalue()).findtext(f".//{gateway_test}") == "1"
