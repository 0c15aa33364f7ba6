"""One password-reset link used twice at the same moment sets one password, not two: "used" is one conditional
UPDATE (`... WHERE used_at IS NULL`), so the second use finds the link used. Before, both read the row unused and
both set a password, each believing its own was the one kept (PostgreSQL; SQLite queues writers anyway)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlmodel import select

from core import auth, signing
from core.db import UnitOfWork
from core.errors import ValidationFailed
from core.models import AuditEntry, PasswordReset
from core.runtime import Runtime
from tests.core.test_auth import add_user
from tests.crm.helpers import at_the_same_moment


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    import argon2

    monkeypatch.setattr(auth, "_hasher", argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


def emailed_link_token(runtime: Runtime, email: str) -> tuple[str, str]:
    """(the token of the link the email job would send, the signing secret), without sending it."""
    with runtime.unit_of_work() as uow:
        assert auth.request_password_reset(uow, email)
    with runtime.read_session() as session:
        reset_id = session.exec(select(PasswordReset)).one().token_hash
    with runtime.unit_of_work() as uow:
        secret = signing.signing_secret(uow.session, "")
        issued = auth.issue_password_reset_link(uow, reset_id, base_url="http://testserver", secret=secret)
    assert issued is not None
    return issued[1].split("token=", 1)[1], secret


def test_one_link_used_twice_at_the_same_moment_sets_one_password(runtime: Runtime) -> None:
    add_user(runtime, "jo@example.org", "fundraiser")
    token, secret = emailed_link_token(runtime, "jo@example.org")

    def use(password: str) -> Callable[[UnitOfWork], None]:
        def reset(uow: UnitOfWork) -> None:
            auth.reset_password(uow, token, password, secret=secret)

        return reset

    errors = at_the_same_moment(runtime, use("the first new passphrase"), use("the second new passphrase"))
    assert len(errors) == 1 and isinstance(errors[0], ValidationFailed), errors
    assert "used or has expired" in str(errors[0].detail)
    with runtime.unit_of_work() as uow:
        assert auth.login(uow, "jo@example.org", "the first new passphrase").ok
    with runtime.unit_of_work() as uow:
        assert not auth.login(uow, "jo@example.org", "the second new passphrase").ok
    with runtime.read_session() as session:
        assert len(session.exec(select(AuditEntry).where(AuditEntry.action == "password_reset")).all()) == 1
