"""Staff page fixtures: one user per role, logging in through the real form, sample supporters, and (for the
browser tests) a live uvicorn server on a free port over the test database with headless Chromium."""

from __future__ import annotations

import datetime as dt
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyotp
import pytest
from starlette.testclient import TestClient

from core.auth import add_staff_user
from core.models import StaffRole
from core.runtime import Runtime
from crm import service as crm_service
from crm.models import ConsentChannel, ConsentStatus, DeclarationMethod, DeclarationScope
from crm.validation import DonorDetails

PASSWORD = "correct horse battery"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
# How long before a TOTP step ends a code for the earliest accepted step is not made (`StaffAccount.code`).
BOUNDARY_MARGIN_SECONDS = 3.0


@dataclass
class StaffAccount:
    email: str
    role: StaffRole
    password: str
    totp_secret: str | None
    last_step: int | None = None

    def code(self) -> str:
        """A code not used yet: each is accepted once, and the server takes one time step either side of now, so a
        test can log the same account in three times a step (the earliest step first)."""
        if not self.totp_secret:
            return ""
        totp = pyotp.TOTP(self.totp_secret)
        # The earliest step stops being accepted when the next step starts: a code made just before that moment
        # could reach the server just after it (seen on a loaded CI box). Wait for the new step instead.
        left = totp.interval - time.time() % totp.interval
        if left < BOUNDARY_MARGIN_SECONDS:
            time.sleep(left + 0.05)
        now = totp.timecode(dt.datetime.now(dt.UTC))
        step = now - 1 if self.last_step is None else max(now - 1, self.last_step + 1)
        assert step <= now + 1, "more logins of one account in one TOTP step than the drift window allows"
        self.last_step = step
        return totp.generate_otp(step)


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2 at its production cost takes about a second a hash on a busy CI box; these tests are about pages."""
    import argon2

    from core import auth

    monkeypatch.setattr(auth, "_hasher", argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def staff_accounts(runtime: Runtime) -> dict[str, StaffAccount]:
    accounts = {}
    with runtime.unit_of_work() as uow:
        for role in StaffRole:
            new = add_staff_user(uow, f"{role.value}@example.org", role, PASSWORD, issuer="Giving tests")
            secret = None
            if new.otpauth_uri:
                secret = pyotp.parse_uri(new.otpauth_uri).secret
            accounts[role.value] = StaffAccount(new.email, role, PASSWORD, secret)
    return accounts


def csrf_of(html: str) -> str:
    match = CSRF_FIELD.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def log_in(client: TestClient, account: StaffAccount) -> str:
    """Logs in through the form; returns the session's CSRF token (from the start page)."""
    page = client.get("/staff/login")
    assert page.status_code == 200
    answer = client.post(
        "/staff/login",
        data={
            "csrf_token": csrf_of(page.text),
            "email": account.email,
            "password": account.password,
            "totp": account.code(),
            "next": "/staff/",
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    home = client.get("/staff/")
    assert home.status_code == 200
    return csrf_of(home.text)


def add_supporter(
    runtime: Runtime,
    first: str = "Ann",
    last: str = "Smith",
    email: str | None = "ann.smith@example.org",
    postcode: str = "CT16 1AA",
    *,
    history: int = 0,
    declaration: bool = False,
) -> uuid.UUID:
    with runtime.unit_of_work() as uow:
        supporter = crm_service.find_or_create_supporter(
            uow,
            DonorDetails(
                first_name=first,
                last_name=last,
                email=email,
                address_line1="12 Dock Road",
                town="Dover",
                postcode=postcode,
            ).normalised(),
            source="test",
        )
        crm_service.record_consent(
            uow,
            supporter.id,
            channel=ConsentChannel.EMAIL,
            status=ConsentStatus.GRANTED,
            source="donate_form",
            wording_version="v1",
        )
        if declaration:
            crm_service.record_declaration(
                uow,
                supporter.id,
                method=DeclarationMethod.ONLINE,
                made_on=dt.date(2025, 1, 10),
                scope=DeclarationScope.PAST_4_YEARS_AND_FUTURE,
                donor=DonorDetails(
                    first_name=first, last_name=last, address_line1="12 Dock Road", postcode=postcode
                ).normalised(require_address=True),
                source="donate_form",
                wording_version="v1",
                wording_text="I want to Gift Aid my donations.",
            )
        base = dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC)
        for i in range(history):
            crm_service.record_history(
                uow,
                supporter.id,
                type="gift" if i % 2 == 0 else "receipt",
                summary=f"Item {i}",
                at=base + dt.timedelta(days=i),
                amount=1000 + i if i % 2 == 0 else None,
                currency="GBP" if i % 2 == 0 else None,
                dedupe_key=f"test:{supporter.id}:{i}",
            )
        return supporter.id


def form_values(**values: Any) -> dict[str, str]:
    return {k: str(v) for k, v in values.items()}


@pytest.fixture
def logged_in(client: TestClient, staff_accounts: dict[str, StaffAccount]) -> Iterator[Any]:
    """`logged_in("finance")` → the CSRF token of a session of that role on `client`."""

    def as_role(role: str) -> str:
        client.cookies.clear()
        return log_in(client, staff_accounts[role])

    yield as_role


def add_gift(runtime: Runtime, supporter_id: uuid.UUID, amount: int, received: dt.date) -> uuid.UUID:
    """A paid card gift as the payments wing records it (the test needs only its row)."""
    from payments.models import Gift, GiftStatus, Method, Provider

    at = dt.datetime.combine(received, dt.time(12), tzinfo=dt.UTC)
    with runtime.unit_of_work() as uow:
        gift = Gift(
            supporter_id=supporter_id,
            amount=amount,
            status=GiftStatus.PAID,
            provider=Provider.STRIPE,
            method=Method.CARD,
            received_at=at,
            received_on=received,
            donor={"first_name": "Ann", "last_name": "Smith", "address_line1": "12 Dock Road", "postcode": "CT16 1AA"},
            stripe_charge_id=f"ch_{uuid.uuid4().hex[:16]}",
        )
        uow.session.add(gift)
        uow.session.flush()
        crm_service.record_history(
            uow,
            supporter_id,
            type="gift",
            summary=f"Gift of £{amount / 100:,.2f}",
            at=at,
            amount=amount,
            currency="GBP",
            data={"gift_id": str(gift.id)},
            dedupe_key=f"gift:{gift.id}",
        )
        return gift.id


# --- a live server and a real browser ------------------------------------------------------------------------

SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class LiveServer:
    url: str
    runtime: Runtime
    database: str

    def screenshot(self, page: Any, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{self.database}.png"), full_page=True)


@pytest.fixture
def live_server(runtime: Runtime, database_url: str) -> Iterator[LiveServer]:
    """The real application under uvicorn on a free port, in a thread, over the test database."""
    import threading
    import time

    import uvicorn

    from giving.app import create_app
    from tests.fixtures.smtp import free_port

    port = free_port()
    app = create_app(runtime=runtime, start_inline_worker=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="uvicorn-live", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the live server did not start")
        time.sleep(0.05)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", runtime, "postgres" if "postgresql" in database_url else "sqlite")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Debian's chromium driven by playwright (sync API: these tests are plain functions, no event loop)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_page(chromium: Any, live_server: LiveServer) -> Iterator[Any]:
    """A fresh browser context (no cookies) at desktop size; CSP violations and page errors fail the test."""
    context = chromium.new_context(
        base_url=live_server.url, viewport={"width": 1280, "height": 900}, accept_downloads=True
    )
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.set_default_timeout(15_000)
    try:
        yield page
    finally:
        context.close()
    csp = [p for p in problems if "Content Security Policy" in p or "Refused to" in p]
    assert not csp, csp


def browser_log_in(page: Any, account: StaffAccount) -> None:
    page.goto("/staff/login")
    page.get_by_label("Email address").fill(account.email)
    page.get_by_label("Password").fill(account.password)
    if account.totp_secret:
        page.get_by_label("Six-digit code").fill(account.code())
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/staff/")
