"""The GovTalk submission client and how it is driven, at edges found in review: a gateway that answers with
something odd (a PollInterval that is not a number, an HTML page), two submits of one claim at the same moment,
polls faster than HMRC's PollInterval, a poll job for a claim already decided, and HMRC's error locations mapped to
aggregated lines as well as donor lines."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

import pytest
from lxml import etree

from core.runtime import Runtime
from giftaid import service, tasks
from giftaid.errors import InvalidTransition, SubmissionFailed
from giftaid.govtalk import GatewayError, parse_reply
from giftaid.models import ClaimStatus
from tests.giftaid.factories import TODAY, donor, make_gift
from tests.giftaid.fake_gateway import PASSWORD, FakeGateway, gateway, settings

__all__ = ["gateway", "settings"]  # fixtures, shared with the other gateway tests


def built_claim(runtime: Runtime, gifts: int = 2) -> uuid.UUID:
    ada = donor(runtime)
    for n in range(gifts):
        make_gift(runtime, ada, amount=10_000 + n, received_on=dt.date(2025, 6, 1 + n))
    with runtime.unit_of_work() as uow:
        result = service.build_claim(uow, runtime.settings, through=TODAY, actor="test", today=TODAY)
    assert result.claim_id is not None
    return result.claim_id


def submits(gateway: FakeGateway) -> int:
    return sum(b"<Qualifier>request</Qualifier><Function>submit</Function>" in r for r in gateway.requests)


def polls(gateway: FakeGateway) -> int:
    return sum(b"<Qualifier>poll</Qualifier>" in r for r in gateway.requests)


# --- the client: what the gateway answers ---------------------------------------------------------------------------


def test_a_poll_interval_that_is_not_a_number_does_not_lose_the_acknowledgement(
    runtime: Runtime, gateway: FakeGateway
) -> None:
    """HMRC has the claim once it acknowledges it. A PollInterval we cannot read used to raise a bare ValueError
    (a 500, the claim left `built` and sent again by the next try: a duplicate claim); the acknowledgement stands,
    without an interval."""
    gateway.hook = lambda raw, reply: reply.replace(b'PollInterval="1"', b'PollInterval="soon"')
    claim_id = built_claim(runtime)
    with runtime.unit_of_work() as uow:
        claim = service.submit_claim(uow, runtime.settings, claim_id, actor="f")
        assert (claim.status, claim.poll_interval) == (ClaimStatus.SUBMITTED, None)
        assert claim.correlation_id in gateway.submissions


@pytest.mark.parametrize(
    "answer",
    [
        b"<html><body><h1>502 Bad Gateway</h1></body></html>",
        b"<!DOCTYPE html><html><body>Service unavailable<br></body></html>",
        b"",
        b"\xff\xfe garbage",
    ],
    ids=["xhtml", "html", "empty", "bytes"],
)
def test_an_answer_that_is_not_govtalk_is_a_gateway_error(answer: bytes) -> None:
    with pytest.raises(GatewayError):
        parse_reply(answer)


# --- driving it: one submission per claim ----------------------------------------------------------------------------


def test_two_submits_of_one_claim_at_once_send_it_to_hmrc_once(runtime: Runtime, gateway: FakeGateway) -> None:
    """A double click, or the API and the command at the same moment: both read the claim as `built` before either
    had HMRC's answer, so both sent it (two claims at HMRC for the same gifts) and the second's record was rolled
    back by the transition check. The claim is locked before anything is sent (SQLite already serialises the
    two units of work)."""

    def slow_submit(raw: bytes, reply: bytes) -> bytes:
        if b"<Function>submit</Function>" in raw and b"<Qualifier>request</Qualifier>" in raw:
            time.sleep(1.0)
        return reply

    gateway.hook = slow_submit
    claim_id = built_claim(runtime)
    outcomes: list[object] = []
    start = threading.Barrier(2)

    def submit() -> None:
        start.wait()
        try:
            with runtime.unit_of_work() as uow:
                outcomes.append(service.submit_claim(uow, runtime.settings, claim_id, actor="f").status)
        except InvalidTransition as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert submits(gateway) == 1, "the claim was sent to HMRC twice"
    assert sorted(type(o).__name__ for o in outcomes) == ["ClaimStatus", "InvalidTransition"]


def test_a_submission_answered_with_html_keeps_what_was_sent(runtime: Runtime, gateway: FakeGateway) -> None:
    """A proxy's HTML page instead of HMRC's acknowledgement: the claim may or may not have reached HMRC. What was
    sent (and what came back) is kept with the claim (giftaid.md §1 rule 20), the claim stays `built` with an error
    saying so, and it is not sent again blindly: a second submit is refused until finance has looked."""
    gateway.hook = lambda raw, reply: b"<html><body>504 Gateway Time-out</body></html>"
    claim_id = built_claim(runtime)
    with runtime.unit_of_work() as uow:
        claim = service.submit_claim(uow, runtime.settings, claim_id, actor="f")
        assert claim.status == ClaimStatus.BUILT
        assert claim.errors and claim.errors[0]["type"] == "unknown"
    with runtime.read_session() as session:
        kept = [(m.direction, m.function) for m in service.claim_messages(session, claim_id)]
        bodies = [m.body for m in service.claim_messages(session, claim_id)]
    assert kept == [("sent", "submit"), ("received", "submit")]
    assert PASSWORD not in bodies[0] and "504 Gateway Time-out" in bodies[1]
    gateway.hook = None
    with runtime.unit_of_work() as uow, pytest.raises(InvalidTransition, match="may have reached HMRC"):
        service.submit_claim(uow, runtime.settings, claim_id, actor="f")
    assert submits(gateway) == 1


def test_an_unreachable_gateway_still_raises_and_keeps_nothing(runtime: Runtime) -> None:
    """Nothing left this machine (the connection was refused): nothing to keep, and the claim may be sent again."""
    claim_id = built_claim(runtime)
    nowhere = runtime.settings.model_copy(
        update={"hmrc": runtime.settings.hmrc.model_copy(update={"gateway_url": "http://127.0.0.1:9/submission"})}
    )
    with runtime.unit_of_work() as uow, pytest.raises(SubmissionFailed, match="could not reach"):
        service.submit_claim(uow, nowhere, claim_id, actor="f")
    with runtime.read_session() as session:
        assert service.claim_messages(session, claim_id) == []


# --- polling ---------------------------------------------------------------------------------------------------------


def test_polls_wait_for_hmrcs_poll_interval(runtime: Runtime, gateway: FakeGateway) -> None:
    """GovTalk: poll only once PollInterval seconds have passed since the last message. A poll inside a long
    interval asks HMRC nothing and leaves the claim waiting; inside a short one it waits it out, then asks."""
    gateway.poll_interval, gateway.pending_polls = 300, 5
    claim_id = built_claim(runtime)
    with runtime.unit_of_work() as uow:
        service.submit_claim(uow, runtime.settings, claim_id, actor="f")
    for _ in range(2):
        with runtime.unit_of_work() as uow:
            assert service.poll_claim(uow, runtime.settings, claim_id, actor="f").status == ClaimStatus.SUBMITTED
    assert polls(gateway) == 0

    gateway.poll_interval, gateway.pending_polls = 2, 0
    other = built_claim(runtime)
    with runtime.unit_of_work() as uow:
        service.submit_claim(uow, runtime.settings, other, actor="f")
    acknowledged = time.monotonic()
    with runtime.unit_of_work() as uow:
        assert service.poll_claim(uow, runtime.settings, other, actor="f").status == ClaimStatus.ACCEPTED
    assert time.monotonic() - acknowledged >= 1.5
    assert polls(gateway) == 1


def test_the_poll_job_of_a_claim_already_decided_is_done_not_retried(runtime: Runtime, gateway: FakeGateway) -> None:
    """Two sweeps (or a sweep and a person) can queue a poll of one claim; once one has HMRC's verdict the other
    has nothing to do. It used to raise InvalidTransition, which the worker retried five times as a failure."""
    claim_id = built_claim(runtime)
    with runtime.unit_of_work() as uow:
        service.submit_claim(uow, runtime.settings, claim_id, actor="f")
    with runtime.unit_of_work() as uow:
        assert tasks.poll_claim(uow, str(claim_id)) == "accepted"
    asked = len(gateway.requests)
    with runtime.unit_of_work() as uow:
        assert tasks.poll_claim(uow, str(claim_id)) == "accepted"
    assert len(gateway.requests) == asked


# --- errors mapped back to gifts --------------------------------------------------------------------------------------


def test_every_gad_index_maps_to_the_gifts_written_on_that_line(runtime: Runtime, gateway: FakeGateway) -> None:
    """HMRC's Location `.../Repayment[1]/GAD[n]/...` is the n-th GAD of the message as sent. For each n, the gifts
    a rejection there is mapped to add up to that GAD's Total: donor lines and aggregated lines alike (each round
    rejects the claim, which releases the gifts for the next one)."""
    from payments.models import Gift

    for n in range(3):
        make_gift(runtime, donor(runtime), amount=1_000 + n, received_on=dt.date(2025, 6, 1 + n))  # aggregated
    ada = donor(runtime)
    make_gift(runtime, ada, amount=50_000, received_on=dt.date(2025, 7, 1))
    make_gift(runtime, ada, amount=7_000, received_on=dt.date(2025, 5, 1))
    with runtime.read_session() as session:
        amounts = {str(gift.id): gift.amount for gift in session.query(Gift).all()}
    gateway.outcome = "business_error"
    for n in (1, 2, 3):
        gateway.error_gad = n
        with runtime.unit_of_work() as uow:
            claim_id = service.build_claim(uow, runtime.settings, through=TODAY, actor="t", today=TODAY).claim_id
        assert claim_id is not None
        with runtime.unit_of_work() as uow:
            correlation_id = service.submit_claim(uow, runtime.settings, claim_id, actor="f").correlation_id
        sent = gateway.submissions[correlation_id].document  # type: ignore[index]
        path = "//*[local-name()='GAD']/*[local-name()='Total']/text()"
        totals = [int(str(t).replace(".", "")) for t in etree.fromstring(sent).xpath(path)]
        assert len(totals) == 3  # two donor lines, one aggregated line of three gifts
        with runtime.unit_of_work() as uow:
            claim = service.poll_claim(uow, runtime.settings, claim_id, actor="f")
            assert claim.status == ClaimStatus.REJECTED
            (mapped,) = [e for e in claim.errors if e["line"] is not None]
        assert mapped["line"] == n
        assert sum(amounts[g] for g in mapped["gift_ids"]) == totals[n - 1], (n, mapped, totals)


def test_the_api_sends_an_unanswered_claim_again_only_when_asked(
    runtime: Runtime, gateway: FakeGateway, client
) -> None:  # type: ignore[no-untyped-def]
    """POST .../submit answers 502 when HMRC's answer never came, 409 on a plain retry, and sends it with
    `{"again": true}`; a body with anything else is 400 and sends nothing."""
    from tests.crm.helpers import staff_token

    finance = staff_token(runtime, "finance")
    claim_id = built_claim(runtime)
    url = f"/api/giftaid/claims/{claim_id}/submit"
    gateway.hook = lambda raw, reply: b"<html><body>504 Gateway Time-out</body></html>"
    unanswered = client.post(url, headers=finance)
    gateway.hook = None
    assert unanswered.status_code == 502 and "HMRC may have received the claim" in unanswered.json()["detail"]
    assert client.post(url, headers=finance).status_code == 409
    assert client.post(url, headers=finance, json={"agian": True}).status_code == 400
    assert submits(gateway) == 1
    again = client.post(url, headers=finance, json={"again": True})
    assert again.status_code == 200 and again.json()["status"] == "submitted", again.text
    assert submits(gateway) == 2
