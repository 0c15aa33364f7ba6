"""Subject access export and erasure against everything held (found in review): the donor details as claimed from
HMRC, webhook bodies that name the donor (their email however it was typed, and never someone else's that merely
contains it), the emails of records merged into the erased one, and erasure or merge racing a claim or a merge."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from sqlmodel import Session, select

from core.db import UnitOfWork
from core.runtime import Runtime
from crm import service as crm_service
from crm.errors import CannotMergeErased, CannotMergeIntoItself
from crm.models import Declaration, Supporter
from giftaid import service as giftaid_service
from giftaid.models import ClaimDonor, ClaimGift
from giving.merge import merge_supporters
from giving.privacy import erase_supporter, export_supporter
from payments.models import Gift
from tests.crm.helpers import at_the_same_moment, make_supporter
from tests.giftaid.factories import donor, make_declaration, make_gift
from webhooks.models import EventStatus, InboundEvent

CLAIM_DAY = dt.date(2025, 2, 1)


def _event(runtime: Runtime, external_id: str, body: dict[str, Any], status: EventStatus) -> None:
    with runtime.unit_of_work() as uow:
        uow.session.add(
            InboundEvent(
                provider="stripe",
                external_id=external_id,
                event_type="checkout.session.completed",
                body=json.dumps(body),
                status=status,
            )
        )


def _bodies(runtime: Runtime) -> dict[str, str | None]:
    with runtime.read_session() as session:
        return {e.external_id: e.body for e in session.exec(select(InboundEvent)).all()}


def _build_claim(uow: UnitOfWork, runtime: Runtime) -> None:
    giftaid_service.build_claim(uow, runtime.settings, through=CLAIM_DAY, actor="test", today=CLAIM_DAY)


def claimed_donor(session: Session, gift_id: uuid.UUID) -> ClaimDonor:
    """The donor details a claim sent with this gift."""
    line = session.exec(select(ClaimGift).where(ClaimGift.gift_id == gift_id)).one()
    return session.exec(
        select(ClaimDonor).where(ClaimDonor.claim_id == line.claim_id, ClaimDonor.declaration_id == line.declaration_id)
    ).one()


def test_the_export_holds_the_donor_details_as_claimed_from_hmrc_and_only_theirs(runtime: Runtime) -> None:
    """`giftaid_claim_gifts` and `giftaid_claim_donors` (name, house and postcode as sent to HMRC) have no foreign
    key: it is personal data held
    about the donor (kept after erasure for six years), so it is in their export, and nobody else's rows are."""
    ada = donor(runtime)
    bob = donor(runtime, first_name="Bob", last_name="Jones", house="7", postcode="CT17 9BB")
    ada_gift = make_gift(runtime, ada, received_on=dt.date(2024, 5, 1))
    make_gift(runtime, bob, received_on=dt.date(2024, 6, 1))
    with runtime.unit_of_work() as uow:
        _build_claim(uow, runtime)
    with runtime.read_session() as session:
        document = export_supporter(session, ada)
    assert [r["gift_id"] for r in document["tables"]["giftaid_claim_gifts"]] == [str(ada_gift)]
    donors = document["tables"]["giftaid_claim_donors"]
    assert [(r["last_name"], r["house"], r["postcode"]) for r in donors] == [("Lovelace", "12", "CT16 1AA")]
    assert "Jones" not in json.dumps(document)


def test_webhook_bodies_naming_the_donor_are_found_whatever_the_case_the_email_was_typed_in(runtime: Runtime) -> None:
    """Emails are stored normalised (lower case) but a provider's body carries them as typed: the export lists the
    event and erasure drops its body, on PostgreSQL (case-sensitive LIKE) as on SQLite."""
    ada = make_supporter(runtime, email="ada.lovelace@example.org")
    _event(
        runtime,
        "evt_typed",
        {"customer_details": {"email": "Ada.Lovelace@Example.ORG", "name": "Ada Lovelace"}},
        EventStatus.PROCESSED,
    )
    with runtime.read_session() as session:
        exported = export_supporter(session, ada)["tables"].get("inbound_events", [])
    assert [e["external_id"] for e in exported] == ["evt_typed"]
    with runtime.unit_of_work() as uow:
        erase_supporter(uow, runtime.settings, ada)
    assert _bodies(runtime) == {"evt_typed": None}


