"""Claim files and HMRC's gateway in situations found in review: a claim whose XML fails HMRC's checks after its
schedule was written, a gateway password with XML's special characters, a gift received just after UK midnight in
summer, the periodic poll with one claim's endpoint unreachable, and a claim HMRC rejected."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
import time_machine
from sqlmodel import select

from core.clock import UK, uk_today
from core.runtime import Runtime
from core.settings import Settings
from giftaid import service, tasks
from giftaid.errors import SubmissionFailed
from giftaid.models import Claim, ClaimStatus, Message
from payments.models import Gift, GiftStatus, Method, Provider
from tests.fixtures.app import make_settings
from tests.giftaid.factories import TODAY, donor, make_gift, run_giving, set_gift, staff_headers
from tests.giftaid.fake_gateway import PASSWORD, SENDER_ID, FakeGateway, gateway

__all__ = ["gateway"]


def test_a_claim_whose_xml_fails_hmrcs_checks_leaves_no_file(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A regulator set without a registration number breaks HMRC's rule 7031: the XML fails after the schedule was
    written. Nothing is claimed, and no schedule is left in DIR to be uploaded while its gifts stay unclaimed."""
    settings = make_settings(runtime.settings.database.url, tmp_path, charity={"registration_number": ""})
    today = uk_today()
    make_gift(
        runtime, donor(runtime, made_on=today - dt.timedelta(days=400)), received_on=today - dt.timedelta(days=30)
    )
    out = tmp_path / "claim"
    result = run_giving(
        ["giftaid", "claim", "--through", today.isoformat(), "--out", str(out), "--json"],
        settings,
        monkeypatch,
        tmp_path,
    )
    assert result.exit_code == 1
    with runtime.read_session() as session:
        assert session.exec(select(Claim)).all() == []
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == []


def test_a_gateway_password_with_xml_special_characters_is_never_kept(
    runtime: Runtime, gateway: FakeGateway, tmp_path: Path
) -> None:
    settings = make_settings(
        runtime.settings.database.url,
        tmp_path,
        hmrc={"gateway_url": gateway.url, "sender_id": SENDER_ID, "password": "s3cret&<pass>", "vendor_id": "1234"},
    )
    make_gift(runtime, donor(runtime))
    with runtime.unit_of_work() as uow:
        built = service.build_claim(uow, settings, through=TODAY, actor="test", today=TODAY)
    assert built.claim_id is not None
    with runtime.unit_of_work() as uow:
        service.submit_claim(uow, settings, built.claim_id, actor="f@example.org")
    with runtime.read_session() as session:
        bodies = [m.body for m in session.exec(select(Message))]
    assert bodies and all("s3cret" not in body for body in bodies)
    assert any("<Value>********</Value>" in body for body in bodies)


def test_a_gift_received_just_after_uk_midnight_in_summer_can_be_exported(runtime: Runtime, tmp_path: Path) -> None:
    """00:30 BST on 2 June is 23:30 UTC on 1 June. A gift of 00:10 BST is dated 2 June (a UK date), which the rules
    do not call the future; the message's own check must agree (its timestamp is UTC)."""
    ada = donor(runtime)
    with runtime.unit_of_work() as uow:
        uow.session.add(
            Gift(
                supporter_id=ada,
                amount=10_000,
                status=GiftStatus.PAID,
                provider=Provider.STRIPE,
                method=Method.CARD,
                received_at=dt.datetime(2025, 6, 2, 0, 10, tzinfo=UK).astimezone(dt.UTC),
                received_on=dt.date(2025, 6, 2),
            )
        )
    with time_machine.travel(dt.datetime(2025, 6, 2, 0, 30, tzinfo=UK), tick=False), runtime.unit_of_work() as uow:
        built = service.build_claim(uow, runtime.settings, through=dt.date(2025, 6, 2), actor="test")
        assert built.claim_id is not None and built.lines == 1
        claim = service.get_claim(uow.session, built.claim_id)
        assert len(service.write_claim_files(uow.session, runtime.settings, claim, tmp_path / "out", "xml")) == 1


