"""What is "missing" is one rule: a regular gift whose cancellation staff asked for is being stopped, so neither
`payments.service.missing_instalments` (`giving payments overdue`, the review-item alerts) nor the staff page lists
it; and the page lists an overdue gift only as the service does (an instalment paid for that due date is not
missing, even before the provider's next due date reaches us), plus the plans in arrears."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlmodel import select
from starlette.testclient import TestClient

from core.clock import uk_today
from core.runtime import Runtime
from crm.models import ReviewItem
from payments import service as payments_service
from payments.models import Gift, GiftStatus, Method, Provider
from tests.staff.conftest import add_supporter
from tests.staff.test_regular_gift_pages import add_regular_gift
from tests.staff.test_s17g_missing_instalments import due_on, rows_of


def open_alerts(runtime: Runtime, regular_id: uuid.UUID) -> list[str]:
    with runtime.read_session() as session:
        items = session.exec(
            select(ReviewItem).where(
                ReviewItem.kind == payments_service.MISSING_INSTALMENT,
                ReviewItem.resolved_at.is_(None),  # type: ignore[union-attr]
            )
        ).all()
        return [str(i.dedupe_key) for i in items if str(regular_id) in str(i.dedupe_key)]


def test_a_gift_whose_cancellation_was_asked_for_raises_no_missing_instalment(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    today = uk_today()
    supporter = add_supporter(runtime, "Sam", "Stopping", "sam@example.org")
    regular_id = add_regular_gift(runtime, supporter)
    due_on(runtime, regular_id, today - dt.timedelta(days=30))
    with runtime.unit_of_work() as uow:
        assert payments_service.raise_missing_instalment_alerts(uow, grace_days=7, today=today) == 1
    assert len(open_alerts(runtime, regular_id)) == 1

    # Sam phoned to stop his gift: a fundraiser asks for the cancellation from his page.
    csrf = logged_in("fundraiser")
    asked = client.post(
        f"/staff/supporters/{supporter}/regular-gifts/{regular_id}/cancel",
        data={"csrf_token": csrf},
        follow_redirects=False,
    )
    assert asked.status_code == 303

    with runtime.read_session() as session:
        missing = payments_service.missing_instalments(session, today=today, grace_days=7)
    assert [m.regular_gift_id for m in missing] == []
    with runtime.unit_of_work() as uow:
        assert payments_service.raise_missing_instalment_alerts(uow, grace_days=7, today=today) == 0
    assert open_alerts(runtime, regular_id) == []  # nothing more is expected of it


def test_the_page_lists_as_missing_what_the_service_does(client: TestClient, runtime: Runtime, logged_in) -> None:
    today = uk_today()
    late = add_supporter(runtime, "Lara", "Late", "lara@example.org")
    paid = add_supporter(runtime, "Pat", "Paid", "pat@example.org")
    late_gift = add_regular_gift(runtime, late)
    paid_gift = add_regular_gift(runtime, paid)
    stale = today - dt.timedelta(days=30)
    due_on(runtime, late_gift, stale)
    due_on(runtime, paid_gift, stale)
    # Pat's instalment for that day was paid; the provider's next due date has not reached us yet.
    with runtime.unit_of_work() as uow:
        uow.session.add(
            Gift(
                supporter_id=paid,
                regular_gift_id=paid_gift,
                amount=1250,
                status=GiftStatus.PAID,
                provider=Provider.GOCARDLESS,
                method=Method.DIRECT_DEBIT,
                due_on=stale,
                received_on=stale,
                received_at=dt.datetime.combine(stale, dt.time(12), tzinfo=dt.UTC),
                gocardless_payment_id=f"PM{uuid.uuid4().hex[:10].upper()}",
            )
        )
    with runtime.read_session() as session:
        service_ids = {m.regular_gift_id for m in payments_service.missing_instalments(session, today=today)}
    assert service_ids == {late_gift}

    logged_in("finance")
    page = client.get("/staff/finance/instalments")
    assert page.status_code == 200
    assert set(rows_of(page.text)) == {"Lara Late"}
