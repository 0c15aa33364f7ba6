"""Review of s15a: a free month (an invoice paid with nothing) is remembered as a cancelled £0 instalment row, only so
the schedule can step over it. It is no gift: the supporter's page lists under "Recent gifts" the gifts and what
became of their money (paid, failed, voided), never a £0.00 "cancelled" gift for a month nothing was due."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from core.auth import add_staff_user
from core.models import StaffRole
from core.runtime import Runtime
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Scenario
from tests.staff.conftest import PASSWORD, StaffAccount, log_in
from tests.webhooks.support import EventsWorker, app_client, catalogue, install, settings, stuck_events, worker
from tests.webhooks.test_s14a_invoice_outcomes import _monthly_in_arrears, _post, _start
from tests.webhooks.test_s15a_free_later_period import _march_free

__all__ = ["app_client", "catalogue", "settings", "worker"]

RECENT_GIFTS = re.compile(r'<h2 id="gifts">Recent gifts</h2>(.*?)</table>', re.S)
ROW = re.compile(r"<tr>(.*?)</tr>", re.S)


def _recent_gifts(html: str) -> list[str]:
    found = RECENT_GIFTS.search(html)
    assert found, "the page lists no recent gifts"
    rows = [re.sub(r"<[^>]+>", "|", row) for row in ROW.findall(found.group(1)) if "<td" in row]
    return [" ".join(cell.strip() for cell in row.split("|") if cell.strip()) for row in rows]


def test_a_free_month_is_not_listed_as_a_cancelled_gift_on_the_supporters_page(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter, _, failed = _monthly_in_arrears(scenario, "Free Page Pia")
    free = _march_free(failed)
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker)
    _post(app_client, worker, free, free)
    assert stuck_events(runtime) == []
    with runtime.unit_of_work() as uow:
        add_staff_user(uow, "fundraiser@example.org", StaffRole.FUNDRAISER, PASSWORD, issuer="Giving tests")
    log_in(app_client, StaffAccount("fundraiser@example.org", StaffRole.FUNDRAISER, PASSWORD, None))

    page = app_client.get(f"/staff/supporters/{supporter}")
    assert page.status_code == 200
    rows = _recent_gifts(page.text)
    # January paid and February failed are gifts and what became of them; March, free, is none.
    assert len(rows) == 2, rows
    assert [row for row in rows if "£0.00" in row] == [], rows
    assert any("paid" in row for row in rows) and any("failed" in row for row in rows), rows
