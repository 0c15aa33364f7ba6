"""One longest password, `core.auth.MAX_PASSWORD_LENGTH`, for setting a password and for logging in. The login form
used to cut what it was given to 1,000 characters while a reset link set a password of any length: such a user
could never log in again, and a login with anything after the first 1,000 characters of a password was let in."""

from __future__ import annotations

from sqlmodel import select
from starlette.testclient import TestClient

from core import auth
from core.models import StaffUser
from core.runtime import Runtime
from tests.core.test_s13l_reset_link_race import emailed_link_token
from tests.staff.conftest import PASSWORD, StaffAccount, csrf_of

LONGEST = "correct horse " * (auth.MAX_PASSWORD_LENGTH // 14) + "x" * (auth.MAX_PASSWORD_LENGTH % 14)
TOO_LONG = LONGEST + "!"
LIMIT_WORDS = f"at most {auth.MAX_PASSWORD_LENGTH:,} characters"


def log_in(client: TestClient, email: str, password: str):  # type: ignore[no-untyped-def]
    page = client.get("/staff/login")
    return client.post(
        "/staff/login",
        data={"csrf_token": csrf_of(page.text), "email": email, "password": password, "next": "/staff/"},
        follow_redirects=False,
    )


def set_new_password(client: TestClient, token: str, password: str):  # type: ignore[no-untyped-def]
    form = client.get("/staff/reset-password", params={"token": token})
    return client.post(
        "/staff/reset-password",
        data={"csrf_token": csrf_of(form.text), "token": token, "password": password, "password_again": password},
        follow_redirects=False,
    )


def password_hash(runtime: Runtime, email: str) -> str:
    with runtime.read_session() as session:
        return session.exec(select(StaffUser).where(StaffUser.email == email)).one().password_hash


def test_a_reset_to_a_password_over_the_limit_is_refused_and_the_link_still_works(
    runtime: Runtime, client: TestClient, staff_accounts: dict[str, StaffAccount]
) -> None:
    assert len(LONGEST) == auth.MAX_PASSWORD_LENGTH
    email = staff_accounts["fundraiser"].email
    token, _ = emailed_link_token(runtime, email)
    before = password_hash(runtime, email)

    refused = set_new_password(client, token, TOO_LONG)
    assert refused.status_code == 400, refused.text
    assert LIMIT_WORDS in refused.text
    assert password_hash(runtime, email) == before

    # The link was not used up by the refusal; the longest password is taken, and logs in whole.
    assert set_new_password(client, token, LONGEST).status_code == 303
    assert log_in(client, email, LONGEST).status_code == 303


def test_a_login_with_a_password_over_the_limit_is_refused_not_cut(
    runtime: Runtime, client: TestClient, staff_accounts: dict[str, StaffAccount]
) -> None:
    with runtime.unit_of_work() as uow:
        auth.add_staff_user(uow, "long@example.org", "fundraiser", LONGEST, issuer="Giving tests")
    # What the form used to log in: the first 1,000 characters of what was typed.
    refused = log_in(client, "long@example.org", TOO_LONG)
    assert refused.status_code == 400, refused.text
    assert LIMIT_WORDS in refused.text
    assert "giving_session" not in refused.headers.get("set-cookie", "")
    assert log_in(client, "long@example.org", LONGEST).status_code == 303
    assert log_in(client, staff_accounts["fundraiser"].email, PASSWORD).status_code == 303
