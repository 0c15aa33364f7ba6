"""Staff page fixtures: one user per role, logging in through the real form, sample supporters, and (for the
browser tests) a live uvicorn server on a free port over the test database with headless Chromium."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
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


@dataclass
class StaffAccount:
    email: str
    role: StaffRole
    password: str
    totp_secret: str | None

    def code(self) -> str:
        return pyotp.TOTP(self.totp_secret).now() if self.totp_secret else ""


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
