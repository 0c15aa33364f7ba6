"""Staff access: API tokens (401/403), the users/tokens commands, login sessions with TOTP and CSRF, expiry,
logout, rate limits, password reset by email, and the signing secret."""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Iterator

import pyotp
import pytest
import time_machine
from sqlmodel import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from typer.testing import CliRunner

from core import auth, jobs, signing
from core.errors import AppError
from core.http import app_error_handler, client_address
from core.models import ApiToken, AppSecret, AuditEntry, StaffRole, StaffSession, StaffUser
from core.runtime import InlineWorker, Runtime, set_runtime
from core.settings import Settings, get_settings
from tests.crm.helpers import PASSWORD, make_supporter, staff_token
from tests.fixtures.app import make_settings

# --- bearer tokens on the JSON API ---------------------------------------------------------------------------


def test_api_without_or_with_a_bad_token_is_401(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer gvg_not-a-token"}, {"Authorization": "Basic abc"}):
        response = client.get("/api/supporters", params={"q": "ada"}, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"] == "Unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/supporters/not-a-uuid"),
        ("GET", "/api/giftaid/claims/not-a-uuid"),
        ("GET", "/api/orders/not-a-uuid"),
        ("GET", "/api/receipts/documents"),  # its required query parameter missing
        ("POST", "/api/declarations/not-a-uuid/cancel"),
        ("GET", "/api/no-such-endpoint"),
    ],
)
def test_an_anonymous_call_is_401_before_its_path_or_query_is_read(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path, content=b"not json")
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "Unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_path_or_method_no_route_serves_is_the_contracts_error_body(runtime: Runtime, client: TestClient) -> None:
    """Starlette's own 404 and 405 are rendered by the one error handler too: `{"error", "detail"}`, not plain text."""
    admin = staff_token(runtime, "admin")
    missing = client.get("/api/no-such-thing", headers=admin)
    assert (missing.status_code, missing.json()["error"]) == (404, "NotFound")
    wrong = client.delete("/api/supporters", headers=admin)
    assert (wrong.status_code, wrong.json()["error"]) == (405, "MethodNotAllowed")
    assert "GET" in wrong.headers["allow"]
    assert client.get("/webhooks/stripe").json()["error"] == "MethodNotAllowed"


def test_the_api_description_stays_open(client: TestClient) -> None:
    assert client.get("/api/openapi.json").status_code == 200


@pytest.mark.parametrize("role", ["fundraiser", "finance", "admin"])
def test_every_role_may_read_supporters(runtime: Runtime, client: TestClient, role: str) -> None:
    supporter_id = make_supporter(runtime)
    response = client.get(f"/api/supporters/{supporter_id}", headers=staff_token(runtime, role))
    assert response.status_code == 200
    assert response.json()["id"] == str(supporter_id)


def test_a_role_that_may_not_gets_403_and_nothing_changes(runtime: Runtime, client: TestClient) -> None:
    a = make_supporter(runtime, email="a@example.org")
    b = make_supporter(runtime, email="b@example.org", first_name="Bea")
    response = client.post(f"/api/supporters/{a}/merge", json={"into": str(b)}, headers=staff_token(runtime, "finance"))
    assert response.status_code == 403
    assert response.json() == {"error": "Forbidden", "detail": "the finance role may not do this"}
    with runtime.read_session() as session:
        from crm.models import Supporter

        assert session.get(Supporter, a).merged_into_id is None  # type: ignore[union-attr]


def test_expired_and_revoked_tokens_are_401(runtime: Runtime, client: TestClient) -> None:
    supporter_id = make_supporter(runtime)
    headers = staff_token(runtime, "fundraiser", email="f@example.org")
    assert client.get(f"/api/supporters/{supporter_id}", headers=headers).status_code == 200
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(days=2)):
        assert client.get(f"/api/supporters/{supporter_id}", headers=headers).status_code == 401
    with runtime.unit_of_work() as uow:
        assert auth.revoke_user_tokens(uow, "f@example.org") == 1
    assert client.get(f"/api/supporters/{supporter_id}", headers=headers).status_code == 401
    with runtime.read_session() as session:
        token = session.exec(select(ApiToken)).one()
        # Only the hash is kept.
        assert token.token_hash != headers["Authorization"].split()[1] and len(token.token_hash) == 64