def test_someone_elses_webhook_body_is_neither_exported_nor_dropped(runtime: Runtime) -> None:
    """`ada@example.org` is inside `jada@example.org`: Jada's event, still waiting to record her gift, is not part
    of Ada's export, and erasing Ada must not destroy the only copy of it."""
    ada = make_supporter(runtime, email="ada@example.org")
    make_supporter(runtime, email="jada@example.org", first_name="Jada", last_name="Pinkett")
    jada_body = {"customer_details": {"email": "jada@example.org", "name": "Jada Pinkett"}}
    _event(runtime, "evt_jada", jada_body, EventStatus.WAITING)
    _event(runtime, "evt_ada", {"customer_details": {"email": "ada@example.org"}}, EventStatus.PROCESSED)
    _event(runtime, "evt_ada_co", {"receipt_email": "ada@example.org.uk"}, EventStatus.PROCESSED)
    with runtime.read_session() as session:
        exported = export_supporter(session, ada)["tables"].get("inbound_events", [])
    assert [e["external_id"] for e in exported] == ["evt_ada"]
    with runtime.unit_of_work() as uow:
        erase_supporter(uow, runtime.settings, ada)
    bodies = _bodies(runtime)
    assert bodies["evt_ada"] is None
    assert bodies["evt_jada"] == json.dumps(jada_body) and bodies["evt_ada_co"] is not None


def test_erasure_drops_the_webhook_bodies_naming_a_record_merged_into_the_erased_one(runtime: Runtime) -> None:
    """Ann gave as ann@old.example, then as ann@new.example; staff merged the two. Erasing her must also drop the
    provider bodies that carry the old address (the merged record kept it: the survivor had one)."""
    survivor = make_supporter(runtime, email="ann@new.example", first_name="Ann", last_name="Smith")
    old = make_supporter(runtime, email="ann@old.example", first_name="Ann", last_name="Smith")
    _event(runtime, "evt_old", {"customer_details": {"email": "ann@old.example"}}, EventStatus.PROCESSED)
    _event(runtime, "evt_new", {"customer_details": {"email": "ann@new.example"}}, EventStatus.PROCESSED)
    with runtime.unit_of_work() as uow:
        merge_supporters(uow, old, survivor, by="test")
    with runtime.read_session() as session:
        exported = export_supporter(session, survivor)["tables"]["inbound_events"]
    assert sorted(e["external_id"] for e in exported) == ["evt_new", "evt_old"]
    with runtime.unit_of_work() as uow:
        erase_supporter(uow, runtime.settings, survivor)
    assert _bodies(runtime) == {"evt_old": None, "evt_new": None}


def test_an_erasure_during_a_claim_build_keeps_what_the_claim_sent(runtime: Runtime) -> None:
    """A claim being built takes Ada's gift with her declaration's name and house. An erasure at that moment must
    wait for it and then keep that declaration and the claim's row until `purge_after` (else HMRC's evidence is
    gone, and the claim row keeps her name for ever, as nothing is set to purge it)."""
    ada = donor(runtime, made_on=dt.date(2024, 1, 10))
    make_gift(runtime, ada, received_on=dt.date(2024, 5, 1))
    errors = at_the_same_moment(
        runtime,
        lambda uow: _build_claim(uow, runtime),
        lambda uow: erase_supporter(uow, runtime.settings, ada),
    )
    assert errors == []
    with runtime.read_session() as session:
        claimed = session.exec(select(ClaimDonor)).one()
        declaration = session.exec(select(Declaration)).one()
        supporter = session.get(Supporter, ada)
        assert supporter is not None and supporter.erased_at is not None
        assert supporter.purge_after == dt.date(2031, 4, 5)
        assert (claimed.last_name, declaration.last_name, declaration.house) == ("Lovelace", "Lovelace", "12")


def test_a_merge_into_a_record_being_erased_is_refused(runtime: Runtime) -> None:
    """Staff merge a live duplicate into Ann while an admin erases Ann: the merge waits, sees the erasure and is
    refused, so the live donor's email and gifts never land on the erased record."""
    ann = make_supporter(runtime, email="ann@example.org", first_name="Ann", last_name="Smith")
    live = make_supporter(runtime, email="live@example.org", first_name="Live", last_name="Donor")
    gift = make_gift(runtime, live)
    errors = at_the_same_moment(
        runtime,
        lambda uow: erase_supporter(uow, runtime.settings, ann),
        lambda uow: merge_supporters(uow, live, ann, by="test"),
    )
    assert [type(e) for e in errors] == [CannotMergeErased]
    with runtime.read_session() as session:
        erased = session.get(Supporter, ann)
        kept = session.get(Supporter, live)
        assert erased is not None and kept is not None
        assert (erased.email, kept.email, kept.merged_into_id) == (None, "live@example.org", None)
        assert session.get(Gift, gift).supporter_id == live  # type: ignore[union-attr]


