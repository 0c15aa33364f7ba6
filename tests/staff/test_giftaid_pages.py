"""Gift Aid pages: the dashboard, building a claim, its files and states; a fundraiser is refused all of it."""

from __future__ import annotations

import datetime as dt
import uuid

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
    # The files are form POSTs with the CSRF token (they write the audit log): test_s17w_claim_downloads_post.
    ods = client.post(f"/staff/finance/giftaid/claims/{claim_id}/schedule.ods", data={"csrf_token": csrf})
    assert ods.status_code == 200 and ods.content[:2] == b"PK"
    assert ods.headers["content-disposition"].startswith("attachment;")
    xml = client.post(f"/staff/finance/giftaid/claims/{claim_id}/claim.xml", data={"csrf_token": csrf})
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
        assert claim is not None and claim.status == "paid" and claim.paid_amount == 30863
        exports = session.exec(select(AuditEntry).where(AuditEntry.action == "export")).all()
        assert {e.detail["file"] for e in exports} == {"schedule.ods", "claim.xml"}


def test_fundraiser_cannot_download_a_claim(client: TestClient, runtime: Runtime, logged_in) -> None:
    _claimable(runtime)
    csrf = logged_in("finance")
    client.post("/staff/finance/giftaid/claims", data={"csrf_token": csrf, "through": uk_today().strftime("%d/%m/%Y")})
    with runtime.read_session() as session:
        claim_id = session.exec(select(Claim)).one().id
    csrf = logged_in("fundraiser")
    assert client.get(f"/staff/finance/giftaid/claims/{claim_id}").status_code == 403
    for suffix in ("/schedule.ods", "/claim.xml"):
        answer = client.post(f"/staff/finance/giftaid/claims/{claim_id}{suffix}", data={"csrf_token": csrf})
        assert answer.status_code == 403


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
        assert session.get(Claim, claim_id).status == "submitted"  # type: ignore[union-attr]


# --- bad input on a claim page's form re-shows the page with the error in words, changing nothing ---------------------


def _accepted_claim(client: TestClient, runtime: Runtime, csrf: str) -> uuid.UUID:
    _claimable(runtime)
    client.post("/staff/finance/giftaid/claims", data={"csrf_token": csrf, "through": uk_today().strftime("%d/%m/%Y")})
    with runtime.read_session() as session:
        claim_id = session.exec(select(Claim)).one().id
    for status in ("submitted", "accepted"):
        client.post(f"/staff/finance/giftaid/claims/{claim_id}/status", data={"csrf_token": csrf, "status": status})
    return claim_id


def test_a_bad_payment_on_the_claim_page_reshows_it_with_the_errors(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    csrf = logged_in("finance")
    claim_id = _accepted_claim(client, runtime, csrf)
    url = f"/staff/finance/giftaid/claims/{claim_id}/status"
    answer = client.post(
        url, data={"csrf_token": csrf, "status": "paid", "paid_amount": "lots", "paid_on": "31/02/2026"}
    )
    assert answer.status_code == 400
    assert "Gift Aid claim through" in answer.text  # the claim's page, not a bare error page
    assert "Enter the amount HMRC paid" in answer.text
    assert 'value="lots"' in answer.text and 'value="31/02/2026"' in answer.text  # as typed
    assert '<details class="action" open>' in answer.text  # the form that failed is open
    negative = client.post(
        url, data={"csrf_token": csrf, "status": "paid", "paid_amount": "-5.00", "paid_on": "01/02/2026"}
    )
    assert negative.status_code == 400 and "Gift Aid claim through" in negative.text
    assert "negative" in negative.text
    unknown = client.post(url, data={"csrf_token": csrf, "status": "lost"})
    assert unknown.status_code == 400 and "Gift Aid claim through" in unknown.text
    assert "Choose what happened to the claim" in unknown.text
    with runtime.read_session() as session:
        claim = session.get(Claim, claim_id)
        assert claim is not None
        assert (claim.status, claim.paid_amount, claim.paid_on) == ("accepted", None, None)


def test_a_step_the_claim_cannot_take_reshows_its_page(client: TestClient, runtime: Runtime, logged_in) -> None:
    csrf = logged_in("finance")
    _claimable(runtime)
    client.post("/staff/finance/giftaid/claims", data={"csrf_token": csrf, "through": uk_today().strftime("%d/%m/%Y")})
    with runtime.read_session() as session:
        claim_id = session.exec(select(Claim)).one().id
    url = f"/staff/finance/giftaid/claims/{claim_id}/status"
    answer = client.post(
        url, data={"csrf_token": csrf, "status": "paid", "paid_amount": "1.00", "paid_on": "01/02/2026"}
    )
    assert answer.status_code == 409
    assert "Gift Aid claim through" in answer.text and "cannot become paid" in answer.text
    rejected = client.post(url, data={"csrf_token": csrf, "status": "rejected"})
    assert rejected.status_code == 400 and "Say why HMRC rejected it" in rejected.text
    assert "Gift Aid claim through" in rejected.text
    with runtime.read_session() as session:
        assert session.get(Claim, claim_id).status == "built"  # type: ignore[union-attr]


# --- held-back refunded gifts show their amount -----------------------------------------------------------------------


def test_a_refunded_gift_held_back_shows_its_amount_and_that_it_was_refunded(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    from tests.giftaid.factories import make_gift

    csrf = logged_in("finance")
    _claimable(runtime)
    declared = add_supporter(runtime, "Cy", "Jones", "cy@example.org", "N1 9GU", declaration=True)
    make_gift(runtime, declared, amount=4_321, received_on=uk_today() - dt.timedelta(days=10), returned_amount=4_321)
    dashboard = client.get("/staff/finance/giftaid")
    assert "£43.21" in dashboard.text and "refunded £43.21" in dashboard.text
    client.post("/staff/finance/giftaid/claims", data={"csrf_token": csrf, "through": uk_today().strftime("%d/%m/%Y")})
    with runtime.read_session() as session:
        claim_id = session.exec(select(Claim)).one().id
    page = client.get(f"/staff/finance/giftaid/claims/{claim_id}")
    assert page.status_code == 200
    assert "£43.21" in page.text and "refunded £43.21" in page.text
    assert "£20.00" in page.text  # the undeclared gift held back: its amount too
