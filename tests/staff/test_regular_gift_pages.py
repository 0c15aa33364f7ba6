"""Cancelling a donor's regular gift from their page (the job that tells the provider is tested in
tests/payments/test_regular_gift_cancellation.py), and the erasure page saying which regular gifts it will stop."""

from __future__ import annotations

import html
import re
import uuid

from sqlmodel import select
from starlette.testclient import TestClient

from core.models import AuditEntry, Job
from core.runtime import Runtime
from crm.models import HistoryEntry
from payments.models import Method, Provider, RegularGift, RegularGiftStatus
from tests.staff.conftest import add_supporter
from tests.staff.test_notices_and_forms import notice_of

CANCEL_JOB = "payments.cancel_regular_gift"


def add_regular_gift(
    runtime: Runtime, supporter_id: uuid.UUID, *, status: RegularGiftStatus = RegularGiftStatus.ACTIVE
) -> uuid.UUID:
    with runtime.unit_of_work() as uow:
        regular = RegularGift(
            supporter_id=supporter_id,
            amount=1250,
            provider=Provider.GOCARDLESS,
            method=Method.DIRECT_DEBIT,
            status=status,
            gocardless_subscription_id=f"SB{uuid.uuid4().hex[:10].upper()}",
            gocardless_mandate_id=f"MD{uuid.uuid4().hex[:10].upper()}",
        )
        uow.session.add(regular)
        uow.session.flush()
        return regular.id


def cancel_jobs(runtime: Runtime) -> list[dict[str, str]]:
    with runtime.read_session() as session:
        return [job.arguments for job in session.exec(select(Job).where(Job.actor_name == CANCEL_JOB)).all()]


def regular_of(runtime: Runtime, regular_id: uuid.UUID) -> RegularGift:
    with runtime.read_session() as session:
        regular = session.get(RegularGift, regular_id)
        assert regular is not None
        session.expunge(regular)
        return regular


def test_a_fundraiser_cancels_a_monthly_gift_from_the_supporters_page(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    supporter_id = add_supporter(runtime)
    regular_id = add_regular_gift(runtime, supporter_id)
    csrf = logged_in("fundraiser")
    page = client.get(f"/staff/supporters/{supporter_id}")
    action = f"/staff/supporters/{supporter_id}/regular-gifts/{regular_id}/cancel"
    assert f'action="{action}"' in page.text

    # Without the session's CSRF token: refused, nothing recorded.
    refused = client.post(action, data={"csrf_token": "forged"}, follow_redirects=False)
    assert refused.status_code == 403
    assert regular_of(runtime, regular_id).cancel_requested_at is None and cancel_jobs(runtime) == []

    answer = client.post(action, data={"csrf_token": csrf}, follow_redirects=False)
    assert answer.status_code == 303
    shown = client.get(answer.headers["location"])
    assert notice_of(shown.text) == html.escape(
        "Cancelling the monthly gift of £12.50: GoCardless is being told to take no more payments.", quote=True
    )
    assert "cancellation asked for by fundraiser@example.org" in shown.text
    regular = regular_of(runtime, regular_id)
    assert regular.status == RegularGiftStatus.ACTIVE  # until GoCardless has been told
    assert regular.cancel_requested_by == "fundraiser@example.org"
    assert cancel_jobs(runtime) == [{"regular_gift_id": str(regular_id)}]
    with runtime.read_session() as session:
        audit = session.exec(select(AuditEntry).where(AuditEntry.action == "cancel_regular_gift")).all()
        assert [(a.actor, a.object_id) for a in audit] == [("fundraiser@example.org", str(regular_id))]
        items = session.exec(select(HistoryEntry).where(HistoryEntry.supporter_id == supporter_id)).all()
        requested = [i.summary for i in items if i.type == "regular_gift_cancel_requested"]
        assert requested == ["Cancellation of the monthly gift of £12.50 asked for in Giving (fundraiser@example.org)"]


def test_a_gift_that_ended_or_belongs_to_someone_else_cannot_be_cancelled_here(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    supporter_id = add_supporter(runtime)
    other_id = add_supporter(runtime, "Bea", "Jones", "bea@example.org")
    ended_id = add_regular_gift(runtime, supporter_id, status=RegularGiftStatus.CANCELLED)
    others_id = add_regular_gift(runtime, other_id)
    csrf = logged_in("finance")
    page = client.get(f"/staff/supporters/{supporter_id}")
    assert f"regular-gifts/{ended_id}/cancel" not in page.text  # nothing to cancel, no control

    ended = client.post(f"/staff/supporters/{supporter_id}/regular-gifts/{ended_id}/cancel", data={"csrf_token": csrf})
    assert ended.status_code == 409 and "already cancelled" in ended.text
    someone_elses = client.post(
        f"/staff/supporters/{supporter_id}/regular-gifts/{others_id}/cancel", data={"csrf_token": csrf}
    )
    assert someone_elses.status_code == 404
    unknown = client.post(
        f"/staff/supporters/{supporter_id}/regular-gifts/{uuid.uuid4()}/cancel", data={"csrf_token": csrf}
    )
    assert unknown.status_code == 404
    assert regular_of(runtime, others_id).cancel_requested_at is None
    assert cancel_jobs(runtime) == []


def test_the_erasure_page_says_which_regular_gifts_it_will_cancel(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    supporter_id = add_supporter(runtime)
    add_regular_gift(runtime, supporter_id)
    add_regular_gift(runtime, supporter_id, status=RegularGiftStatus.FINISHED)
    logged_in("admin")
    page = client.get(f"/staff/supporters/{supporter_id}/erase")
    assert page.status_code == 200
    warning = re.search(r'<p class="warning">Their 1 regular gift .*?</p>', page.text, re.S)
    assert warning, page.text
    assert "£12.50 monthly by direct debit" in warning.group(0) and "cancelled at GoCardless" in warning.group(0)
