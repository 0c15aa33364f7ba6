"""The missing-instalments page: a regular gift whose cancellation staff asked for is not listed as missing (it is
being stopped), and a plan in arrears whose next instalment is not due yet shows no negative days late."""

from __future__ import annotations

import datetime as dt
import re
import uuid

from starlette.testclient import TestClient

from core.clock import uk_today
from core.runtime import Runtime
from payments.models import RegularGift, RegularGiftStatus
from tests.staff.conftest import add_supporter
from tests.staff.test_regular_gift_pages import add_regular_gift

ROW = re.compile(r"<tr>\s*<td><a [^>]*>(?P<name>[^<]+)</a></td>.*?</tr>", re.S)
CELLS = re.compile(r"<td[^>]*>(.*?)</td>", re.S)


def due_on(runtime: Runtime, regular_id: uuid.UUID, day: dt.date) -> None:
    with runtime.unit_of_work() as uow:
        regular = uow.session.get(RegularGift, regular_id)
        assert regular is not None
        regular.next_due_on = day
        uow.session.add(regular)


def rows_of(page: str) -> dict[str, list[str]]:
    return {m.group("name"): CELLS.findall(m.group(0)) for m in ROW.finditer(page)}


def test_cancelled_on_request_is_not_missing_and_no_day_count_is_negative(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    today = uk_today()
    late = add_supporter(runtime, "Lara", "Late", "lara@example.org")
    stopping = add_supporter(runtime, "Sam", "Stopping", "sam@example.org")
    arrears = add_supporter(runtime, "Ada", "Arrears", "ada@example.org")
    late_gift = add_regular_gift(runtime, late)
    stopping_gift = add_regular_gift(runtime, stopping)
    arrears_gift = add_regular_gift(runtime, arrears, status=RegularGiftStatus.IN_ARREARS)
    due_on(runtime, late_gift, today - dt.timedelta(days=30))
    due_on(runtime, stopping_gift, today - dt.timedelta(days=30))
    due_on(runtime, arrears_gift, today + dt.timedelta(days=10))
    # Sam phoned to stop his gift: a fundraiser asks for the cancellation from his page.
    csrf = logged_in("fundraiser")
    asked = client.post(
        f"/staff/supporters/{stopping}/regular-gifts/{stopping_gift}/cancel",
        data={"csrf_token": csrf},
        follow_redirects=False,
    )
    assert asked.status_code == 303

    logged_in("finance")
    page = client.get("/staff/finance/instalments")
    assert page.status_code == 200
    rows = rows_of(page.text)
    assert set(rows) == {"Lara Late", "Ada Arrears"}, rows
    assert rows["Lara Late"][5].strip() == "30"
    days_late = rows["Ada Arrears"][5].strip()
    assert not days_late.startswith("-"), days_late
    assert days_late in ("0", "—"), days_late