def test_a_deactivated_user_is_401(runtime: Runtime, client: TestClient) -> None:
    supporter_id = make_supporter(runtime)
    headers = staff_token(runtime, "admin", email="gone@example.org")
    with runtime.unit_of_work() as uow:
        user = auth.user_by_email(uow.session, "gone@example.org")
        assert user is not None
        user.active = False
    assert client.get(f"/api/supporters/{supporter_id}", headers=headers).status_code == 401


# --- the users and tokens commands ---------------------------------------------------------------------------


@pytest.fixture
def cli(runtime: Runtime, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """The real `giving` command in-process, against the test database."""
    monkeypatch.setenv("GIVING_DATABASE__URL", settings.database.url)
    get_settings.cache_clear()
    try:
        yield CliRunner()
    finally:
        get_settings.cache_clear()
        # The command built its own runtime; the test's comes back.
        set_runtime(runtime)
        jobs.install_broker(runtime.broker)


def giving(runner: CliRunner, *args: str, stdin: str | None = None):  # type: ignore[no-untyped-def]
    from giving.cli import app

    return runner.invoke(app, list(args), input=stdin)


def test_users_add_prints_the_totp_uri_for_finance_and_admin_only(runtime: Runtime, cli: CliRunner) -> None:
    result = giving(cli, "users", "add", "Boss@Example.org", "--role", "admin", stdin=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    [uri] = result.stdout.splitlines()
    assert uri.startswith("otpauth://totp/") and "secret=" in uri
    result = giving(cli, "users", "add", "helper@example.org", "--role", "fundraiser", stdin=PASSWORD + "\n")
    assert result.exit_code == 0 and result.stdout == ""
    with runtime.read_session() as session:
        boss = session.exec(select(StaffUser).where(StaffUser.email == "boss@example.org")).one()
        assert boss.role == StaffRole.ADMIN and boss.totp_secret and boss.totp_secret in uri
        assert boss.password_hash.startswith("$argon2id$") and PASSWORD not in boss.password_hash
        helper = session.exec(select(StaffUser).where(StaffUser.email == "helper@example.org")).one()
        assert helper.totp_secret is None


def test_users_add_refuses_a_duplicate_a_bad_role_and_a_short_password(runtime: Runtime, cli: CliRunner) -> None:
    assert giving(cli, "users", "add", "a@example.org", "--role", "finance", stdin=PASSWORD).exit_code == 0
    duplicate = giving(cli, "users", "add", "A@example.org", "--role", "admin", stdin=PASSWORD)
    assert duplicate.exit_code == 1 and "already exists" in duplicate.output
    bad_role = giving(cli, "users", "add", "b@example.org", "--role", "boss", stdin=PASSWORD)
    assert bad_role.exit_code == 1 and "not a role" in bad_role.output
    short = giving(cli, "users", "add", "c@example.org", "--role", "admin", stdin="short\n")
    assert short.exit_code == 1 and "at least" in short.output
    bad_email = giving(cli, "users", "add", "not-an-email", "--role", "admin", stdin=PASSWORD)
    assert bad_email.exit_code == 1
    with runtime.read_session() as session:
        assert [u.email for u in session.exec(select(StaffUser)).all()] == ["a@example.org"]


def test_tokens_create_prints_exactly_the_token_and_it_works(
    runtime: Runtime, cli: CliRunner, client: TestClient
) -> None:
    giving(cli, "users", "add", "f@example.org", "--role", "fundraiser", stdin=PASSWORD)
    result = giving(cli, "tokens", "create", "f@example.org")
    assert result.exit_code == 0
    assert re.fullmatch(r"gvg_[A-Za-z0-9_-]{40,}\n", result.stdout)
    token = result.stdout.strip()
    supporter_id = make_supporter(runtime)
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get(f"/api/supporters/{supporter_id}", headers=headers).status_code == 200
    revoked = giving(cli, "tokens", "revoke", "--token", "-", stdin=token + "\n")
    assert revoked.exit_code == 0
    assert client.get(f"/api/supporters/{supporter_id}", headers=headers).status_code == 401


def test_a_token_for_a_missing_user_is_refused_and_nothing_is_written(runtime: Runtime, cli: CliRunner) -> None:
    result = giving(cli, "tokens", "create", "nobody@example.org")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "no active staff user nobody@example.org" in result.output
    with runtime.read_session() as session:
        assert session.exec(select(ApiToken)).all() == []


# --- login sessions, TOTP, CSRF ------------------------------------------------------------------------------


def session_app(runtime: Runtime, *, secure: bool = False) -> Starlette:
    """The smallest staff site on the mechanism: what the staff pages do with it."""

    async def form(request: Request) -> Response:
        return PlainTextResponse(auth.csrf_token(request))

    async def do_login(request: Request) -> Response:
        data = await request.form()
        auth.verify_csrf(request, data)
        with runtime.unit_of_work() as uow:
            result = auth.login(
                uow,
                str(data.get("email", "")),
                str(data.get("password", "")),
                str(data.get("totp", "")),
                client=client_address(request),
                device_token=auth.device_token_of(request),
                settings=runtime.settings.web,
            )
        if not result.ok:
            return PlainTextResponse(result.error, status_code=429 if result.rate_limited else 401)
        response = PlainTextResponse("welcome", status_code=200)
        auth.set_session_cookie(response, result, secure=secure)
        return response

    async def me(request: Request) -> Response:
        staff = getattr(request.state, "staff", None)
        if staff is None:
            return PlainTextResponse("log in", status_code=401)
        return JSONResponse({"email": staff.email, "role": staff.role.value, "csrf": auth.csrf_token(request)})

    async def do_logout(request: Request) -> Response:
        auth.verify_csrf(request, await request.form())
        token = auth.session_token_of(request)
        with runtime.unit_of_work() as uow:
            auth.logout(uow, token or "")
        response = PlainTextResponse("bye")
        auth.clear_session_cookie(response, secure=secure)
        return response

    app = Starlette(
        routes=[
            Route("/staff/form", form),
            Route("/staff/login", do_login, methods=["POST"]),
            Route("/staff/me", me),
            Route("/staff/logout", do_logout, methods=["POST"]),
        ],
        exception_handlers={AppError: app_error_handler},
    )
    from starlette.middleware import Middleware

    app.user_middleware.append(Middleware(auth.StaffSessionMiddleware, secure_cookies=secure))
    app.state.runtime = runtime
    return app


def add_user(runtime: Runtime, email: str, role: str) -> auth.NewStaffUser:
    with runtime.unit_of_work() as uow:
        return auth.add_staff_user(uow, email, role, PASSWORD, issuer="Test")


def log_in(web: TestClient, email: str, password: str = PASSWORD, totp: str = ""):  # type: ignore[no-untyped-def]
    csrf = web.get("/staff/form").text
    return web.post("/staff/login", data={"email": email, "password": password, "totp": totp, "csrf_token": csrf})


def test_fundraiser_logs_in_with_a_server_side_session_cookie(runtime: Runtime) -> None:
    add_user(runtime, "f@example.org", "fundraiser")
    with TestClient(session_app(runtime)) as web:
        assert web.get("/staff/me").status_code == 401
        response = log_in(web, "F@example.org")
        assert response.status_code == 200
        cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and "giving_session=" in v)
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
        me = web.get("/staff/me").json()
        assert me["email"] == "f@example.org" and me["role"] == "fundraiser"
        # A logged-in session has its own CSRF token, not the pre-login one.
        assert me["csrf"] != web.cookies.get("giving_csrf")
    with runtime.read_session() as session:
        stored = session.exec(select(StaffSession)).one()
        assert stored.id_hash != web.cookies.get("giving_session")
        assert session.exec(select(AuditEntry).where(AuditEntry.action == "login")).one().actor == "f@example.org"


def test_secure_cookies_setting_marks_cookies_secure(runtime: Runtime) -> None:
    add_user(runtime, "f@example.org", "fundraiser")
    with TestClient(session_app(runtime, secure=True), base_url="https://testserver") as web:
        response = log_in(web, "f@example.org")
        cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and "giving_session=" in v)
        assert "Secure" in cookie


