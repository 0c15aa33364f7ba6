"""Edges of HMRC's rules found in review (giftaid.md §1B rule 6, §1C rules 11, 13-14, §2): how far back a
declaration reaches, cancelling a recorded oral declaration, the benefit test on a partly refunded gift, and donors
named in other scripts in the schedule."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from core.runtime import Runtime
from crm.models import Declaration, DeclarationMethod
from giftaid import service
from giftaid.models import Claim
from giftaid.schedule import latin1_text
from giftaid.validator import validate_schedule
from tests.giftaid.factories import TODAY, donor, make_declaration, make_gift, make_supporter, run_giving, staff_headers


def code_of(runtime: Runtime, gift_id: uuid.UUID, today: dt.date = TODAY) -> str:
    with runtime.read_session() as session:
        explanation = service.explain(session, runtime.settings, gift_id, today=today)
    return explanation.code or "claimable"


def build(runtime: Runtime, through: dt.date = TODAY, today: dt.date = TODAY) -> service.ClaimResult:
    with runtime.unit_of_work() as uow:
        return service.build_claim(uow, runtime.settings, through=through, actor="test", today=today)


def declaration_of(runtime: Runtime, supporter: uuid.UUID) -> uuid.UUID:
    with runtime.read_session() as session:
        return session.exec(select(Declaration.id).where(Declaration.supporter_id == supporter)).one()


def cancel(runtime: Runtime, declaration_id: uuid.UUID, effective_on: dt.date) -> service.DeclarationChange:
    with runtime.unit_of_work() as uow:
        return service.cancel_declaration(
            uow, runtime.settings, declaration_id, effective_on=effective_on, actor="test", today=TODAY
        )


def write_schedule(runtime: Runtime, claim_id: uuid.UUID | None, folder: Path) -> list[Path]:
    assert claim_id is not None
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, claim_id)
        return service.write_claim_files(uow.session, runtime.settings, claim, folder, "ods")


# --- §1C rules 13-14: cancelling an oral declaration ---------------------------------------------------------------


def test_cancelling_a_recorded_oral_declaration_later_is_not_retrospective(runtime: Runtime) -> None:
    """A recorded oral declaration is in effect without a written record, so there is no 30-day window to void it:
    cancelled later, the gifts before the cancellation stay claimable and no tax is taken back."""
    supporter = donor(
        runtime, method=DeclarationMethod.ORAL, made_on=dt.date(2024, 1, 10), evidence={"recording_id": "call-0042"}
    )
    make_gift(runtime, supporter, amount=10_000, received_on=dt.date(2025, 6, 1))
    unclaimed = make_gift(runtime, supporter, amount=5_000, received_on=dt.date(2025, 9, 1))
    after = make_gift(runtime, supporter, amount=5_000, received_on=dt.date(2025, 10, 2))
    assert build(runtime, through=dt.date(2025, 6, 30)).claim_id is not None
    change = cancel(runtime, declaration_of(runtime, supporter), dt.date(2025, 10, 1))
    assert (code_of(runtime, unclaimed), change.adjusted_gift_ids) == ("claimable", [])
    assert code_of(runtime, after) == "declaration_cancelled"


def test_cancelling_an_oral_declaration_within_30_days_of_its_written_record_voids_it(runtime: Runtime) -> None:
    """The rule 13 case still voids it, recording or not: the claimed gift's tax is taken back."""
    supporter = donor(
        runtime,
        method=DeclarationMethod.ORAL,
        made_on=dt.date(2025, 5, 20),
        confirmation_sent_on=dt.date(2025, 5, 21),
        evidence={"recording_id": "call-0043"},
    )
    claimed = make_gift(runtime, supporter, amount=10_000, received_on=dt.date(2025, 6, 1))
    assert build(runtime, through=dt.date(2025, 6, 5)).claim_id is not None
    change = cancel(runtime, declaration_of(runtime, supporter), dt.date(2025, 6, 10))
    assert change.adjusted_gift_ids == [claimed]