@pytest.fixture
def settings(database_url: str, tmp_path: Path, gateway: FakeGateway) -> Settings:
    return make_settings(
        database_url,
        tmp_path,
        hmrc={"gateway_url": gateway.url, "sender_id": SENDER_ID, "password": PASSWORD, "vendor_id": "1234"},
    )


def _submitted_claim(runtime: Runtime, day: dt.date) -> uuid.UUID:
    make_gift(runtime, donor(runtime), received_on=day)
    with runtime.unit_of_work() as uow:
        built = service.build_claim(uow, runtime.settings, through=day, actor="test", today=TODAY)
    assert built.claim_id is not None
    with runtime.unit_of_work() as uow:
        assert service.submit_claim(uow, runtime.settings, built.claim_id, actor="f").status == ClaimStatus.SUBMITTED
    return built.claim_id


def test_the_periodic_poll_asks_about_each_claim_in_a_job_of_its_own(runtime: Runtime, gateway: FakeGateway) -> None:
    """HMRC deletes an answer once we have it, so a verdict must be kept whatever happens to another claim's poll:
    the periodic job only sends one `giftaid.poll_claim` per waiting claim, and each runs in its own unit of work."""
    older = _submitted_claim(runtime, dt.date(2025, 6, 1))
    newer = _submitted_claim(runtime, dt.date(2025, 7, 1))
    with runtime.unit_of_work() as uow:
        claim = uow.session.get(Claim, older)
        assert claim is not None
        claim.response_endpoint = "http://127.0.0.1:9/poll"  # nothing listens there
        uow.session.add(claim)
    asked_before = len(gateway.requests)
    with runtime.unit_of_work() as uow:
        assert tasks.poll_submitted(uow) == 2
    assert len(gateway.requests) == asked_before  # it asked HMRC nothing itself
    for claim_id in (older, newer):  # the two jobs, as a worker runs them
        try:
            with runtime.unit_of_work() as uow:
                tasks.poll_claim(uow, str(claim_id))
        except SubmissionFailed:
            assert claim_id == older
    with runtime.read_session() as session:
        statuses = {claim_id: session.get(Claim, claim_id).status for claim_id in (older, newer)}  # type: ignore[union-attr]
    assert statuses == {older: ClaimStatus.SUBMITTED, newer: ClaimStatus.ACCEPTED}


def test_a_rejected_claims_files_are_refused_with_a_pointer_to_what_was_sent(runtime: Runtime, client: Any) -> None:
    """A claim HMRC rejected released its gifts and gave its adjustment back to be carried again: its files are not
    written again (409, naming its messages), and its JSON lists none; before, the XML failed with a 500."""
    ada = donor(runtime)
    gift = make_gift(runtime, ada, amount=10_000, received_on=dt.date(2025, 6, 1))
    with runtime.unit_of_work() as uow:
        service.build_claim(uow, runtime.settings, through=TODAY, actor="test", today=TODAY)
    set_gift(runtime, gift, returned_amount=10_000)
    make_gift(runtime, ada, amount=20_000, received_on=dt.date(2025, 10, 1))
    with runtime.unit_of_work() as uow:
        carrying = service.build_claim(uow, runtime.settings, through=TODAY, actor="test", today=TODAY)
    assert carrying.claim_id is not None and carrying.adjustment == 2_500
    with runtime.unit_of_work() as uow:
        service.change_status(uow, carrying.claim_id, ClaimStatus.REJECTED, actor="f@example.org", reason="typo")
    finance = staff_headers(runtime, "finance")
    assert client.get(f"/api/giftaid/claims/{carrying.claim_id}", headers=finance).json()["files"] == []
    for name in ("claim.xml", "schedule.ods"):
        refused = client.get(f"/api/giftaid/claims/{carrying.claim_id}/{name}", headers=finance)
        assert refused.status_code == 409, refused.text
        assert f"/api/giftaid/claims/{carrying.claim_id}/messages" in refused.json()["detail"]
