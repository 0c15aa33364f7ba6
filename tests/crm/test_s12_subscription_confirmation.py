"""The double opt-in confirmation email is checked when its job runs (the first time or a retry): once the person
has withdrawn (an unsubscribe link, staff), is subscribed already, or the link would have expired, it is not sent,
and the pending subscription records why."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import time_machine
from sqlmodel import select
from starlette.testclient import TestClient

from core.db import UnitOfWork
from core.models import Job, JobStatus
from core.runtime import Runtime
from core.settings import Settings
from crm import service as crm_service
from crm.models import ConsentChannel, ConsentStatus, PendingSubscription, Supporter
from tests.fixtures.app import make_settings
from tests.fixtures.smtp import Mailbox

ADDRESS = "sam@example.org"
JOB = "crm.send_subscription_confirmation"


@pytest.fixture
def mailbox(smtp_server: tuple[Mailbox, int]) -> Mailbox:
    return smtp_server[0]


@pytest.fixture
def settings(database_url: str, tmp_path: Path, smtp_server: tuple[Mailbox, int]) -> Settings:
    return make_settings(database_url, tmp_path, email={"smtp_port": smtp_server[1]})


def supporter_id(runtime: Runtime) -> uuid.UUID:
    with runtime.read_session() as session:
        return session.exec(select(Supporter).where(Supporter.email == ADDRESS)).one().id


def unsubscribed(uow: UnitOfWork, sid: uuid.UUID) -> None:
    crm_service.unsubscribe(uow, sid, client="test")


def withdrawn_by_staff(uow: UnitOfWork, sid: uuid.UUID) -> None:
    crm_service.change_consent_by_staff(
        uow, sid, channel=ConsentChannel.EMAIL, status=ConsentStatus.WITHDRAWN, by="fundraiser@example.org"
    )


def granted_on_a_donate_form(uow: UnitOfWork, sid: uuid.UUID) -> None:
    crm_service.record_consent(
        uow, sid, channel=ConsentChannel.EMAIL, status=ConsentStatus.GRANTED, source="donate_form"
    )


def pending_row(runtime: Runtime) -> PendingSubscription:
    with runtime.read_session() as session:
        return session.exec(select(PendingSubscription)).one()


def job_row(runtime: Runtime) -> Job:
    with runtime.read_session() as session:
        return session.exec(select(Job).where(Job.actor_name == JOB)).one()


@pytest.mark.parametrize(
    ("change", "reason"),
    [(unsubscribed, "withdrawn"), (withdrawn_by_staff, "withdrawn"), (granted_on_a_donate_form, "granted")],
)
def test_a_confirmation_whose_send_is_retried_after_the_change_is_not_sent(
    runtime: Runtime,
    client: TestClient,
    mailbox: Mailbox,
    request: pytest.FixtureRequest,
    change: Callable[..., None],
    reason: str,
) -> None:
    mailbox.refuse = True  # the first attempt fails: the job is retried
    worker = request.getfixturevalue("worker")
    assert client.post("/subscribe", data={"email": ADDRESS, "first_name": "Sam"}).status_code == 200
    deadline = time.monotonic() + 30
    while job_row(runtime).attempts < 1 or job_row(runtime).last_error is None:
        assert time.monotonic() < deadline, "the first attempt never failed"
        time.sleep(0.05)
    with runtime.unit_of_work() as uow:
        change(uow, supporter_id(runtime))
    mailbox.refuse = False
    worker.join()
    assert mailbox.to(ADDRESS) == []
    assert job_row(runtime).status == JobStatus.DONE
    pending = pending_row(runtime)
    assert pending.skipped_at is not None and pending.skipped_reason == reason
    assert pending.confirmed_at is None


def test_a_confirmation_that_would_arrive_expired_is_not_sent(
    runtime: Runtime, client: TestClient, mailbox: Mailbox, request: pytest.FixtureRequest
) -> None:
    assert client.post("/subscribe", data={"email": ADDRESS}).status_code == 200
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(days=4)):
        request.getfixturevalue("worker").join()
    assert mailbox.to(ADDRESS) == []
    assert pending_row(runtime).skipped_reason == "expired"


def test_a_confirmation_still_wanted_is_sent_even_after_an_older_withdrawal(
    runtime: Runtime, client: TestClient, mailbox: Mailbox, request: pytest.FixtureRequest
) -> None:
    """Someone who unsubscribed last year and subscribes again now gets the email (the withdrawal is older)."""
    with time_machine.travel(dt.datetime.now(dt.UTC) - dt.timedelta(days=365)), runtime.unit_of_work() as uow:
        sid = crm_service.supporter_for_email(uow, ADDRESS, source="test").id
        unsubscribed(uow, sid)
    assert client.post("/subscribe", data={"email": ADDRESS}).status_code == 200
    request.getfixturevalue("worker").join()
    assert len(mailbox.to(ADDRESS)) == 1
    pending = pending_row(runtime)
    assert pending.skipped_at is None and pending.skipped_reason is None
