"""Erasure deletes the supporter's stored receipt PDFs right after its commit, and through a durable job written in
its transaction: a crash between the commit and that deletion must not leave PDFs naming the person for ever."""

from __future__ import annotations

import json

import pytest
from sqlmodel import select

from core.models import Job, JobStatus
from core.runtime import InlineWorker, Runtime
from giving.privacy import erase_supporter
from receipts import service as receipts_service
from receipts.models import Document
from tests.fixtures.smtp import Mailbox
from tests.receipts import factories
from tests.receipts.conftest import mailbox, settings
from tests.receipts.helpers import run_job

__all__ = ["mailbox", "settings"]  # the receipts tests' settings: mail sent to a local SMTP server

FILES_JOB = "privacy.delete_receipt_files"


def test_a_durable_job_deletes_the_erased_supporters_receipt_files(
    runtime: Runtime, mailbox: Mailbox, request: pytest.FixtureRequest
) -> None:
    erased = factories.supporter(runtime, email="grace@example.org", first_name="Grace", last_name="Hopper")
    kept = factories.supporter(runtime, email="alan@example.org", first_name="Alan", last_name="Turing")
    # Receipts issued by a worker that is then stopped: the erasure's job waits in the queue until one runs again.
    issuer = InlineWorker(runtime, threads=1)
    issuer.start(scheduler=False)
    try:
        for supporter in (erased, kept):
            run_job(runtime, issuer, "receipts.issue_for_gift", gift_id=factories.gift(runtime, supporter))
    finally:
        issuer.stop()
    store = receipts_service.store_for(runtime.settings)
    with runtime.read_session() as session:
        docs = {d.supporter_id: d for d in session.exec(select(Document)).all()}
    theirs, others = store.path(docs[erased].storage_key), store.path(docs[kept].storage_key)
    assert theirs.exists() and others.exists()
    pdf = theirs.read_bytes()

    with runtime.unit_of_work() as uow:
        erase_supporter(uow, runtime.settings, erased)
    assert not theirs.exists()  # deleted at once, after the commit

    with runtime.read_session() as session:
        job = session.exec(select(Job).where(Job.actor_name == FILES_JOB)).one()
    arguments = json.dumps(job.arguments).lower()
    assert docs[erased].storage_key.lower() in arguments
    assert not any(word in arguments for word in ("grace", "hopper", "@example.org"))

    # The process died between the commit and the deletion: the file is still there when a worker runs the job.
    theirs.write_bytes(pdf)
    request.getfixturevalue("worker").join()
    assert not theirs.exists()
    assert others.exists()
    with runtime.read_session() as session:
        assert session.exec(select(Job).where(Job.actor_name == FILES_JOB)).one().status == JobStatus.DONE


def test_the_files_job_is_idempotent_and_asked_for_only_with_files(runtime: Runtime, worker: InlineWorker) -> None:
    nothing = factories.supporter(runtime, email="none@example.org")
    with runtime.unit_of_work() as uow:
        erase_supporter(uow, runtime.settings, nothing)
    with runtime.read_session() as session:
        assert session.exec(select(Job).where(Job.actor_name == FILES_JOB)).first() is None
    # Files already gone (deleted after the commit, or by an earlier run): the job is done, not failed.
    with runtime.unit_of_work() as uow:
        uow.enqueue(FILES_JOB, storage_keys=["gift_receipt/R-GONE.pdf"])
    worker.join()
    with runtime.read_session() as session:
        assert session.exec(select(Job).where(Job.actor_name == FILES_JOB)).one().status == JobStatus.DONE