def test_wrong_password_or_unknown_email_fails_the_same_way(runtime: Runtime) -> None:
    add_user(runtime, "f@example.org", "fundraiser")
    with TestClient(session_app(runtime)) as web:
        wrong = log_in(web, "f@example.org", password="not the password at all")
        unknown = log_in(web, "who@example.org")
        assert wrong.status_code == unknown.status_code == 401
        assert wrong.text == unknown.text
        assert web.get("/staff/me").status_code == 401


def test_finance_and_admin_need_a_totp_code(runtime: Runtime) -> None:
    created = add_user(runtime, "money@example.org", "finance")
    assert created.otpauth_uri is not None
    secret = pyotp.parse_uri(created.otpauth_uri).secret
    with TestClient(session_app(runtime)) as web:
        assert log_in(web, "money@example.org").status_code == 401
        assert (
            log_in(
                web, "money@example.org", totp="000000" if pyotp.TOTP(secret).now() != "000000" else "111111"
            ).status_code
            == 401
        )
        assert log_in(web, "money@example.org", totp=pyotp.TOTP(secret).now()).status_code == 200
        assert web.get("/staff/me").json()["role"] == "finance"


def test_a_totp_code_logs_in_once(runtime: Runtime) -> None:
    created = add_user(runtime, "money@example.org", "finance")
    assert created.otpauth_uri is not None
    totp = pyotp.TOTP(pyotp.parse_uri(created.otpauth_uri).secret)
    step = totp.timecode(dt.datetime.now(dt.UTC))
    with TestClient(session_app(runtime)) as web:
        assert log_in(web, "money@example.org", totp=totp.generate_otp(step)).status_code == 200
    with TestClient(session_app(runtime)) as web:
        # The same code again (someone who watched it typed), and an earlier one still inside the drift window.
        assert log_in(web, "money@example.org", totp=totp.generate_otp(step)).status_code == 401
        assert log_in(web, "money@example.org", totp=totp.generate_otp(step - 1)).status_code == 401
        assert log_in(web, "money@example.org", totp=totp.generate_otp(step + 1)).status_code == 200


