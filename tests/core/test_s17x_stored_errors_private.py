"""A job that fails on the database stores its error without the values PostgreSQL's DETAIL repeats (a donor's email,
name, postcode): the error's type and SQLSTATE only."""

from __future__ import annotations

import io
import logging
import uuid

import pytest
import sqlalchemy as sa
from sqlmodel import select

from core import jobs
from core.logging import RedactingFilter
from core.models import Job, JobStatus
from core.runtime import InlineWorker, Runtime
from crm.models import Supporter

EMAIL = "amina.private@example.org"
NAME = "Zebedee"
POSTCODE = "ZZ9 9QX"


@jobs.actor("tests.s17x_duplicate_supporter", max_retries=0)
def duplicate_supporter(uow) -> None:  # type: ignore[no-untyped-def]
    uow.session.add(Supporter(email=EMAIL, first_name=NAME, postcode=POSTCODE))
    uow.session.flush()
    uow.session.add(Supporter(email=EMAIL, first_name=NAME, postcode=POSTCODE))
    uow.session.flush()


def test_a_job_failing_on_a_unique_violation_stores_no_donor_value(runtime: Runtime, worker: InlineWorker) -> None:
    with runtime.unit_of_work() as uow:
        uow.enqueue("tests.s17x_duplicate_supporter")
    worker.join()
    with runtime.read_session() as session:
        job = session.exec(select(Job).where(Job.actor_name == "tests.s17x_duplicate_supporter")).one()
    assert job.status == JobStatus.FAILED
    error = job.last_error or ""
    assert error.startswith("IntegrityError"), error
    for value in (EMAIL, "amina.private", NAME, POSTCODE):
        assert value not in error, error
    if runtime.engine.dialect.name == "postgresql":
        assert error == "IntegrityError (23505 unique_violation)"


@jobs.actor("tests.s17x_supporter_without_first_name", max_retries=0)
def supporter_without_first_name(uow) -> None:  # type: ignore[no-untyped-def]
    uow.session.execute(
        sa.text(
            "INSERT INTO supporters (id, email, first_name, last_name, postcode, statement_preference, created_at,"
            " updated_at) VALUES (:id, :email, NULL, :name, :postcode, 'per_gift', now(), now())"
        ),
        {"id": uuid.uuid4(), "email": EMAIL, "name": NAME, "postcode": POSTCODE},
    )


def test_the_worker_log_of_a_failing_row_shows_none_of_its_values(runtime: Runtime, worker: InlineWorker) -> None:
    """PostgreSQL's "DETAIL: Failing row contains (...)" lists the whole row (name, postcode): the worker's log of
    the failure, through the handler `configure_logging` sets up, keeps the message and the SQLSTATE, not the row."""
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's errors repeat no values")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logging.getLogger().addHandler(handler)
    try:
        with runtime.unit_of_work() as uow:
            uow.enqueue("tests.s17x_supporter_without_first_name")
        worker.join()
    finally:
        logging.getLogger().removeHandler(handler)
    logged = stream.getvalue()
    assert "NotNullViolation" in logged and "first_name" in logged, logged
    for value in (EMAIL, "amina.private", NAME, POSTCODE):
        assert value not in logged, logged
