"""Deactivating a staff user ends every way in at once: sessions, tokens, and a reset link already in their
inbox (which could otherwise still set a password, one that works the day the account is reactivated)."""

from __future__ import annotations

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core import auth, signing
from core.errors import ValidationFailed
from core.models import AuditEntry, StaffUser
from core.runtime import Runtime
from tests.core.test_auth import add_user
from tests.core.test_security_login import cheap_password_hashing, emailed_reset_tokens, run_jobs, settings
from tests.crm.helpers import PASSWORD
from tests.staff.conftest import csrf_of

__all__ = ["cheap_password_hashing", "settings"]  # fixtures, used by name


def deactivate(runtime: Runtime, email: str) -> None:
    """What `giving users deactivate` does."""
    with runtime.unit_of_work() as uow:
        user = auth.user_by_email(uow.session, email)
        assert user is not None
        auth.deactivate_staff_user(uow, user)


def reactivate(runtime: Runtime, email: str) -> None:
    with runtime.unit_of_work() as uow:
        user = auth.user_by_email(uow.session, email)
        assert user is not None
        user.active = True
        uow.session.add(user)


def test_a_reset_link_sent_before_deactivation_no_longer_sets_a_password(
    runtime: Runtime,
    smtp_server,  # type: ignore[no-untyped-def]
) -> None:
    mailbox, _ = smtp_server
    add_user(runtime, "leaver@example.org", "fundraiser")
    with runtime.unit_of_work() as uow:
        assert auth.request_password_reset(uow, "leaver@example.org")
    run_jobs(runtime)
    [token] = emailed_reset_tokens(mailbox, "leaver@example.org")
    deactivate(runtime, "leaver@example.org")
    with runtime.unit_of_work() as uow:
        secret = signing.signing_secret(uow.session, "")
    with pytest.raises(ValidationFailed), runtime.unit_of_work() as uow:
        auth.reset_password(uow, token, "the leaver's own passphrase", secret=secret)
    # Reactivated later (a return, a mistake): the password is still the one the charity knew of, not the leaver's.
    reactivate(runtime, "leaver@example.org")
    with runtime.unit_of_work() as uow:
        assert not auth.login(uow, "leaver@example.org", "the leaver's own passphrase").ok
    with runtime.unit_of_work() as uow:
        assert auth.login(uow, "leaver@example.org", PASSWORD).ok
    with runtime.read_session() as session:
        assert session.exec(select(AuditEntry).where(AuditEntry.action == "password_reset")).first() is None


def test_the_reset_page_answers_a_deactivated_users_link_with_the_form_error(
    runtime: Runtime,
    client: TestClient,
    smtp_server,  # type: ignore[no-untyped-def]
) -> None:
    mailbox, _ = smtp_server
    add_user(runtime, "leaver@example.org", "fundraiser")
    with runtime.unit_of_work() as uow:
        assert auth.request_password_reset(uow, "leaver@example.org")
    run_jobs(runtime)
    [token] = emailed_reset_tokens(mailbox, "leaver@example.org")
    deactivate(runtime, "leaver@example.org")
    with runtime.read_session() as session:
        before = session.exec(select(StaffUser)).one().password_hash
    form = client.get("/staff/reset-password", params={"token": token})
    answer = client.post(
        "/staff/reset-password",
        data={
            "csrf_token": csrf_of(form.text),
            "token": token,
            "password": "the leaver's own passphrase",
            "password_again": "the leaver's own passphrase",
        },
        follow_redirects=False,
    )
    assert answer.status_code == 400, answer.text
    with runtime.read_session() as session:
        assert session.exec(select(StaffUser)).one().password_hash == before