def test_a_form_without_the_csrf_token_is_refused(runtime: Runtime) -> None:
    add_user(runtime, "f@example.org", "fundraiser")
    with TestClient(session_app(runtime)) as web:
        response = web.post("/staff/login", data={"email": "f@example.org", "password": PASSWORD})
        assert response.status_code == 403 and response.json()["error"] == "CsrfRejected"
        assert log_in(web, "f@example.org").status_code == 200
        # The pre-login token no longer works once logged in; the session's own does.
        stale = web.post("/staff/logout", data={"csrf_token": web.cookies.get("giving_csrf", "")})
        assert stale.status_code == 403
        assert web.get("/staff/me").status_code == 200


def test_logout_revokes_the_session_even_if_the_cookie_is_kept(runtime: Runtime) -> None:
    add_user(runtime, "f@example.org", "fundraiser")
    with TestClient(session_app(runtime)) as web:
        log_in(web, "f@example.org")
        kept = web.cookies.get("giving_session")
        csrf = web.get("/staff/me").json()["csrf"]
        assert web.post("/staff/logout", data={"csrf_token": csrf}).status_code == 200
        web.cookies.set("giving_session", kept or "")
        assert web.get("/staff/me").status_code == 401


def test_a_session_expires_after_session_hours(runtime: Runtime) -> None:
    add_user(runtime, "f@example.org", "fundraiser")
    hours = runtime.settings.web.session_hours
    with TestClient(session_app(runtime)) as web:
        log_in(web, "f@example.org")
        kept = web.cookies.get("giving_session")
        assert web.get("/staff/me").status_code == 200
        with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours, minutes=1)):
            # The server refuses it, even from a browser that keeps the cookie longer than asked.
            web.cookies.clear()
            response = web.get("/staff/me", headers={"cookie": f"giving_session={kept}"})
            assert response.status_code == 401
            assert any("giving_session=;" in v for k, v in response.headers.multi_items() if k == "set-cookie")


