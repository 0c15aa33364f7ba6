"""A claim's files on the staff pages (`.../schedule.ods`, `.../claim.xml`) are written by a form POST with the
session's CSRF token, never by a GET. A download writes an "export" audit entry in the staff member's name and, the
first time a part is written, a claim event recording it (which changes which gifts a later take-off keeps). As GETs
they were started by any link on another site (SameSite=Lax sends the session cookie on a top-level GET), so a
logged-in finance user's browser could be made to export a claim and write its history without them knowing."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

from sqlmodel import select
from starlette.testclient import TestClient

from core.clock import uk_today
from core.models import AuditEntry
from core.runtime import Runtime
from giftaid.models import Claim, ClaimEvent
from tests.staff.conftest import add_gift, add_supporter, csrf_of

# What a page on another site makes a logged-in browser send when it is opened from a link there.
CROSS_SITE = {"referer": "https://evil.example/", "sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate"}


def _built_claim(client: TestClient, runtime: Runtime, csrf: str) -> uuid.UUID:
    declared = add_supporter(runtime, declaration=True)
    add_gift(runtime, declared, 123450, uk_today() - dt.timedelta(days=20))
    built = client.post(
        "/staff/finance/giftaid/claims", data={"csrf_token": csrf, "through": uk_today().strftime("%d/%m/%Y")}
    )
    assert built.status_code == 200 and "Claim built: 1 line" in built.text
    with runtime.read_session() as session:
        return session.exec(select(Claim)).one().id


def _written(runtime: Runtime, claim_id: uuid.UUID) -> tuple[list[Any], list[Any]]:
    """The export audit entries, and the claim's events."""
    with runtime.read_session() as session:
        exports = session.exec(select(AuditEntry).where(AuditEntry.action == "export")).all()
        events = session.exec(select(ClaimEvent).where(ClaimEvent.claim_id == claim_id)).all()
        return [e.detail for e in exports], [(e.actor, e.detail) for e in events]


def test_a_cross_site_get_of_a_claim_file_writes_nothing_and_exports_nothing(
    client: TestClient, runtime: Runtime, logged_in: Any
) -> None:
    csrf = logged_in("finance")
    claim_id = _built_claim(client, runtime, csrf)
    before = _written(runtime, claim_id)
    assert before[0] == []
    base = f"/staff/finance/giftaid/claims/{claim_id}"
    urls = [f"{base}/schedule.ods", f"{base}/claim.xml", f"{base}/schedule.ods?part=1", f"{base}/claim.xml?part=1"]
    got = [client.get(url, headers=CROSS_SITE) for url in urls]
    # A POST without this session's token (a form on another site) is refused too.
    forged = [client.post(url, data=data, headers=CROSS_SITE) for url in urls for data in ({}, {"csrf_token": "x"})]
    # No export in the audit log in the finance user's name, no part's first writing in the claim's history.
    assert _written(runtime, claim_id) == before
    for url, answer in zip(urls, got, strict=True):
        assert answer.status_code == 405, (url, answer.status_code)  # "Not a page": the address of a form
        assert "content-disposition" not in answer.headers
        assert answer.content[:2] != b"PK" and b"<GovTalkMessage" not in answer.content
    assert [a.status_code for a in forged] == [403] * len(forged)
    assert not any("content-disposition" in a.headers for a in forged)


def test_the_claim_page_downloads_each_file_by_a_form_post(
    client: TestClient, runtime: Runtime, logged_in: Any
) -> None:
    csrf = logged_in("finance")
    claim_id = _built_claim(client, runtime, csrf)
    base = f"/staff/finance/giftaid/claims/{claim_id}"
    page = client.get(base).text
    assert csrf_of(page) == csrf
    forms = re.findall(r'<form method="post" action="([^"]+)">\s*<input type="hidden" name="csrf_token"', page)
    assert f"{base}/schedule.ods" in forms and f"{base}/claim.xml" in forms
    assert f'href="{base}/schedule.ods' not in page and f'href="{base}/claim.xml' not in page

    ods = client.post(f"{base}/schedule.ods", data={"csrf_token": csrf})
    assert ods.status_code == 200 and ods.content[:2] == b"PK"
    assert ods.headers["content-disposition"].startswith("attachment;")
    xml = client.post(f"{base}/claim.xml", data={"csrf_token": csrf})
    assert xml.status_code == 200 and b"<GovTalkMessage" in xml.content and b"1234.50" in xml.content
    exports, _ = _written(runtime, claim_id)
    assert sorted(e["file"] for e in exports) == ["claim.xml", "schedule.ods"]