@pytest.mark.parametrize(("letter_days_ago", "voided"), [(10, True), (40, False)])
def test_what_counts_for_the_30_days_is_when_the_donor_cancelled_not_the_date_it_takes_effect(
    runtime: Runtime, letter_days_ago: int, voided: bool
) -> None:
    """Found in review: a donor who rings on day 10 after the letter to stop "from next month" has cancelled within
    the 30 days (§1C rule 13): void, whatever date they asked it to take effect. On day 40 it is an ordinary
    cancellation from that date."""
    from core.clock import uk_today

    today = uk_today()
    supporter = make_supporter(runtime)
    declaration_id = make_declaration(
        runtime,
        supporter,
        method=DeclarationMethod.ORAL,
        made_on=today - dt.timedelta(days=letter_days_ago + 1),
        confirmation_sent_on=today - dt.timedelta(days=letter_days_ago),
    )
    cancel(runtime, declaration_id, today + dt.timedelta(days=25))
    with runtime.read_session() as session:
        declaration = session.get(Declaration, declaration_id)
        assert declaration is not None and declaration.voided is voided


def test_an_oral_declaration_cancelled_before_its_letter_is_explained_as_never_in_effect(runtime: Runtime) -> None:
    """Unrecorded and unconfirmed, an oral declaration never took effect; cancelled, it is void. The explanation
    says that, not that it was cancelled within 30 days of a confirmation there never was."""
    supporter = donor(runtime, method=DeclarationMethod.ORAL, made_on=dt.date(2025, 5, 20))
    gift = make_gift(runtime, supporter, amount=10_000, received_on=dt.date(2025, 6, 1))
    cancel(runtime, declaration_of(runtime, supporter), dt.date(2025, 6, 10))
    with runtime.read_session() as session:
        reason = service.explain(session, runtime.settings, gift, today=TODAY).reason
    assert "before any written confirmation was sent, so it never took effect" in reason, reason
    assert "within 30 days" not in reason


# --- §1C rule 11: four years back at most ---------------------------------------------------------------------------


def test_a_declaration_cannot_be_backdated_beyond_four_years(runtime: Runtime, client: Any) -> None:
    """Staff recording a declaration made on 1 Nov 2025 with a start of 1 Jan 2021 get a 422 naming the earliest
    start, and nothing is recorded; four years back to the day is accepted and covers a gift of that day."""
    supporter = make_supporter(runtime)
    gift = make_gift(runtime, supporter, amount=10_000, received_on=dt.date(2021, 11, 1))
    body: dict[str, Any] = {
        "method": "written",
        "made_on": "2025-11-01",
        "scope": "past_4_years_and_future",
        "address": {"first_name": "Ada", "last_name": "Lovelace", "address_line1": "12 Acacia Avenue",
                    "postcode": "CT16 1AA", "country": "GB"},
    }  # fmt: skip
    headers = staff_headers(runtime, "fundraiser")
    refused = client.post(
        f"/api/supporters/{supporter}/declarations", headers=headers, json={**body, "start": "2021-01-01"}
    )
    assert refused.status_code == 400, refused.text
    assert "01/11/2021" in json.dumps(refused.json())
    assert code_of(runtime, gift) == "no_declaration"
    accepted = client.post(
        f"/api/supporters/{supporter}/declarations", headers=headers, json={**body, "start": "2021-11-01"}
    )
    assert accepted.status_code == 201, accepted.text
    assert code_of(runtime, gift, today=dt.date(2025, 11, 2)) == "claimable"


