"""Gift Aid pages: the dashboard, building a claim, its files and states; a fundraiser is refused all of it."""

from __future__ import annotations

import datetime as dt

from sqlmodel import select
from starlette.testclient import TestClient

from core.clock import uk_today
from core.models import AuditEntry
from core.runtime import Runtime
from giftaid.models import Claim
from tests.staff.conftest import add_gift, add_supporter


def _claimable(runtime: Runtime) -> None:
    declared = add_supporter(runtime, declaration=True)
    undeclared = add_supporter(runtime, "Bob", "Jones", "bob@example.org", "N1 9GU")
    received = uk_today() - dt.timedelta(days=20)
    add_gift(runtime, declared, 123450, received)
    add_gift(runtime, undeclared, 2000, received)


def test_fundraiser_is_refused_the_claim(client: TestClient, runtime: Runtime, logged_in) -> None:
    _claimable(runtime)
    csrf = logged_in("fundraiser")
    assert client.get("/staff/finance/giftaid").status_code == 403
    refused = client.post("/staff/finance/giftaid/claims", data={"csrf_token": csrf, "through": "31/12/2099"})
    assert refused.status_code == 403 and "Not allowed" in refused.text
    with runtime.read_session() as session:
        assert session.exec(select(Claim)).first() is None


def test_finance_builds_downloads_and_marks_a_claim(client: TestClient, runtime: Runtime, logged_in) -> None:
    _claimable(runtime)
    csrf = logged_in("finance")
    dashboard = client.get("/staff/finance/giftaid")
    assert dashboard.status_code == 200
    assert "£1,234.50" in dashboard.text and "£308.63" in dashboard.text  # the donations and their Gift Aid
    assert "no declaration" in dashboard.text
    built = client.post(
        "/staff/finance/giftaid/claims", data={"csrf_token": csrf, "through": uk_today().strftime("%d/%m/%Y")}
    )
    assert built.status_code == 200 and "Claim built: 1 line" in built.text
    with runtime.read_session() as session:
        claim_id = session.exec(select(Claim)).one().id
    ods = client.get(f"/staff/finance/giftaid/claims/{claim_id}/schedule.ods")
    assert ods.status_code == 200 and ods.content[:2] == b"PK"
    assert ods.headers["content-disposition"].startswith("attachment;")
    xml = client.get(f"/staff/finance/giftaid/claims/{claim_id}/claim.xml")
    assert xml.status_code == 200 and b"<GovTalkMessage" in xml.content and b"1234.50" in xml.content
    for status, extra in (
        ("submitted", {}),
        ("accepted", {}),
        ("paid", {"paid_amount": "308.63", "paid_on": "01/02/2026"}),
    ):
        answer = client.post(
            f"/staff/finance/giftaid/claims/{claim_id}/status", data={"csrf_token": csrf, "status": status, **extra}
        )
        assert answer.status_code == 200, answer.text
    with runtime.read_session() as session:
        claim = session.get(Claim, claim_id)
        assert claim.status == "paid" and claim.paid_amount == 30863
        exports = session.exec(select(AuditEntry).where(AuditEntry.action == "export")).all()
        assert {e.detail["file"] for e in exports} == {"schedule.ods", "claim.xml"}


def test_fundraiser_cannot_download_a_claim(client: TestClient, runtime: Runtime, logged_in) -> None:
    _claimable(runtime)
    csrf = logged_in("finance")
    client.post("/staff/finance/giftaid/claims", data={"csrf_token": csrf, "through": uk_today().strftime("%d/%m/%Y")})
    with runtime.read_session() as session:
        claim_id = session.exec(select(Claim)).one().id
    logged_in("fundraiser")
    for suffix in ("", "/schedule.ods", "/claim.xml"):
        assert client.get(f"/staff/finance/giftaid/claims/{claim_id}{suffix}").status_code == 403


def test_a_rejected_claim_needs_a_reason(client: TestClient, runtime: Runtime, logged_in) -> None:
    _claimable(runtime)
    csrf = logged_in("finance")
    client.post("/staff/finance/giftaid/claims", data={"csrf_token": csrf, "through": uk_today().strftime("%d/%m/%Y")})
    with runtime.read_session() as session:
        claim_id = session.exec(select(Claim)).one().id
    client.post(f"/staff/finance/giftaid/claims/{claim_id}/status", data={"csrf_token": csrf, "status": "submitted"})
    answer = client.post(
        f"/staff/finance/giftaid/claims/{claim_id}/status", data={"csrf_token": csrf, "status": "rejected"}
    )
    assert answer.status_code == 400
    with runtime.read_session() as session:
        assert session.get(Claim, claim_id).status == "submitted"
