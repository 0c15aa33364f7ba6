"""The supporter page's totals said "Regular gifts: 2 active" while the table below showed one of the two in
arrears (found in review): the count is contract.md's `regular_gifts`, "active or in-arrears", so the page says
"running", and a paused or ended gift is not counted."""

from __future__ import annotations

import datetime as dt
import re
import uuid

from starlette.testclient import TestClient

from core.runtime import Runtime
from tests.crm.helpers import staff_token
from tests.staff.conftest import add_supporter


def _facts(html: str, section: str) -> dict[str, str]:
    found = re.search(rf'aria-labelledby="{section}">(.*?)</section>', html, re.S)
    assert found, f"no section {section}"
    pairs = re.findall(r"<dt>(.*?)</dt>\s*<dd>(.*?)</dd>", found.group(1), re.S)
    return {" ".join(k.split()): " ".join(re.sub(r"<[^>]+>", " ", v).split()) for k, v in pairs}


def test_the_totals_count_running_regular_gifts_as_the_api_does(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    from payments.models import Method, Provider, RegularGift, RegularGiftStatus

    supporter_id = add_supporter(runtime)
    started = dt.datetime(2025, 1, 10, 12, tzinfo=dt.UTC)
    with runtime.unit_of_work() as uow:
        for status in (
            RegularGiftStatus.ACTIVE,
            RegularGiftStatus.IN_ARREARS,
            RegularGiftStatus.PAUSED,
            RegularGiftStatus.CANCELLED,
        ):
            uow.session.add(
                RegularGift(
                    supporter_id=supporter_id,
                    amount=1000,
                    provider=Provider.GOCARDLESS,
                    method=Method.DIRECT_DEBIT,
                    status=status,
                    started_at=started,
                    gocardless_subscription_id=f"SB{uuid.uuid4().hex[:10].upper()}",
                    created_at=started,
                )
            )
    api = client.get(f"/api/supporters/{supporter_id}", headers=staff_token(runtime, "fundraiser")).json()
    assert api["totals"]["regular_gifts"] == 2
    logged_in("fundraiser")
    page = client.get(f"/staff/supporters/{supporter_id}").text
    assert _facts(page, "totals")["Regular gifts"] == "2 running"
