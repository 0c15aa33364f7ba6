"""`giving users deactivate` revokes the user's API tokens, as the admin page's deactivate does. It used to end only
the sessions: the tokens stayed live, refused only while the account was inactive, so reactivating the account (a
return, a mistake undone) brought back every token the leaver had kept."""

from __future__ import annotations

from sqlmodel import select
from starlette.testclient import TestClient
from typer.testing import CliRunner

from core import auth
from core.models import ApiToken, AuditEntry
from core.runtime import Runtime
from tests.core.test_auth import cli, giving
from tests.crm.helpers import make_supporter, staff_token

__all__ = ["cli"]  # a fixture, used by name


def test_deactivating_from_the_command_line_revokes_every_token(
    runtime: Runtime, cli: CliRunner, client: TestClient
) -> None:
    supporter_id = make_supporter(runtime)
    leaver = staff_token(runtime, "fundraiser", email="leaver@example.org")
    stayer = staff_token(runtime, "fundraiser", email="stayer@example.org")
    assert client.get(f"/api/supporters/{supporter_id}", headers=leaver).status_code == 200

    result = giving(cli, "users", "deactivate", "leaver@example.org")
    assert result.exit_code == 0, result.output
    assert client.get(f"/api/supporters/{supporter_id}", headers=leaver).status_code == 401
    with runtime.read_session() as session:
        leaver_id = auth.user_by_email(session, "leaver@example.org").id  # type: ignore[union-attr]
        revoked = {t.user_id for t in session.exec(select(ApiToken)).all() if t.revoked_at is not None}
        assert revoked == {leaver_id}
        assert session.exec(select(AuditEntry).where(AuditEntry.action == "api_tokens_revoked")).one().detail == {
            "count": 1
        }

    # Reactivated later: the leaver's old token stays dead; another user's was never touched.
    with runtime.unit_of_work() as uow:
        user = auth.user_by_email(uow.session, "leaver@example.org")
        assert user is not None
        user.active = True
        uow.session.add(user)
    assert client.get(f"/api/supporters/{supporter_id}", headers=leaver).status_code == 401
    assert client.get(f"/api/supporters/{supporter_id}", headers=stayer).status_code == 200
