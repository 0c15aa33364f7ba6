"""One longest password, `core.auth.MAX_PASSWORD_LENGTH`: setting a longer one is refused with a clear error
(`giving users add`, a reset link, `set_password`), and a login with a longer one is refused, never cut to fit."""

from __future__ import annotations

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from core import auth
from core.errors import ValidationFailed
from core.models import StaffUser
from core.runtime import Runtime
from tests.core.test_auth import cli, giving
from tests.core.test_s13l_reset_link_race import cheap_password_hashing

__all__ = ["cheap_password_hashing", "cli"]  # fixtures, used by name

LONGEST = "p" * auth.MAX_PASSWORD_LENGTH
LIMIT_WORDS = f"at most {auth.MAX_PASSWORD_LENGTH:,} characters"


def test_users_add_refuses_a_password_over_the_limit(runtime: Runtime, cli: CliRunner) -> None:
    refused = giving(cli, "users", "add", "a@example.org", "--role", "fundraiser", stdin=LONGEST + "p\n")
    assert refused.exit_code == 1 and LIMIT_WORDS in refused.output
    with runtime.read_session() as session:
        assert session.exec(select(StaffUser)).all() == []
    taken = giving(cli, "users", "add", "a@example.org", "--role", "fundraiser", stdin=LONGEST + "\n")
    assert taken.exit_code == 0, taken.output


def test_set_password_and_login_keep_to_the_one_limit(runtime: Runtime) -> None:
    with runtime.unit_of_work() as uow:
        user_id = auth.add_staff_user(uow, "a@example.org", "fundraiser", LONGEST, issuer="Test").user_id
    with pytest.raises(ValidationFailed, match=LIMIT_WORDS), runtime.unit_of_work() as uow:
        auth.set_password(uow, user_id, LONGEST + "p")
    with runtime.unit_of_work() as uow:
        too_long = auth.login(uow, "a@example.org", LONGEST + "p")
    assert not too_long.ok and not too_long.rate_limited
    assert too_long.error is not None and LIMIT_WORDS in too_long.error
    with runtime.unit_of_work() as uow:
        assert auth.login(uow, "a@example.org", LONGEST).ok