def test_a_declaration_for_one_gift_must_name_a_gift_of_that_supporter(runtime: Runtime, client: Any) -> None:
    """A `this_gift` declaration naming no gift we have, or another supporter's, is refused (400, nothing recorded):
    it would cover nothing and look as if it covered something. The supporter's own gift is covered."""
    ada = make_supporter(runtime)
    other = make_supporter(runtime, first_name="Bea", last_name="Other")
    own_gift = make_gift(runtime, ada, amount=5_000, received_on=dt.date(2025, 10, 1))
    others_gift = make_gift(runtime, other, amount=5_000, received_on=dt.date(2025, 10, 1))
    body: dict[str, Any] = {
        "method": "written",
        "made_on": "2025-10-01",
        "scope": "this_gift",
        "address": {"first_name": "Ada", "last_name": "Lovelace", "address_line1": "12 Acacia Avenue",
                    "postcode": "CT16 1AA", "country": "GB"},
    }  # fmt: skip
    headers = staff_headers(runtime, "fundraiser")
    for gift_id, words in ((uuid.uuid4(), "no gift"), (others_gift, "another supporter")):
        refused = client.post(
            f"/api/supporters/{ada}/declarations", headers=headers, json={**body, "gift_id": str(gift_id)}
        )
        assert refused.status_code == 400, refused.text
        assert "gift_id" in refused.json()["detail"] and words in refused.json()["detail"], refused.text
    with runtime.read_session() as session:
        assert session.exec(select(Declaration)).all() == []
    accepted = client.post(
        f"/api/supporters/{ada}/declarations", headers=headers, json={**body, "gift_id": str(own_gift)}
    )
    assert accepted.status_code == 201, accepted.text
    assert code_of(runtime, own_gift) == "claimable"
    assert code_of(runtime, others_gift) == "no_declaration"


# --- §1B rule 6 on what the donor kept --------------------------------------------------------------------------------


@pytest.mark.parametrize(("returned", "code"), [(0, "claimable"), (6_000, "benefit_too_large")])
def test_the_benefit_test_weighs_the_benefit_against_what_the_donor_kept(
    runtime: Runtime, returned: int, code: str
) -> None:
    """A £25 benefit on a £100 gift is 25%: allowed. With £60 refunded the donation claimed is £40, and £25 is
    62.5% of it: held back, in words that name the £40."""
    gift = make_gift(runtime, donor(runtime), amount=10_000, returned_amount=returned, benefit_amount=2_500)
    assert code_of(runtime, gift) == code
    if returned:
        with runtime.read_session() as session:
            words = service.explain(session, runtime.settings, gift, today=TODAY).reason
        assert "£40.00" in words and "£10.00 allowed" in words


# --- §2: names in other scripts in the schedule ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "written"),
    [("Иван", "Ivan"), ("Παπαδόπουλος", "Papadopoylos"), ("Łódź", "Lódz"), ("Zoë O'Brien", "Zoë O'Brien")],
)
def test_names_are_transliterated_for_the_schedule_keeping_latin1_accents(given: str, written: str) -> None:
    assert latin1_text(given) == written


def test_a_donor_named_in_another_script_gets_a_line_and_does_not_block_the_claim(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`giving giftaid claim` (both formats) with one donor named in Cyrillic and one whose 35-letter surname starts
    with Œ: the claim is made, and the schedule has "Ivan Petrov" and a surname cut back to 35 letters."""
    make_gift(runtime, donor(runtime), amount=10_000, received_on=dt.date(2025, 6, 1))
    ivan = make_supporter(runtime)
    make_declaration(runtime, ivan, first_name="Иван", last_name="Петров", house="7", postcode="M99 2QD")
    make_gift(runtime, ivan, amount=5_000, received_on=dt.date(2025, 6, 2))
    long_name = make_supporter(runtime)
    make_declaration(runtime, long_name, last_name="Œ" + "b" * 34)
    make_gift(runtime, long_name, amount=5_000, received_on=dt.date(2025, 6, 3))
    out = tmp_path / "out"
    result = run_giving(
        ["giftaid", "claim", "--through", "2025-10-31", "--out", str(out), "--json"],
        runtime.settings,
        monkeypatch,
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    with runtime.read_session() as session:
        assert len(list(session.exec(select(Claim)))) == 1
    report = validate_schedule(next(out.glob("*.ods")), today=TODAY)
    assert report.ok, report.errors
    names = {(row.first_name, row.last_name) for row in report.donations}
    assert ("Ivan", "Petrov") in names
    assert any(last == "Oe" + "b" * 33 for _, last in names), names
