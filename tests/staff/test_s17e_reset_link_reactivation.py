"""Deactivating a staff user ends a reset link already emailed to them (docs/staff-access.md, "Password reset"). It
was only refused while the account stayed inactive: the link was not used up, so when an admin reactivated the account
within the hour (a mistaken click, or the owner back after the mailbox was secured) the link set a password again,
whoever had asked for it."""

from __future__ import annotations

from sqlmodel import select
from starlette.testclient import TestClient

from core import auth
from core.models import StaffUser
from core.runtime import Runtime
from tests.core.test_security_login import emailed_reset_tokens, run_jobs, settings
from tests.staff.conftest import StaffAccount, csrf_of, log_in

__all__ = ["settings"]  # a fixture (email through the test SMTP server), used by name

ATTACKERS_PASSWORD = "a password the owner never chose"


def change_user(client: TestClient, csrf: str, user_id: str, action: str) -> None:
    answer = client.post(
        f"/staff/admin/users/{user_id}", data={"csrf_token": csrf, "action": action}, follow_redirects=False
    )
    assert answer.status_code == 303, answer.text


def test_a_reset_link_sent_before_deactivation_stays_dead_after_reactivation(
    runtime: Runtime,
    client: TestClient,
    staff_accounts: dict[str, StaffAccount],
    smtp_server,  # type: ignore[no-untyped-def]
) -> None:
    mailbox, _ = smtp_server
    account = staff_accounts["fundraiser"]
    with runtime.read_session() as session:
        user = session.exec(select(StaffUser).where(StaffUser.email == account.email)).one()
        user_id, password_hash = str(user.id), user.password_hash

    # Someone with the fundraiser's mailbox asks for a link through the forgotten-password form.
    asker = TestClient(client.app)
    form = asker.get("/staff/forgot-password")
    asked = asker.post("/staff/forgot-password", data={"csrf_token": csrf_of(form.text), "email": account.email})
    assert asked.status_code == 200, asked.text
    run_jobs(runtime)
    [token] = emailed_reset_tokens(mailbox, account.email)

    # The admin deactivates the account at once, and reactivates it once the owner has the mailbox back.
    admin_csrf = log_in(client, staff_accounts["admin"])
    change_user(client, admin_csrf, user_id, "deactivate")
    change_user(client, admin_csrf, user_id, "activate")

    page = asker.get("/staff/reset-password", params={"token": token})
    answer = asker.post(
        "/staff/reset-password",
        data={
            "csrf_token": csrf_of(page.text),
            "token": token,
            "password": ATTACKERS_PASSWORD,
            "password_again": ATTACKERS_PASSWORD,
        },
        follow_redirects=False,
    )
    assert answer.status_code == 400, answer.headers.get("location")
    assert "has been used or has expired" in answer.text
    with runtime.read_session() as session:
        assert session.exec(select(StaffUser).where(StaffUser.email == account.email)).one().password_hash == (
            password_hash
        )
    with runtime.unit_of_work() as uow:
        assert not auth.login(uow, account.email, ATTACKERS_PASSWORD).ok
    with runtime.unit_of_work() as uow:
        assert auth.login(uow, account.email, account.password).ok