def test_login_attempts_are_rate_limited_even_with_the_right_password(runtime: Runtime) -> None:
    add_user(runtime, "f@example.org", "fundraiser")
    limit = runtime.settings.web.login_rate_per_minute
    # Start at the top of a minute so the whole run falls in one window.
    start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    with time_machine.travel(start, tick=False), TestClient(session_app(runtime)) as web:
        for _ in range(limit):
            assert log_in(web, "f@example.org", password="wrong password guess").status_code == 401
        refused = log_in(web, "f@example.org")
        assert refused.status_code == 429
        assert web.get("/staff/me").status_code == 401
    with time_machine.travel(start + dt.timedelta(minutes=1), tick=False), TestClient(session_app(runtime)) as web:
        assert log_in(web, "f@example.org").status_code == 200
    with runtime.read_session() as session:
        actions = [e.action for e in session.exec(select(AuditEntry)).all()]
        assert actions.count("login_failed") == limit and "login_rate_limited" in actions


# --- password reset by emailed, signed, single-use link ------------------------------------------------------


def test_password_reset_link_by_email(database_url: str, tmp_path, smtp_server) -> None:  # type: ignore[no-untyped-def]
    from dramatiq.brokers.stub import StubBroker

    from core.runtime import build_runtime
    from giving.worker import import_tasks
    from tests.fixtures.db import empty_tables

    mailbox, port = smtp_server
    import_tasks()
    rt = build_runtime(make_settings(database_url, tmp_path, email={"smtp_port": port}), broker=StubBroker())
    empty_tables(rt.engine)
    worker = InlineWorker(rt, threads=1)
    worker.start(scheduler=False)
    try:
        add_user(rt, "f@example.org", "fundraiser")
        with rt.unit_of_work() as uow:
            assert auth.request_password_reset(uow, "f@example.org")
            assert not auth.request_password_reset(uow, "nobody@example.org")
        worker.join()
        [message] = mailbox.to("f@example.org")
        text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        link = re.search(r"https?://\S+", text).group(0)  # type: ignore[union-attr]
        assert link.startswith("http://testserver/staff/reset-password?token=")
        token = link.split("token=")[1]
        with rt.read_session() as session:
            secret = signing.signing_secret(session, "")
        with rt.unit_of_work() as uow:
            assert auth.reset_password(uow, token, "a brand new passphrase", secret=secret).email == "f@example.org"
        with pytest.raises(AppError, match="used or has expired"), rt.unit_of_work() as uow:
            auth.reset_password(uow, token, "yet another passphrase", secret=secret)
        with pytest.raises(AppError, match="cannot be used"), rt.unit_of_work() as uow:
            auth.reset_password(uow, token[:-2] + "xx", "yet another passphrase", secret=secret)
        with rt.unit_of_work() as uow:
            assert not auth.login(uow, "f@example.org", PASSWORD).ok
            assert auth.login(uow, "f@example.org", "a brand new passphrase").ok
    finally:
        worker.stop()
        empty_tables(rt.engine)
        rt.engine.dispose()
        set_runtime(None)


# --- the signing secret --------------------------------------------------------------------------------------


def test_signing_secret_is_generated_once_and_kept(runtime: Runtime) -> None:
    signing.forget_cached_secrets()
    found: list[str] = []

    def first_use() -> None:
        with runtime.unit_of_work() as uow:
            found.append(signing.signing_secret(uow.session, ""))
        signing.forget_cached_secrets()

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(found)) == 1 and len(found[0]) >= 48
    with runtime.read_session() as session:
        assert session.get(AppSecret, signing.SECRET_NAME).value == found[0]  # type: ignore[union-attr]
        assert signing.signing_secret(session, "configured-secret") == "configured-secret"
    token = signing.sign(found[0], "a", "payload")
    assert signing.unsign(found[0], "a", token, max_age_seconds=60) == "payload"
    with pytest.raises(signing.InvalidToken):
        signing.unsign(found[0], "b", token, max_age_seconds=60)
    with pytest.raises(signing.InvalidToken):
        signing.unsign("another secret", "a", token, max_age_seconds=60)


def test_a_secret_generated_in_a_rolled_back_transaction_is_not_used(runtime: Runtime) -> None:
    signing.forget_cached_secrets()
    with pytest.raises(RuntimeError), runtime.unit_of_work() as uow:
        lost = signing.signing_secret(uow.session, "")
        raise RuntimeError("the request failed")
    with runtime.unit_of_work() as uow:
        kept = signing.signing_secret(uow.session, "")
    assert kept != lost
    with runtime.read_session() as session:
        assert signing.signing_secret(session, "") == kept
        assert session.get(AppSecret, signing.SECRET_NAME).value == kept  # type: ignore[union-attr]
