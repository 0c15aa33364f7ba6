"""The receipts API checks its caller before its input, even where no middleware answered for it first; and
`giving receipts list --kind` refuses an unknown kind as a usage error naming the kinds."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient
from typer.testing import CliRunner

from core.errors import AppError
from core.http import app_error_handler
from core.runtime import Runtime
from receipts import routes
from receipts.models import DocumentKind
from tests.crm.helpers import staff_token


@pytest.fixture
def bare_client(runtime: Runtime) -> Iterator[TestClient]:
    """The receipts routes alone, without `ApiCredentialsMiddleware`: what the handlers themselves answer."""
    app = Starlette(routes=routes.routes, exception_handlers={AppError: app_error_handler})
    app.state.runtime = runtime
    with TestClient(app) as client:
        yield client


BAD_INPUT = [
    ("GET", "/api/receipts/documents", None),  # its required supporter_id missing
    ("GET", "/api/receipts/documents?supporter_id=nope", None),
    ("GET", "/api/receipts/documents/not-an-id", None),
    ("GET", "/api/receipts/documents/not-an-id/pdf", None),
    ("POST", "/api/receipts/documents/not-an-id/resend", None),
    ("POST", f"/api/receipts/documents/{uuid.UUID(int=7)}/resend", b"not json"),
    ("POST", f"/api/receipts/documents/{uuid.UUID(int=7)}/resend", b"[1]"),
]


@pytest.mark.parametrize(("method", "path", "body"), BAD_INPUT)
def test_an_anonymous_call_is_401_whatever_its_input(
    bare_client: TestClient, method: str, path: str, body: bytes | None
) -> None:
    answer = bare_client.request(method, path, content=body)
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"] == "Unauthorized"


def test_staff_still_get_400_for_the_same_input(runtime: Runtime, bare_client: TestClient) -> None:
    headers = staff_token(runtime, "fundraiser")
    for method, path, body in BAD_INPUT:
        answer = bare_client.request(method, path, content=body, headers=headers)
        assert answer.status_code == 400, (path, answer.text)


def test_list_with_an_unknown_kind_is_a_usage_error_naming_the_kinds() -> None:
    from giving.cli import app

    result = CliRunner().invoke(app, ["receipts", "list", "--kind", "nope"])
    assert result.exit_code == 1, result.output  # a usage error: 1 (contract.md), not click's 2
    assert not isinstance(result.exception, ValueError)
    assert "nope" in result.output and "--kind" in result.output
    for kind in DocumentKind:
        assert kind.value in result.output
