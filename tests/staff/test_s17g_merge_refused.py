"""A merge refused when the form is sent (the duplicate erased or already merged since the preview, or a record
that is not one) comes back on the supporter's page with the error by the merge box, as the preview does; never a
bare error page, and nothing changes."""

from __future__ import annotations

import re

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.models import AuditEntry
from core.runtime import Runtime
from crm.models import Supporter
from giving import merge, privacy
from tests.staff.conftest import add_supporter

SUMMARY = re.compile(r'<div class="error-summary".*?</div>', re.S)


def error_summary(page: str) -> str:
    found = SUMMARY.search(page)
    assert found, "the page has no error summary"
    return found.group(0)


def merges_audited(runtime: Runtime) -> int:
    with runtime.read_session() as session:
        return len(session.exec(select(AuditEntry).where(AuditEntry.action == "merge")).all())


@pytest.mark.parametrize("meanwhile", ["erased", "merged", "not-an-id"])
def test_a_merge_refused_when_sent_comes_back_on_the_supporter_page(
    client: TestClient, runtime: Runtime, logged_in, meanwhile: str
) -> None:
    keep = add_supporter(runtime, history=1)
    duplicate = add_supporter(runtime, "Ann", "Smith", "a.smith@example.net", history=0)
    csrf = logged_in("fundraiser")
    preview = client.get(f"/staff/supporters/{keep}/merge", params={"other": "a.smith@example.net"})
    assert preview.status_code == 200
    other = str(duplicate)
    # Between the preview and the button: an admin erases the duplicate, or a colleague merges it in another tab.
    with runtime.unit_of_work() as uow:
        if meanwhile == "erased":
            privacy.erase_supporter(uow, runtime.settings, duplicate)
        elif meanwhile == "merged":
            merge.merge_supporters(uow, duplicate, keep, by="colleague@example.org")
        else:
            other = "not-an-id"
    before = merges_audited(runtime)

    answer = client.post(f"/staff/supporters/{keep}/merge", data={"csrf_token": csrf, "other": other})

    assert answer.status_code in (400, 404, 409)
    assert f'action="/staff/supporters/{keep}/merge"' in answer.text  # the supporter's page, its merge form
    summary = error_summary(answer.text)
    assert 'href="#f-other"' in summary
    expected = {"erased": "erased", "merged": "same supporter", "not-an-id": "no supporter"}[meanwhile]
    assert expected in summary, summary
    assert 'id="f-other-error"' in answer.text and f'value="{other}"' in answer.text
    assert merges_audited(runtime) == before
    with runtime.read_session() as session:
        survivor = session.get(Supporter, keep)
        assert survivor is not None and survivor.merged_into_id is None and survivor.erased_at is None
