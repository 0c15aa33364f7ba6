"""Jobs of receipts. The names `receipts.issue_for_gift(gift_id)`, `receipts.issue_for_order(order_id)`,
`receipts.issue_correction(refund_id)` and `receipts.issue_oral_confirmation(declaration_id)` are a contract:
payments and crm enqueue them by name.

An issuing job runs three short steps instead of one long transaction: number the document (the counter lock is
held for milliseconds), render and store the PDF with no transaction open, then mark it issued and plan its
delivery. Every step is idempotent, so a job that dies or runs twice issues one document with one number. Sending
is its own durable job (`receipts.send_document`), so a failed email is retried without rendering again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from sqlmodel import Session

from core import jobs
from core.db import UnitOfWork, unit_of_work
from core.jobs import actor
from core.mailer import MailError
from core.runtime import Runtime, get_runtime
from receipts import service
from receipts.models import Document, PostalBatch

log = logging.getLogger("giving.receipts")

ISSUE = {"queue": "documents", "time_limit_ms": 120_000, "max_retries": 5, "with_uow": False}
# Email retries back off from 1 s to an hour (about two hours in all) before the delivery is marked failed.
SEND_MAX_RETRIES = 12


def _issue(allocate: Callable[[UnitOfWork, Runtime], list[Document]]) -> None:
    runtime = get_runtime()
    # The job's two short transactions share one pooled connection (one checkout and liveness check instead of
    # two). No transaction is open on it while the PDF renders. Run for a durable message, the job's row is claimed
    # in the numbering transaction and marked done with the recording (`claims_itself`), not in two of its own.
    with runtime.engine.connect() as connection:
        sessions = partial(runtime.sessions, bind=connection)
        with unit_of_work(sessions, jobs.send_jobs) as uow:  # type: ignore[arg-type]
            jobs.claim_in(uow)
            # What to render is read in the numbering transaction: no second read before the render.
            renders = [job for job in map(service.render_job_of, allocate(uow, runtime)) if job is not None]
            if not renders:
                jobs.done_in(uow)
        for number, job in enumerate(renders, start=1):
            _render_and_record(runtime, job, sessions, last=number == len(renders))


def finish_document(runtime: Runtime, document_id: uuid.UUID) -> None:
    """Render and store an allocated document, then mark it issued (nothing if it already is)."""
    with runtime.read_session() as session:
        job = service.render_job(session, document_id)
    if job is not None:
        _render_and_record(runtime, job, runtime.sessions)


def _render_and_record(
    runtime: Runtime, job: service.RenderJob, sessions: Callable[[], Session], *, last: bool = False
) -> None:
    digest, size = service.render_and_store(runtime.settings, job)
    with unit_of_work(sessions, jobs.send_jobs) as uow:  # type: ignore[arg-type]
        delivery = service.record_rendered(uow, job.document_id, storage_key=job.storage_key, digest=digest, size=size)
        # A planned delivery means it was issued; only otherwise can it have been withdrawn (no read on the usual path).
        if delivery is None and service.withdrawn(uow.session, job.document_id):
            # Its supporter was erased while it rendered (after the erasure deleted what was stored): the PDF stored
            # just now names them and must not stay.
            stored = service.store_for(runtime.settings).path(job.storage_key)
            uow.on_commit(lambda: stored.unlink(missing_ok=True))
        if last:
            jobs.done_in(uow)


def _one(document: Document | None) -> list[Document]:
    return [document] if document is not None else []


@actor("receipts.issue_for_gift", claims_itself=True, **ISSUE)  # type: ignore[arg-type]
def issue_for_gift(gift_id: str) -> None:
    """A receipt for a paid gift (a one-off, a regular instalment, the donation line of a basket)."""
    gift = uuid.UUID(gift_id)

    # A refund recorded before this receipt still gets its corrected receipt (the service asks for it).
    _issue(lambda uow, runtime: _one(service.allocate_gift_receipt(uow, runtime.settings, gift)))


@actor("receipts.issue_for_order", claims_itself=True, **ISSUE)  # type: ignore[arg-type]
def issue_for_order(order_id: str) -> None:
    """A sale receipt for a paid shop order (and the receipt of its donation line, which is a gift)."""
    order = uuid.UUID(order_id)
    _issue(lambda uow, runtime: _one(service.allocate_sale_receipt(uow, runtime.settings, order)))


@actor("receipts.issue_correction", claims_itself=True, **ISSUE)  # type: ignore[arg-type]
def issue_correction(refund_id: str) -> None:
    """A corrected receipt after money was returned on a gift or order whose receipt was issued."""
    refund = uuid.UUID(refund_id)
    _issue(lambda uow, runtime: service.allocate_corrections(uow, runtime.settings, refund))


@actor("receipts.issue_oral_confirmation", claims_itself=True, **ISSUE)  # type: ignore[arg-type]
def issue_oral_confirmation(declaration_id: str) -> None:
    """The written confirmation of an oral Gift Aid declaration (it takes effect when the letter is sent)."""
    declaration = uuid.UUID(declaration_id)
    _issue(lambda uow, runtime: _one(service.allocate_oral_confirmation(uow, runtime.settings, declaration)))


@actor("receipts.issue_annual_statement", claims_itself=True, **ISSUE)  # type: ignore[arg-type]
def issue_annual_statement(supporter_id: str, tax_year: str) -> None:
    """One supporter's statement for a tax year."""
    supporter = uuid.UUID(supporter_id)
    _issue(lambda uow, runtime: _one(service.allocate_annual_statement(uow, runtime.settings, supporter, tax_year)))


