"""The claim page shows what HMRC's gateway said about a claim sent through it: its correlation id, HMRC's receipt,
and HMRC's errors with the line and the gifts each one is about (so finance can fix those gifts). Before, a claim
HMRC rejected showed only the first three error texts, without the gifts."""

from __future__ import annotations

import datetime as dt

from sqlmodel import select
from starlette.testclient import TestClient

from core.clock import uk_today
from core.runtime import Runtime
from giftaid import service
from giftaid.models import Claim, ClaimGift
from tests.giftaid.fake_gateway import FakeGateway, gateway, settings
from tests.staff.conftest import add_gift, add_supporter

__all__ = ["gateway", "settings"]  # fixtures, shared with the other gateway tests


def _sent_claim(runtime: Runtime, client: TestClient, csrf: str) -> str:
    supporter = add_supporter(runtime, declaration=True)
    add_gift(runtime, supporter, 5000, uk_today() - dt.timedelta(days=20))
    client.post("/staff/finance/giftaid/claims", data={"csrf_token": csrf, "through": uk_today().strftime("%d/%m/%Y")})
    with runtime.read_session() as session:
        claim_id = session.exec(select(Claim)).one().id
    with runtime.unit_of_work() as uow:
        service.submit_claim(uow, runtime.settings, claim_id, actor="finance@example.org")
    with runtime.unit_of_work() as uow:
        service.poll_claim(uow, runtime.settings, claim_id, actor="finance@example.org")
    return str(claim_id)


def test_a_rejected_claim_shows_hmrcs_errors_with_their_gifts(
    client: TestClient, runtime: Runtime, logged_in, gateway: FakeGateway
) -> None:
    gateway.outcome, gateway.error_text = "business_error", "Gift Aid donation date cannot be in the future"
    csrf = logged_in("finance")
    claim_id = _sent_claim(runtime, client, csrf)
    with runtime.read_session() as session:
        (gift_id,) = [str(row.gift_id) for row in session.exec(select(ClaimGift))]
    page = client.get(f"/staff/finance/giftaid/claims/{claim_id}")
    assert page.status_code == 200
    assert "HMRC&#39;s answer" in page.text or "HMRC's answer" in page.text
    assert "7040" in page.text and "Gift Aid donation date cannot be in the future" in page.text
    assert gift_id in page.text  # the gift the error is about
    assert next(iter(gateway.deleted)) in page.text  # the correlation id
    assert "schedule.ods" not in page.text  # a rejected claim's files are refused (409): no links to them


def test_an_accepted_claim_shows_hmrcs_receipt(client: TestClient, runtime: Runtime, logged_in) -> None:
    csrf = logged_in("finance")
    claim_id = _sent_claim(runtime, client, csrf)
    page = client.get(f"/staff/finance/giftaid/claims/{claim_id}")
    assert page.status_code == 200
    assert "The associated IRmark was:" in page.text
