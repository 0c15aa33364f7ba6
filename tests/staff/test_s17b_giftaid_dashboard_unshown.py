"""The Gift Aid dashboard's "claimable now" agrees with what a claim build claims: a donor whose name HMRC's
schedule shows as nothing, even transliterated (an Arabic alef), is held back by every build (`missing_name`), so the
dashboard counts that gift among the held back, not the claimable."""

from __future__ import annotations

import datetime as dt
import re

from starlette.testclient import TestClient

from core.clock import uk_today
from core.runtime import Runtime
from tests.staff.conftest import add_gift, add_supporter


def test_a_donor_the_schedule_cannot_name_is_not_claimable_now(client: TestClient, runtime: Runtime, logged_in) -> None:  # type: ignore[no-untyped-def]
    received = uk_today() - dt.timedelta(days=20)
    add_gift(runtime, add_supporter(runtime, declaration=True), 10_000, received)
    alef = add_supporter(runtime, "\u0627", "Haddad", "alef@example.org", declaration=True)
    add_gift(runtime, alef, 7_000, received)
    logged_in("finance")
    dashboard = client.get("/staff/finance/giftaid")
    assert dashboard.status_code == 200
    facts = re.search(r"<dt>Gifts</dt><dd>(\d+)</dd>\s*<dt>Donations</dt><dd>([^<]+)</dd>", dashboard.text)
    assert facts is not None and facts.groups() == ("1", "£100.00")
    assert "£170.00" not in dashboard.text
    held = re.findall(
        r'<span class="tag">([^<]+)</span></td><td class="num">(\d+)</td><td class="num">([^<]+)</td>', dashboard.text
    )
    assert ("1", "£70.00") in [(gifts, total) for _, gifts, total in held], held
    assert "schedule can show none of its characters" in dashboard.text
