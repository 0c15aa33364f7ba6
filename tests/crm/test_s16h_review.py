"""Found in review (round 16): a lone surrogate inside a declaration's `evidence` (a 500 on PostgreSQL), an oral
declaration's confirmation re-dated after its cancellation (void by the 30-day rule, yet still claimable), and the
words of a cancellation kept on an erased record."""

from __future__ import annotations

import datetime as dt
import json

from sqlmodel import select
from starlette.testclient import TestClient

from core.clock import uk_today
from core.runtime import Runtime
from crm.models import Declaration
from giftaid import service as giftaid_service
from giving.privacy import erase_supporter
from tests.crm.helpers import make_supporter, staff_token
from tests.payments import factories_money

TODAY = uk_today()


def days_ago(days: int) -> str:
    return (TODAY - dt.timedelta(days=days)).isoformat()


def test_a_lone_surrogate_in_a_declarations_evidence_is_refused_naming_it(runtime: Runtime, client: TestClient) -> None:
    """`evidence` takes any JSON, which pydantic does not check as text: a `\\ud800` escape in it reached the
    database (SQLite stored it; PostgreSQL's jsonb refused it, a 500). It is refused like one in a text field: 400
    naming where it is, nothing written."""
    ada = make_supporter(runtime)
    headers = {**staff_token(runtime, "fundraiser"), "content-type": "application/json"}
    body = {"method": "written", "made_on": TODAY.isoformat(), "scope": "future", "evidence": {"form": ["x\ud800"]}}
    answer = client.post(f"/api/supporters/{ada}/declarations", content=json.dumps(body), headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "InvalidDonorDetails"
    assert answer.json()["detail"].startswith("evidence.form.0:")
    with runtime.read_session() as session:
        assert session.exec(select(Declaration)).all() == []


def test_re_dating_a_cancelled_oral_declarations_letter_applies_the_30_days_again(
    runtime: Runtime, client: TestClient
) -> None:
    """An oral declaration whose letter went 90 days ago, cancelled from 10 days ago: a cancellation after the
    30 days, so not void. Staff then correct the letter's date to 20 days ago: the donor cancelled within 30 days of
    the written record, so the declaration is treated as never made (giftaid.md §1C rule 13). The voiding was
    decided once, at the cancellation, and kept: the gifts it covered stayed claimable."""
    staff = staff_token(runtime, "fundraiser")
    ada = make_supporter(runtime)
    received = dt.datetime.combine(TODAY - dt.timedelta(days=50), dt.time(12), tzinfo=dt.UTC)
    gift = factories_money.gift(runtime, ada, 5000, received_at=received, received_on=received.date())
    made = client.post(
        f"/api/supporters/{ada}/declarations",
        json={"method": "oral", "made_on": days_ago(100), "scope": "future", "confirmation_sent_on": days_ago(90)},
        headers=staff,
    )
    assert made.status_code == 201, made.text
    declaration_id = made.json()["id"]
    cancelled = client.post(
        f"/api/declarations/{declaration_id}/cancel", json={"effective_on": days_ago(10)}, headers=staff
    )
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"

    redated = client.post(
        f"/api/declarations/{declaration_id}/confirm", json={"confirmation_sent_on": days_ago(20)}, headers=staff
    )
    assert redated.status_code == 200, redated.text
    assert (redated.json()["status"], redated.json()["voided"]) == ("voided", True)
    with runtime.read_session() as session:
        explained = giftaid_service.explain(session, runtime.settings, gift)
    assert explained.code == "declaration_cancelled", explained.reason


def test_cancelling_an_erased_supporters_declaration_keeps_no_words(runtime: Runtime, client: TestClient) -> None:
    """A declaration outlives its donor's erasure (HMRC may need it), and cancelling it is still a Gift Aid fact to
    record. Its reason, free words staff type about the donor, was kept word for word on a record that must hold
    none (the erasure blanks it; with nothing claimed no purge ever would)."""
    staff = staff_token(runtime, "fundraiser")
    ada = make_supporter(runtime)
    made = client.post(
        f"/api/supporters/{ada}/declarations",
        json={"method": "written", "made_on": TODAY.isoformat(), "scope": "future"},
        headers=staff,
    )
    declaration_id = made.json()["id"]
    with runtime.unit_of_work() as uow:
        erase_supporter(uow, runtime.settings, ada)
    answer = client.post(
        f"/api/declarations/{declaration_id}/cancel",
        json={"effective_on": TODAY.isoformat(), "reason": "Ada Lovelace rang from 07700 900123"},
        headers=staff,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "cancelled"
    assert answer.json()["cancellation_effective_on"] == TODAY.isoformat()
    assert answer.json()["cancellation_reason"] == ""
    with runtime.read_session() as session:
        declaration = session.exec(select(Declaration)).one()
    assert declaration.cancellation_reason == ""