@actor("receipts.render_document", **ISSUE)  # type: ignore[arg-type]
def render_document(document_id: str) -> None:
    """Render, store and deliver a document numbered earlier (the annual run numbers first, then renders)."""
    finish_document(get_runtime(), uuid.UUID(document_id))


def _send_given_up(uow: UnitOfWork, arguments: dict[str, Any], error: str) -> None:
    service.delivery_given_up(uow, uuid.UUID(arguments["delivery_id"]), error)


@actor(
    "receipts.send_document",
    queue="email",
    time_limit_ms=60_000,
    max_retries=SEND_MAX_RETRIES,
    min_backoff_ms=1_000,
    max_backoff_ms=3_600_000,
    on_give_up=_send_given_up,
    with_uow=False,
    claims_itself=True,
)
def send_document(delivery_id: str) -> None:
    """Email one delivery with its PDF attached; retried on SMTP failure, marked failed after the last try.

    The send, its outcome and the job's row marked done are one unit of work. A refusal to be retried rolls that
    back: the try (its number and the server's answer) is then recorded on the delivery in a unit of work of its
    own before the error goes on to dramatiq, so staff see it while the retry waits (up to an hour)."""
    runtime = get_runtime()
    delivery = uuid.UUID(delivery_id)
    retries = jobs.current_retries()
    try:
        with runtime.unit_of_work() as uow:
            jobs.claim_in(uow)
            service.send_delivery(
                uow, runtime.settings, delivery, attempt=retries + 1, final=retries >= SEND_MAX_RETRIES
            )
            jobs.done_in(uow)
    except MailError as exc:
        with runtime.unit_of_work() as uow:
            service.send_attempt_failed(uow, delivery, attempt=retries + 1, error=str(exc))
        raise


# How many times a postal batch is read and rendered again when what it read changed before it was recorded; then it
# is made in one transaction, as it always can be.
POSTAL_TRIES = 3


def make_postal_batch(runtime: Runtime, *, limit: int = 500) -> PostalBatch | None:
    """One PDF of every document waiting for the post (at most `limit`): read, rendered with no transaction open (on
    SQLite a write transaction holds the database's one write lock, and 500 pages take longer to render than other
    writers wait for it), then recorded in a short unit of work that checks nothing it printed changed meanwhile."""
    for _ in range(POSTAL_TRIES):
        with runtime.read_session() as session:
            plan = service.plan_postal_batch(session, limit=limit)
        if plan is None:
            return None
        rendered = service.render_postal_plan(runtime.settings, plan)
        try:
            with runtime.unit_of_work() as uow:
                return service.record_postal_batch(uow, runtime.settings, plan, rendered)
        except service.PostalBatchChanged as exc:
            log.info("postal batch read again: %s", exc)
    with runtime.unit_of_work() as uow:
        return service.build_postal_batch(uow, runtime.settings, limit=limit)


def remake_postal_batch(runtime: Runtime, batch_id: uuid.UUID) -> int:
    """A postal batch's PDF without the pages of supporters erased since, rendered with no transaction open (as
    `make_postal_batch`). Returns how many pages it lost."""
    for _ in range(POSTAL_TRIES):
        with runtime.read_session() as session:
            plan = service.plan_rebuild(session, batch_id)
        if plan is None:
            return 0
        pdf = service.render_rebuild(runtime.settings, plan)
        try:
            with runtime.unit_of_work() as uow:
                return service.record_rebuild(uow, runtime.settings, plan, pdf)
        except service.PostalBatchChanged as exc:
            log.info("postal batch %s read again: %s", batch_id, exc)
    with runtime.unit_of_work() as uow:
        return service.rebuild_postal_batch(uow, runtime.settings, batch_id)


@actor("receipts.build_postal_batch", queue="documents", time_limit_ms=600_000, max_retries=2, with_uow=False)
def build_postal_batch() -> None:
    """One PDF of every document waiting for the post (`giving receipts postal-batch` does the same)."""
    make_postal_batch(get_runtime())


@actor(service.REBUILD_POSTAL_BATCH, queue="documents", time_limit_ms=600_000, max_retries=5, with_uow=False)
def rebuild_postal_batch(batch_id: str) -> int:
    """A postal batch's PDF without the pages of supporters erased since (sent by an erasure)."""
    return remake_postal_batch(get_runtime(), uuid.UUID(batch_id))
