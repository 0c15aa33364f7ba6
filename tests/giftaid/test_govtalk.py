"""The GovTalk submission client against a local server that answers as HMRC's gateway does: submit and its
acknowledgement, polls until HMRC's receipt or a business error mapped back to the gifts, delete and list; every
message sent and received kept with the claim (without the password)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlmodel import select

from core.runtime import Runtime
from core.settings import Settings
from giftaid import service
from giftaid.errors import InvalidTransition, SubmissionFailed
from giftaid.govtalk import GovTalkClient, parse_reply
from giftaid.models import ClaimGift, ClaimStatus, Message
from tests.giftaid.factories import TODAY, donor, make_gift, staff_headers
from tests.giftaid.fake_gateway import PASSWORD, SENDER_ID, FakeGateway, gateway, settings
from tests.giftaid.hmrc_files import envelope_errors

__all__ = ["gateway", "settings"]  # fixtures, shared with the other gateway tests


def built_claim(runtime: Runtime, gifts: int = 2) -> tuple[uuid.UUID, list[uuid.UUID]]:
    ada = donor(runtime)
    ids = [make_gift(runtime, ada, amount=10_000 + n, received_on=dt.date(2025, 6, 1 + n)) for n in range(gifts)]
    with runtime.unit_of_work() as uow:
        result = service.build_claim(uow, runtime.settings, through=TODAY, actor="test", today=TODAY)
    assert result.claim_id is not None
    return result.claim_id, ids


def messages(runtime: Runtime, claim_id: uuid.UUID) -> list[tuple[str, str, str]]:
    with runtime.read_session() as session:
        return [(m.direction, m.function, m.qualifier) for m in service.claim_messages(session, claim_id)]


def test_submit_poll_and_hmrcs_receipt(runtime: Runtime, gateway: FakeGateway) -> None:
    gateway.pending_polls = 1
    claim_id, _ = built_claim(runtime)
    with runtime.unit_of_work() as uow:
        claim = service.submit_claim(uow, runtime.settings, claim_id, actor="f@example.org")
        assert claim.status == ClaimStatus.SUBMITTED
        assert claim.correlation_id in gateway.submissions
        assert claim.poll_interval == 1 and claim.response_endpoint == gateway.url + "/poll"
        irmark = claim.irmarks[0]
    assert gateway.submissions[claim.correlation_id].irmark == irmark  # type: ignore[index]
    with runtime.unit_of_work() as uow:
        assert (
            service.poll_claim(uow, runtime.settings, claim_id, actor="f@example.org").status == ClaimStatus.SUBMITTED
        )
    with runtime.unit_of_work() as uow:
        claim = service.poll_claim(uow, runtime.settings, claim_id, actor="f@example.org")
        assert claim.status == ClaimStatus.ACCEPTED
        assert "The associated IRmark was: " + service.claim_xml.submission_reference(irmark) in claim.hmrc_receipt
    assert gateway.deleted == [claim.correlation_id]
    assert messages(runtime, claim_id) == [
        ("sent", "submit", ""),
        ("received", "submit", "acknowledgement"),
        ("sent", "poll", "acknowledgement"),
        ("received", "poll", "acknowledgement"),
        ("sent", "poll", "response"),
        ("received", "poll", "response"),
        ("sent", "delete", "response"),
        ("received", "delete", "response"),
    ]
    with runtime.read_session() as session:
        bodies = [m.body for m in session.exec(select(Message))]
    assert all(PASSWORD not in body for body in bodies)
    assert "<Value>********</Value>" in bodies[0] and f"<SenderID>{SENDER_ID}</SenderID>" in bodies[0]
    # What went over the wire carried the credentials; the file we write never does.
    assert f"<Value>{PASSWORD}</Value>".encode() in gateway.requests[0]


def test_a_business_error_is_mapped_to_its_gifts_and_releases_them(runtime: Runtime, gateway: FakeGateway) -> None:
    gateway.outcome, gateway.error_gad = "business_error", 2
    claim_id, gifts = built_claim(runtime, gifts=3)
    with runtime.unit_of_work() as uow:
        service.submit_claim(uow, runtime.settings, claim_id, actor="f@example.org")
    with runtime.unit_of_work() as uow:
        claim = service.poll_claim(uow, runtime.settings, claim_id, actor="f@example.org")
        assert claim.status == ClaimStatus.REJECTED
        errors = claim.errors
    business = [e for e in errors if e["line"] is not None]
    assert business == [
        {
            "number": 7040,
            "type": "business",
            "text": "Gift Aid donation date cannot be in the future",
            "location": business[0]["location"],
            "raised_by": "ChRIS",
            "line": 2,
            "gift_ids": [str(gifts[1])],
        }
    ]
    assert [e["number"] for e in errors if e["line"] is None] == [3001]
    with runtime.read_session() as session:
        live = session.exec(select(ClaimGift).where(ClaimGift.live.is_(True))).all()  # type: ignore[union-attr]
        assert live == []
    with runtime.unit_of_work() as uow:
        again = service.build_claim(uow, runtime.settings, through=TODAY, actor="test", today=TODAY)
    assert again.lines == 3


def test_wrong_credentials_leave_the_claim_built_with_hmrcs_error(runtime: Runtime, tmp_path) -> None:  # type: ignore[no-untyped-def]
    claim_id, _ = built_claim(runtime)
    wrong = runtime.settings.model_copy(
        update={
            "hmrc": runtime.settings.hmrc.model_copy(
                update={"password": service.Settings.model_fields["hmrc"].default.password}
            )
        }
    )
    with runtime.unit_of_work() as uow:
        claim = service.submit_claim(uow, wrong, claim_id, actor="f@example.org")
        assert claim.status == ClaimStatus.BUILT
        assert [(e["number"], e["text"]) for e in claim.errors] == [(1046, "Authentication Failure")]
    assert messages(runtime, claim_id) == [("sent", "submit", ""), ("received", "submit", "error")]
    with runtime.unit_of_work() as uow, pytest.raises(InvalidTransition):
        service.poll_claim(uow, runtime.settings, claim_id, actor="f@example.org")


def test_an_unreachable_gateway_is_a_clear_error(runtime: Runtime) -> None:
    claim_id, _ = built_claim(runtime)
    nowhere = runtime.settings.model_copy(
        update={"hmrc": runtime.settings.hmrc.model_copy(update={"gateway_url": "http://127.0.0.1:9/submission"})}
    )
    with runtime.unit_of_work() as uow, pytest.raises(SubmissionFailed, match="could not reach the HMRC gateway"):
        service.submit_claim(uow, nowhere, claim_id, actor="f@example.org")
    with runtime.read_session() as session:
        assert service.get_claim(session, claim_id).status == ClaimStatus.BUILT


def test_list_recovers_correlation_ids(runtime: Runtime, gateway: FakeGateway) -> None:
    claim_id, _ = built_claim(runtime)
    with runtime.unit_of_work() as uow:
        correlation_id = service.submit_claim(uow, runtime.settings, claim_id, actor="f@example.org").correlation_id
    with runtime.unit_of_work() as uow:
        reply = service.gateway_status(uow, runtime.settings)
    assert [(r.correlation_id, r.status) for r in reply.status_records] == [
        (correlation_id, "SUBMISSION_ACKNOWLEDGEMENT")
    ]


def test_the_gateways_replies_are_govtalk_messages(runtime: Runtime, gateway: FakeGateway, tmp_path) -> None:  # type: ignore[no-untyped-def]
    claim_id, _ = built_claim(runtime)
    client = GovTalkClient(gateway.url, SENDER_ID, PASSWORD)
    path = tmp_path / "claim.xml"
    with runtime.unit_of_work() as uow, path.open("w+b") as out:
        service.write_xml_part(uow.session, runtime.settings, service.get_claim(uow.session, claim_id), 1, out)
    sent, ack = client.submit(path)
    _, poll = client.poll(ack.correlation_id, ack.response_endpoint)
    _, listed = client.list()
    _, deleted = client.delete(ack.correlation_id)
    for reply in (ack, poll, listed, deleted):
        assert envelope_errors(reply.raw) == [], reply.raw
    assert envelope_errors(sent) == []
    assert ack.pending and poll.accepted and deleted.qualifier == "response"
    bad = parse_reply(gateway.answer(gateway.requests[0].replace(SENDER_ID.encode(), b"000000000000")))
    assert [(e.number, e.type) for e in bad.errors] == [(1046, "fatal")]


def test_submit_and_poll_through_the_api(runtime: Runtime, gateway: FakeGateway, client) -> None:  # type: ignore[no-untyped-def]
    claim_id, _ = built_claim(runtime)
    finance, fundraiser = staff_headers(runtime, "finance"), staff_headers(runtime, "fundraiser")
    assert client.post(f"/api/giftaid/claims/{claim_id}/submit", headers=fundraiser).status_code == 403
    submitted = client.post(f"/api/giftaid/claims/{claim_id}/submit", headers=finance)
    assert submitted.status_code == 200 and submitted.json()["status"] == "submitted"
    polled = client.post(f"/api/giftaid/claims/{claim_id}/poll", headers=finance)
    assert polled.status_code == 200 and polled.json()["status"] == "accepted"
    listed = client.get(f"/api/giftaid/claims/{claim_id}/messages", headers=finance).json()["items"]
    assert [m["function"] for m in listed] == ["submit", "submit", "poll", "poll", "delete", "delete"]


def test_a_large_message_is_streamed_with_its_length(
    runtime: Runtime,
    gateway: FakeGateway,
    tmp_path,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from giftaid import govtalk

    monkeypatch.setattr(govtalk, "STREAM_ABOVE", 0)
    claim_id, _ = built_claim(runtime)
    path = tmp_path / "claim.xml"
    with runtime.unit_of_work() as uow, path.open("w+b") as out:
        service.write_xml_part(uow.session, runtime.settings, service.get_claim(uow.session, claim_id), 1, out)
    kept, reply = GovTalkClient(gateway.url, SENDER_ID, PASSWORD).submit(path)
    assert reply.pending
    assert PASSWORD.encode() not in kept and kept == path.read_bytes()
    assert f"<Value>{PASSWORD}</Value>".encode() in gateway.requests[-1]


def _with_password(settings: Settings, password: str) -> Settings:
    from pydantic import SecretStr

    return settings.model_copy(update={"hmrc": settings.hmrc.model_copy(update={"password": SecretStr(password)})})


def test_a_gateway_error_on_a_poll_leaves_the_claim_submitted_and_its_gifts_claimed(
    runtime: Runtime,
    gateway: FakeGateway,
) -> None:
    """The gateway password changed between submit and poll: 1046 Authentication Failure, raised by the gateway,
    is not HMRC's verdict on the claim (HMRC still holds it and may accept it). The claim stays submitted, shows
    the error, and its gifts cannot go into a second claim; once the password is right, the poll goes on."""
    claim_id, _ = built_claim(runtime)
    with runtime.unit_of_work() as uow:
        service.submit_claim(uow, runtime.settings, claim_id, actor="f")
    with runtime.unit_of_work() as uow:
        claim = service.poll_claim(uow, _with_password(runtime.settings, "not-the-password"), claim_id, actor="f")
        assert (claim.status, [e["number"] for e in claim.errors]) == (ClaimStatus.SUBMITTED, [1046])
    with runtime.unit_of_work() as uow:
        again = service.build_claim(uow, runtime.settings, through=TODAY, actor="test", today=TODAY)
    assert again.claim_id is None
    with runtime.unit_of_work() as uow:
        assert service.poll_claim(uow, runtime.settings, claim_id, actor="f").status == ClaimStatus.ACCEPTED


def test_a_success_response_with_a_warning_is_accepted(
    runtime: Runtime,
    gateway: FakeGateway,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GovTalk errors of Type `warning` do not fail a response (giftaid.md §3.1: fatal|recoverable|business|warning)."""
    claim_id, _ = built_claim(runtime)
    with runtime.unit_of_work() as uow:
        service.submit_claim(uow, runtime.settings, claim_id, actor="f")
    original = gateway._reply

    def with_warning(qualifier: str, function: str, correlation_id: str = "", **kw: str) -> bytes:
        if qualifier == "response" and function == "submit":
            kw["errors"] = "<GovTalkErrors>" + gateway._error("ChRIS", 9999, "warning", "Advisory") + "</GovTalkErrors>"
        return original(qualifier, function, correlation_id, **kw)

    monkeypatch.setattr(gateway, "_reply", with_warning)
    with runtime.unit_of_work() as uow:
        assert service.poll_claim(uow, runtime.settings, claim_id, actor="f").status == ClaimStatus.ACCEPTED
