"""The claim's page links each part to download (`?part=N`): after a take-off left a message's last schedule empty
(no schedule moves into another message), it linked that empty schedule too, whose download is refused. It links
only the schedules that have lines, under their stable numbers."""

from __future__ import annotations

import datetime as dt
from typing import Any

import time_machine
from starlette.testclient import TestClient

from core.clock import UK
from core.runtime import Runtime
from tests.giftaid.test_s17p_claim_parts_listed import _build_then_empty_schedule_2, small_parts

__all__ = ["small_parts"]


def test_the_claim_page_links_no_empty_schedule(
    runtime: Runtime, client: TestClient, logged_in: Any, small_parts: None
) -> None:
    claim_id = _build_then_empty_schedule_2(runtime)
    with time_machine.travel(dt.datetime(2026, 4, 6, 12, 0, tzinfo=UK), tick=False):
        csrf = logged_in("finance")
        page = client.get(f"/staff/finance/giftaid/claims/{claim_id}")
        assert page.status_code == 200, page.text
        base = f"/staff/finance/giftaid/claims/{claim_id}"
        assert f"{base}/schedule.ods?part=1" in page.text
        assert f"{base}/schedule.ods?part=3" in page.text
        assert f"{base}/schedule.ods?part=2" not in page.text
        for part in (1, 3):
            # Each a form's button (a POST with the CSRF token: test_s17w_claim_downloads_post).
            answer = client.post(f"{base}/schedule.ods?part={part}", data={"csrf_token": csrf})
            assert answer.status_code == 200
