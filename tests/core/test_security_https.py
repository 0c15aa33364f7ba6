"""A site served over HTTPS (`[web] base_url = "https://..."`): browsers are told to keep to HTTPS (HSTS), and every
cookie the staff pages set is `Secure`, the pre-login CSRF cookie too, not only the session cookie."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from core.runtime import Runtime
from core.settings import Settings
from tests.fixtures.app import make_settings


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # secure_cookies left at its default (false): an https base_url alone means HTTPS.
    return make_settings(database_url, tmp_path, web={"base_url": "https://giving.example.org"})


@pytest.fixture
def https_client(runtime: Runtime) -> Iterator[TestClient]:
    from giving.app import create_app

    with TestClient(create_app(runtime=runtime, start_inline_worker=False), base_url="https://testserver") as client:
        yield client


def set_cookies(response, name: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [v for k, v in response.headers.multi_items() if k == "set-cookie" and v.startswith(f"{name}=")]


def test_an_https_site_sends_hsts(https_client: TestClient) -> None:
    for path in ("/staff/login", "/donate", "/healthz"):
        response = https_client.get(path)
        assert response.status_code == 200, path
        assert response.headers.get("strict-transport-security", "").startswith("max-age="), path
        max_age = int(response.headers["strict-transport-security"].split("=")[1].split(";")[0])
        assert max_age >= 180 * 24 * 3600


def test_a_plain_http_site_sends_no_hsts(runtime: Runtime) -> None:
    """An http:// base_url (a laptop, the demo): HSTS over plain HTTP means nothing, and no cookie is Secure."""
    from giving.app import create_app

    web = runtime.settings.web.model_copy(update={"base_url": "http://127.0.0.1:8000"})
    plain = runtime.settings.model_copy(update={"web": web})
    with TestClient(create_app(plain, runtime=runtime, start_inline_worker=False)) as client:
        response = client.get("/staff/login")
    assert "strict-transport-security" not in response.headers
    [cookie] = set_cookies(response, "giving_csrf")
    assert "Secure" not in cookie


def test_the_pre_login_csrf_cookie_is_secure_on_an_https_site(https_client: TestClient) -> None:
    """Without `Secure`, a network attacker could set the victim's giving_csrf over plain HTTP and so forge a login
    form (login CSRF); the session cookie already was Secure, the CSRF cookie was not."""
    response = https_client.get("/staff/login")
    [cookie] = set_cookies(response, "giving_csrf")
    assert "Secure" in cookie and "HttpOnly" in cookie
    # A stale session cookie is cleared with the same attributes.
    https_client.cookies.set("giving_session", "not-a-session")
    cleared = https_client.get("/staff/login")
    [clear] = set_cookies(cleared, "giving_session")
    assert "Max-Age=0" in clear and "Secure" in clear
