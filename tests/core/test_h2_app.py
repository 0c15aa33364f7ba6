"""The web app renders every error as `{"error", "detail"}` with its status, wherever it is raised."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dramatiq.brokers.stub import StubBroker
from starlette.requests import Request
from starlette.responses import Response
from starlette.testclient import TestClient

from core.runtime import Runtime, build_runtime, set_runtime
from giving.app import create_app
from tests.fixtures.app import make_settings
from tests.fixtures.services import need


@pytest.fixture
def runtime_without_database(tmp_path: Path) -> Iterator[Runtime]:
    """A runtime whose PostgreSQL is down (nothing listens on port 1)."""
    need("PostgreSQL", "127.0.0.1", 5432)  # the driver and the machine's set-up are there
    from giving.worker import import_tasks

    import_tasks()
    settings = make_settings("postgresql+psycopg://giving@127.0.0.1:1/giving", tmp_path)
    rt = build_runtime(settings, broker=StubBroker(fail_fast_default=False))
    try:
        yield rt
    finally:
        rt.broker.close()
        rt.engine.dispose()
        set_runtime(None)


def test_a_lost_database_met_in_a_middleware_is_a_503_with_the_error_body(
    runtime_without_database: Runtime,
) -> None:
    """The API's credentials are checked by a middleware, before routing: a database lost there must be answered
    like one lost in an endpoint (503, Retry-After, the contract's body), not a bare text 500 from Starlette."""
    app = create_app(runtime=runtime_without_database, start_inline_worker=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/api/supporters?q=x", headers={"Authorization": "Bearer giv_some_token"})
        assert response.status_code == 503
        assert response.json()["error"] == "ServiceUnavailable"
        assert response.headers["retry-after"] == "5"
        assert response.headers["x-content-type-options"] == "nosniff"  # answered inside the security headers
        client.cookies.set("giving_session", "a-session")
        staff = client.get("/staff/", headers={"Accept": "text/html"})
        assert staff.status_code == 503


async def _broken(request: Request) -> Response:
    raise KeyError("a bug")


def test_an_unexpected_error_is_a_500_with_the_error_body(runtime: Runtime) -> None:
    """A bug is still answered in the contract's shape (`{"error": "<Code>", "detail": "<words>"}`), saying nothing
    of its insides."""
    app = create_app(runtime=runtime, start_inline_worker=False)
    app.add_route("/h2-broken", _broken)  # an endpoint with a bug
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/healthz")
        assert response.status_code == 200
        broken = client.get("/h2-broken")
        assert broken.status_code == 500
        assert broken.json() == {"error": "InternalServerError", "detail": "an unexpected error; it has been logged"}
        assert "a bug" not in broken.text
        assert broken.headers["x-content-type-options"] == "nosniff"