def test_merges_each_way_at_the_same_moment_leave_one_live_record(runtime: Runtime) -> None:
    """A into B and B into A at once: the second waits for the first, then finds them one record (400), instead of
    pointing each at the other and leaving no live record at all."""
    a = make_supporter(runtime, email="a@example.org", first_name="Ann", last_name="Smith")
    b = make_supporter(runtime, email="b@example.org", first_name="Ann", last_name="Smith")
    errors = at_the_same_moment(
        runtime,
        lambda uow: merge_supporters(uow, a, b, by="first"),
        lambda uow: merge_supporters(uow, b, a, by="second"),
    )
    assert [type(e) for e in errors] == [CannotMergeIntoItself]
    with runtime.read_session() as session:
        assert crm_service.resolve_supporter(session, a).id == b
        assert crm_service.resolve_supporter(session, b).id == b
        assert session.get(Supporter, b).merged_into_id is None  # type: ignore[union-attr]


def test_erasing_twice_changes_nothing_the_second_time(runtime: Runtime) -> None:
    ada = make_supporter(runtime)
    make_declaration(runtime, ada)
    with runtime.unit_of_work() as uow:
        first = erase_supporter(uow, runtime.settings, ada)
    with runtime.read_session() as session:
        erased_at = session.get(Supporter, ada).erased_at  # type: ignore[union-attr]
    with runtime.unit_of_work() as uow:
        again = erase_supporter(uow, runtime.settings, ada)
    assert first.changed and again.purge_after == first.purge_after
    with runtime.read_session() as session:
        assert session.get(Supporter, ada).erased_at == erased_at  # type: ignore[union-attr]


def test_a_gift_claimed_after_the_erasure_keeps_its_claim_records_their_full_time(runtime: Runtime) -> None:
    """Ada's declaration was kept (a 2021 gift was claimed), so her 2023 gift, claimed after she was erased, went to
    HMRC with her name. The purge at the 2021 gift's date must not blank what that later claim sent: it waits
    until six years after the end of the 2023 gift's tax year."""
    from giving.privacy import purge_due

    ada = donor(runtime, made_on=dt.date(2021, 1, 10))
    make_gift(runtime, ada, received_on=dt.date(2021, 5, 1))
    later = make_gift(runtime, ada, received_on=dt.date(2023, 5, 1))
    with runtime.unit_of_work() as uow:
        day = dt.date(2022, 1, 10)
        giftaid_service.build_claim(uow, runtime.settings, through=dt.date(2021, 12, 31), actor="test", today=day)
    with runtime.unit_of_work() as uow:
        assert erase_supporter(uow, runtime.settings, ada).purge_after == dt.date(2028, 4, 5)
    with runtime.unit_of_work() as uow:
        day = dt.date(2024, 1, 10)
        giftaid_service.build_claim(uow, runtime.settings, through=dt.date(2023, 12, 31), actor="test", today=day)
    with runtime.read_session() as session:
        assert claimed_donor(session, later).last_name == "Lovelace"
    with runtime.unit_of_work() as uow:
        purge_due(uow, runtime.settings, today=dt.date(2028, 5, 1))
    with runtime.read_session() as session:
        assert claimed_donor(session, later).last_name == "Lovelace"
        assert session.exec(select(Declaration)).one().last_name == "Lovelace"
        assert session.get(Supporter, ada).purge_after == dt.date(2030, 4, 5)  # type: ignore[union-attr]
    with runtime.unit_of_work() as uow:
        purge_due(uow, runtime.settings, today=dt.date(2030, 4, 5))
    with runtime.read_session() as session:
        names = {c.last_name for c in session.exec(select(ClaimDonor)).all()}
        assert names == {"supporter"} and session.exec(select(Declaration)).one().last_name == "supporter"
        assert session.get(Supporter, ada).purge_after is None  # type: ignore[union-attr]
