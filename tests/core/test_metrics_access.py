"""Who may read `GET /metrics` (docs/operations.md §5): it used to answer anyone who could reach the web process, so
the public listener served every counter and gauge (backlogs, claims, deliveries refused by reason). Now: with
`[web] metrics_token` set, whoever sends it as a bearer token (401 otherwise); unset, only a request made on this
machine (a loopback client, not relayed by a proxy), and 404 for anyone else, as for a path that does not exist."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from core.settings import SettingsError, load_settings
from tests.fixtures.app import make_settings

TOKEN = "m" * 20 + "-metrics-token-for-tests"
LOOPBACK = ("127.0.0.1", 50000)
OUTSIDE = ("203.0.113.5", 50000)


@pytest.fixture
def make_app(sqlite_url: str, tmp_path: Path) -> Iterator[object]:
    """`make_app(metrics_token)`: the whole web application (no worker) with that setting."""
    from giving.app import create_app

    def make(metrics_token: str = "") -> Starlette:
        settings = make_settings(sqlite_url, tmp_path, web={"metrics_token": metrics_token})
        return create_app(settings, start_inline_worker=False)

    yield make


def scrape(app: Starlette, client: tuple[str, int], headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    with TestClient(app, client=client) as web:
        return web.get("/metrics", headers=headers or {})


def test_without_a_token_only_this_machine_gets_the_metrics(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app()
    for here in (LOOPBACK, ("127.0.0.2", 50000), ("::1", 50000), ("::ffff:127.0.0.1", 50000)):
        response = scrape(app, here)
        assert response.status_code == 200, here
        assert "giving_database_up 1.0" in response.text.splitlines()
    with TestClient(app, client=OUTSIDE) as web:
        unknown = web.get("/no-such-path")
    for elsewhere in (OUTSIDE, ("10.0.0.7", 50000), ("testclient", 50000)):
        refused = scrape(app, elsewhere)
        # The same answer as a path that does not exist: nothing says there are metrics here.
        assert (
            (refused.status_code, refused.json())
            == (404, unknown.json())
            == (404, {"error": "NotFound", "detail": "Not Found"})
        )
        assert "giving_" not in refused.text
    # Proxied to this machine (a reverse proxy on the same host): its last hop is loopback, the client is not.
    for header in ({"X-Forwarded-For": "203.0.113.5"}, {"Forwarded": "for=203.0.113.5"}, {"X-Real-IP": "203.0.113.5"}):
        assert scrape(app, LOOPBACK, header).status_code == 404, header


def test_with_a_token_every_scrape_must_send_it(make_app) -> None:  # type: ignore[no-untyped-def]
    app = make_app(TOKEN)
    for where in (OUTSIDE, LOOPBACK):
        for headers in ({}, {"Authorization": "Bearer not-the-token"}, {"Authorization": f"Basic {TOKEN}"}):
            refused = scrape(app, where, headers)
            assert refused.status_code == 401, (where, headers)
            assert refused.json()["error"] == "Unauthorized"
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "giving_" not in refused.text
        allowed = scrape(app, where, {"Authorization": f"Bearer {TOKEN}"})
        assert allowed.status_code == 200
        assert allowed.headers["content-type"].startswith("text/plain")
        assert "giving_database_up 1.0" in allowed.text.splitlines()


def test_the_token_is_a_secret_of_some_length(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingsError, match="metrics_token"):
        load_settings(env="test", web={"metrics_token": "short"})
    settings_file = tmp_path / "leaky.toml"
    settings_file.write_text(f"[web]\nmetrics_token = '{TOKEN}'\n")
    monkeypatch.setenv("GIVING_SETTINGS", str(settings_file))
    with pytest.raises(SettingsError, match=r"\[web\] metrics_token is a secret"):
        load_settings(env="test")
    monkeypatch.delenv("GIVING_SETTINGS")
    monkeypatch.setenv("GIVING_WEB__METRICS_TOKEN", TOKEN)
    assert load_settings(env="test").web.metrics_token.get_secret_value() == TOKEN
