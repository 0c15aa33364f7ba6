"""Admin pages (users, tokens, audit), merging from the supporter page, subject access export and erasure, and
the privacy periodic jobs."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid

from sqlmodel import select
from starlette.testclient import TestClient

from core.auth import principal_from_token
from core.models import ApiToken, AuditEntry, StaffUser
from core.runtime import Runtime
from crm.models import Declaration, HistoryEntry, Supporter, SupporterAddress
from giving import privacy
from tests.staff.conftest import StaffAccount, add_supporter


def test_admin_pages_are_admin_only(client: TestClient, logged_in) -> None:
    supporter_path = "/staff/admin/users"
    for role in ("fundraiser", "finance"):
        logged_in(role)
        for path in (supporter_path, "/staff/admin/tokens", "/staff/admin/audit"):
            assert client.get(path).status_code == 403, (role, path)
    logged_in("admin")
    for path in (supporter_path, "/staff/admin/tokens", "/staff/admin/audit"):
        assert client.get(path).status_code == 200, path


def test_a_fundraiser_cannot_create_a_token_even_with_a_valid_csrf(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    csrf = logged_in("fundraiser")
    answer = client.post(
        "/staff/admin/tokens", data={"csrf_token": csrf, "email": "fundraiser@example.org", "name": "x", "days": "30"}
    )
    assert answer.status_code == 403
    with runtime.read_session() as session:
        assert session.exec(select(ApiToken)).first() is None


def test_token_is_shown_once_works_and_can_be_revoked(client: TestClient, runtime: Runtime, logged_in) -> None:
    csrf = logged_in("admin")
    created = client.post(
        "/staff/admin/tokens",
        data={"csrf_token": csrf, "email": "finance@example.org", "name": "accounts export", "days": "30"},
    )
    assert created.status_code == 200
    token = re.search(r'<code id="new-token">(gvg_[^<]+)</code>', created.text).group(1)
    with runtime.read_session() as session:
        assert principal_from_token(session, token) is not None
        token_id = session.exec(select(ApiToken)).one().id
    listing = client.get("/staff/admin/tokens")
    assert token not in listing.text and "accounts export" in listing.text
    assert client.get("/api/payouts", headers={"authorization": f"Bearer {token}"}).status_code == 200
    client.post(f"/staff/admin/tokens/{token_id}/revoke", data={"csrf_token": csrf})
    with runtime.read_session() as session:
        assert principal_from_token(session, token) is None
    assert client.get("/api/payouts", headers={"authorization": f"Bearer {token}"}).status_code == 401


def test_admin_adds_a_finance_user_who_gets_a_reset_link_and_totp(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    csrf = logged_in("admin")
    answer = client.post("/staff/admin/users", data={"csrf_token": csrf, "email": "New@Example.org", "role": "finance"})
    assert answer.status_code == 200
    assert "otpauth://totp/" in answer.text
    with runtime.read_session() as session:
        user = session.exec(select(StaffUser).where(StaffUser.email == "new@example.org")).one()
        assert user.role == "finance" and user.totp_secret
        from core.models import Job

        assert session.exec(select(Job).where(Job.actor_name == "core.send_password_reset")).first() is not None
    again = client.post("/staff/admin/users", data={"csrf_token": csrf, "email": "new@example.org", "role": "finance"})
    assert again.status_code == 400


def test_changing_a_role_ends_the_users_sessions(
    client: TestClient, runtime: Runtime, staff_accounts: dict[str, StaffAccount], logged_in
) -> None:
    from tests.staff.conftest import log_in

    other = TestClient(client.app)
    log_in(other, staff_accounts["fundraiser"])
    assert other.get("/staff/").status_code == 200
    csrf = logged_in("admin")
    with runtime.read_session() as session:
        fundraiser_id = session.exec(select(StaffUser).where(StaffUser.email == "fundraiser@example.org")).one().id
    client.post(f"/staff/admin/users/{fundraiser_id}", data={"csrf_token": csrf, "action": "role", "role": "finance"})
    assert other.get("/staff/", follow_redirects=False).status_code == 303
    with runtime.read_session() as session:
        assert session.get(StaffUser, fundraiser_id).role == "finance"


def test_audit_log_lists_views_of_a_supporter(client: TestClient, runtime: Runtime, logged_in) -> None:
    supporter_id = add_supporter(runtime)
    logged_in("fundraiser")
    client.get(f"/staff/supporters/{supporter_id}")
    logged_in("admin")
    page = client.get("/staff/admin/audit", params={"object_id": str(supporter_id)})
    assert page.status_code == 200
    assert "fundraiser@example.org" in page.text and "view" in page.text


def test_merge_preview_then_merge(client: TestClient, runtime: Runtime, logged_in) -> None:
    keep = add_supporter(runtime, history=2)
    duplicate = add_supporter(runtime, "Ann", "Smith", "a.smith@example.net", history=0)
    csrf = logged_in("fundraiser")
    preview = client.get(f"/staff/supporters/{keep}/merge", params={"other": "a.smith@example.net"})
    assert preview.status_code == 200
    assert "What moves" in preview.text and "consents" in preview.text
    with runtime.read_session() as session:
        assert session.get(Supporter, duplicate).merged_into_id is None  # a preview changes nothing
    done = client.post(f"/staff/supporters/{keep}/merge", data={"csrf_token": csrf, "other": str(duplicate)})
    assert done.status_code == 200 and "Merged" in done.text
    with runtime.read_session() as session:
        assert session.get(Supporter, duplicate).merged_into_id == keep
    # The old id leads to the survivor.
    moved = client.get(f"/staff/supporters/{duplicate}", follow_redirects=False)
    assert moved.status_code == 303 and moved.headers["location"] == f"/staff/supporters/{keep}"


def test_finance_cannot_merge(client: TestClient, runtime: Runtime, logged_in) -> None:
    keep = add_supporter(runtime)
    duplicate = add_supporter(runtime, "Ann", "Smith", "a.smith@example.net")
    csrf = logged_in("finance")
    assert (
        client.post(f"/staff/supporters/{keep}/merge", data={"csrf_token": csrf, "other": str(duplicate)}).status_code
        == 403
    )


def test_subject_access_export_is_one_json_file_and_audited(client: TestClient, runtime: Runtime, logged_in) -> None:
    supporter_id = add_supporter(runtime, history=3, declaration=True)
    csrf = logged_in("fundraiser")
    assert client.post(f"/staff/supporters/{supporter_id}/export", data={"csrf_token": csrf}).status_code == 403
    csrf = logged_in("admin")
    answer = client.post(f"/staff/supporters/{supporter_id}/export", data={"csrf_token": csrf})
    assert answer.status_code == 200
    assert answer.headers["content-disposition"].startswith("attachment;")
    document = json.loads(answer.content)
    tables = document["tables"]
    assert tables["supporters"][0]["email"] == "ann.smith@example.org"
    assert {"supporter_addresses", "consents", "declarations", "history"} <= set(tables)
    assert len(tables["history"]) == 3 + 2  # 3 items, the consent and the declaration
    with runtime.read_session() as session:
        assert session.exec(
            select(AuditEntry).where(AuditEntry.action == "export", AuditEntry.object_id == str(supporter_id))
        ).first()


def test_erasure_without_claimed_gifts_removes_everything_personal(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    supporter_id = add_supporter(runtime, history=2, declaration=True)
    csrf = logged_in("admin")
    assert "everything goes now" in client.get(f"/staff/supporters/{supporter_id}/erase").text
    refused = client.post(f"/staff/supporters/{supporter_id}/erase", data={"csrf_token": csrf, "confirm": "no"})
    assert refused.status_code == 400
    client.post(f"/staff/supporters/{supporter_id}/erase", data={"csrf_token": csrf, "confirm": "ERASE"})
    with runtime.read_session() as session:
        supporter = session.get(Supporter, supporter_id)
        assert supporter.erased_at is not None and supporter.purge_after is None
        assert supporter.email is None and supporter.first_name == "Erased"
        address = session.exec(select(SupporterAddress)).one()
        assert address.line1 == "" and address.postcode == ""
        declaration = session.exec(select(Declaration)).one()
        assert declaration.first_name == "Erased" and declaration.postcode == ""
        summaries = [h.summary for h in session.exec(select(HistoryEntry)).all()]
        assert summaries and not any("Item" in s for s in summaries)
    export = privacy.export_supporter
    with runtime.read_session() as session:
        dumped = json.dumps(export(session, supporter_id))
    assert "ann.smith" not in dumped.lower() and "Dock Road" not in dumped and "CT16" not in dumped


def test_prune_webhook_bodies_keeps_recent_ones_and_those_still_to_process(runtime: Runtime) -> None:
    from webhooks.models import EventStatus, InboundEvent

    now = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    with runtime.unit_of_work() as uow:
        for days, external, status in (
            (100, "evt_old", EventStatus.PROCESSED),
            (100, "evt_old_ignored", EventStatus.IGNORED),
            (100, "evt_old_waiting", EventStatus.WAITING),
            (10, "evt_new", EventStatus.PROCESSED),
        ):
            uow.session.add(
                InboundEvent(
                    provider="stripe",
                    external_id=external,
                    event_type="charge.succeeded",
                    body='{"x": 1}',
                    status=status,
                    received_at=now - dt.timedelta(days=days),
                )
            )
    with runtime.unit_of_work() as uow:
        assert privacy.prune_webhook_bodies(uow, keep_days=90, now=now) == 2
    with runtime.read_session() as session:
        bodies = {e.external_id: e.body for e in session.exec(select(InboundEvent)).all()}
    assert bodies == {"evt_old": None, "evt_old_ignored": None, "evt_old_waiting": '{"x": 1}', "evt_new": '{"x": 1}'}


def test_privacy_jobs_are_registered_as_periodic() -> None:
    from core import jobs
    from giving import privacy_tasks  # noqa: F401

    assert "privacy.prune_webhook_bodies" in jobs.PERIODIC and "privacy.purge_erased" in jobs.PERIODIC
    assert uuid  # keep the import for ids in other tests


def test_the_erase_page_tells_the_date_the_erasure_keeps_hmrcs_records_until(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    """A gift of 1 May 2021 (tax year to 5 April 2022) claimed: the page must say what the erasure does, keeping it
    until 5 April 2028 (six years after the end of that period), not six years after the gift (1 May 2027)."""
    from giftaid import service as giftaid_service
    from tests.giftaid.factories import donor, make_gift

    ada = donor(runtime, made_on=dt.date(2024, 1, 10))
    make_gift(runtime, ada, received_on=dt.date(2021, 5, 1))
    claim_day = dt.date(2025, 2, 1)
    with runtime.unit_of_work() as uow:
        giftaid_service.build_claim(uow, runtime.settings, through=claim_day, actor="test", today=claim_day)
    csrf = logged_in("admin")
    page = client.get(f"/staff/supporters/{ada}/erase")
    assert page.status_code == 200
    assert "are kept until 05/04/2028" in page.text
    client.post(f"/staff/supporters/{ada}/erase", data={"csrf_token": csrf, "confirm": "ERASE"})
    with runtime.read_session() as session:
        assert session.get(Supporter, ada).purge_after == dt.date(2028, 4, 5)
