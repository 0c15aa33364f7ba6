"""Admin and privacy forms refused for what was typed come back on their own page with the error in words (tied to
the field where there is one) and change nothing; never a bare error page."""

from __future__ import annotations

import re

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.models import ApiToken, AuditEntry, StaffUser
from core.runtime import Runtime
from crm.models import Supporter
from tests.staff.conftest import add_supporter

SUMMARY = re.compile(r'<div class="error-summary".*?</div>', re.S)


def error_summary(page: str) -> str:
    found = SUMMARY.search(page)
    assert found, "the page has no error summary"
    return found.group(0)


def audited(runtime: Runtime, action: str) -> int:
    with runtime.read_session() as session:
        return len(session.exec(select(AuditEntry).where(AuditEntry.action == action)).all())


@pytest.mark.parametrize("typed", ["", "no", "erase please"])
def test_the_erase_form_without_erase_typed_comes_back_with_the_error_and_changes_nothing(
    client: TestClient, runtime: Runtime, logged_in, typed: str
) -> None:
    supporter_id = add_supporter(runtime, history=2)
    csrf = logged_in("admin")
    answer = client.post(f"/staff/supporters/{supporter_id}/erase", data={"csrf_token": csrf, "confirm": typed})
    assert answer.status_code == 400
    # The erase page again (what it will do, its form), with the error linked to the box.
    assert f'action="/staff/supporters/{supporter_id}/erase"' in answer.text
    assert "Erase this supporter" in answer.text and "everything goes now" in answer.text
    summary = error_summary(answer.text)
    assert 'href="#f-confirm"' in summary and "Type ERASE" in summary and "Nothing was changed" in summary
    assert 'id="f-confirm-error"' in answer.text and 'aria-invalid="true"' in answer.text
    with runtime.read_session() as session:
        supporter = session.get(Supporter, supporter_id)
        assert supporter is not None
        assert supporter.erased_at is None and supporter.email == "ann.smith@example.org"
    assert audited(runtime, "erase") == 0
    # Then typed as asked, it erases.
    done = client.post(f"/staff/supporters/{supporter_id}/erase", data={"csrf_token": csrf, "confirm": " erase "})
    assert done.status_code == 200 and "Erased." in done.text


def test_an_admin_changing_their_own_account_gets_the_users_page_with_the_error(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    csrf = logged_in("admin")
    with runtime.read_session() as session:
        me = session.exec(select(StaffUser).where(StaffUser.email == "admin@example.org")).one()
    answer = client.post(f"/staff/admin/users/{me.id}", data={"csrf_token": csrf, "action": "deactivate"})
    assert answer.status_code == 400
    assert "Staff users" in answer.text and "Add a staff user" in answer.text
    assert "your own account" in error_summary(answer.text)
    with runtime.read_session() as session:
        user = session.get(StaffUser, me.id)
        assert user is not None and user.active
    assert client.get("/staff/").status_code == 200  # still logged in


@pytest.mark.parametrize(
    ("form", "words"), [({"action": "role", "role": "owner"}, "role"), ({"action": "promote"}, "Choose a change")]
)
def test_a_role_change_refused_gets_the_users_page_with_the_error(
    client: TestClient, runtime: Runtime, logged_in, form: dict[str, str], words: str
) -> None:
    csrf = logged_in("admin")
    with runtime.read_session() as session:
        other = session.exec(select(StaffUser).where(StaffUser.email == "fundraiser@example.org")).one()
    answer = client.post(f"/staff/admin/users/{other.id}", data={"csrf_token": csrf, **form})
    assert answer.status_code == 400
    assert "Staff users" in answer.text and words in error_summary(answer.text)
    assert "fundraiser@example.org" in error_summary(answer.text)  # which user the refused change was for
    with runtime.read_session() as session:
        user = session.get(StaffUser, other.id)
        assert user is not None
        assert user.role == "fundraiser" and user.active
    assert audited(runtime, "change_role") == 0


def test_a_token_lifetime_not_offered_is_a_form_error(client: TestClient, runtime: Runtime, logged_in) -> None:
    csrf = logged_in("admin")
    answer = client.post(
        "/staff/admin/tokens",
        data={"csrf_token": csrf, "email": "finance@example.org", "name": "export", "days": "36500"},
    )
    assert answer.status_code == 400
    assert 'href="#f-days"' in error_summary(answer.text)
    assert 'value="export"' in answer.text  # what was typed is kept
    with runtime.read_session() as session:
        assert session.exec(select(ApiToken)).first() is None


@pytest.mark.parametrize("other", ["nobody@example.org", "not-an-id", "self"])
def test_a_merge_preview_of_a_duplicate_not_found_comes_back_on_the_supporter_page(
    client: TestClient, runtime: Runtime, logged_in, other: str
) -> None:
    keep = add_supporter(runtime, history=1)
    logged_in("fundraiser")
    typed = str(keep) if other == "self" else other
    answer = client.get(f"/staff/supporters/{keep}/merge", params={"other": typed})
    assert answer.status_code in (400, 404)
    assert f'action="/staff/supporters/{keep}/merge"' in answer.text  # the supporter's page, its merge form
    assert 'href="#f-other"' in error_summary(answer.text)
    assert f'value="{typed}"' in answer.text and 'id="f-other-error"' in answer.text
    assert audited(runtime, "merge_preview") == 0
