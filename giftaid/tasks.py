"""Jobs of giftaid (dramatiq actors through core.jobs)."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

from core import jobs
from core.db import UnitOfWork
from core.runtime import get_runtime
from giftaid import service
from giftaid.errors import ClaimsBusy, InvalidTransition, SubmissionFailed
from giftaid.models import ClaimStatus

log = logging.getLogger("giving.giftaid")


@jobs.periodic("giftaid.poll_submitted", every=dt.timedelta(minutes=15))
@jobs.actor("giftaid.poll_submitted", queue="default", time_limit_ms=300_000, max_retries=2)
def poll_submitted(uow: UnitOfWork) -> int:
    """Ask HMRC about every claim submitted through the gateway that is still waiting, each in a job of its own:
    one claim's unreachable endpoint or failure never undoes another's verdict. A claim whose polls have had
    nothing but errors for a day is left for finance (`service.polling_stopped`). Returns how many were asked
    about."""
    waiting = [
        claim.id
        for claim in service.list_claims(uow.session)
        if ClaimStatus(claim.status) == ClaimStatus.SUBMITTED
        and claim.correlation_id
        and not service.polling_stopped(claim)
    ]
    for claim_id in waiting:
        uow.enqueue("giftaid.poll_claim", claim_id=str(claim_id))
    return len(waiting)


# How long a poll job waits for the claims' lock behind a claim being built (10-30 s for a million gifts, more on a
# slow day) before leaving the claim to the next sweep. Its 120 s limit must also hold HMRC's PollInterval (at most
# `service.POLL_WAIT_LIMIT_SECONDS`) and the gateway client's 60 s timeout.
POLL_LOCK_WAIT_SECONDS = 30.0


@jobs.actor("giftaid.poll_claim", queue="default", time_limit_ms=120_000, max_retries=5)
def poll_claim(uow: UnitOfWork, claim_id: str) -> str:
    """Poll one submitted claim (enqueued by `poll_submitted`). A claim no longer waiting (another poll, or a person,
    already had HMRC's verdict) is done: nothing to ask, and not a failure to retry. Nor is a claim whose locks a
    build held past POLL_LOCK_WAIT_SECONDS: HMRC was asked nothing, and the next sweep (15 minutes on) polls it;
    waiting on, the job was killed by its time limit and retried to exhaustion. HMRC's delete after a verdict is not
    sent here but by its own job, recorded with the verdict and due at once, so this one ends promptly."""
    identifier = uuid.UUID(claim_id)
    try:
        claim = service.poll_claim(
            uow,
            get_runtime().settings,
            identifier,
            actor="system:poll",
            lock_wait=POLL_LOCK_WAIT_SECONDS,
            delete_now=False,  # its own job (`delete_at_hmrc`, recorded with the verdict): not in this time limit
        )
    except InvalidTransition:
        return str(service.get_claim(uow.session, identifier).status)
    except ClaimsBusy as exc:
        log.info("%s: left to the next poll", exc)
        return "busy"
    return str(claim.status)


def _delete_given_up(uow: UnitOfWork, arguments: dict[str, Any], error: str) -> None:
    """The claim's history says HMRC's copy was never deleted (HMRC clears old answers itself in time)."""
    service.record_delete_given_up(uow, uuid.UUID(arguments["claim_id"]), error)


@jobs.actor(
    service.DELETE_AT_HMRC,
    queue="default",
    time_limit_ms=120_000,
    max_retries=8,
    min_backoff_ms=60_000,
    max_backoff_ms=3_600_000,
    with_uow=False,
    claims_itself=True,
    on_give_up=_delete_given_up,
)
def delete_at_hmrc(claim_id: str) -> bool:
    """Delete HMRC's copy of a decided claim's submission; recorded with the decision (`service.change_status`),
    so it runs even when the attempt right after the commit failed or the process died. Retried (over a few
    hours) while the gateway does not answer; a run after HMRC has answered a delete sends nothing.

    Its attempt is committed first, a failed one too (every message is kept with the claim), and only then does
    the job fail, so the worker retries it."""
    runtime = get_runtime()
    with runtime.unit_of_work() as uow:
        jobs.claim_in(uow)
        result = service.delete_at_hmrc(uow, runtime.settings, uuid.UUID(claim_id))
        if not result.retry_error:
            jobs.done_in(uow)
    if result.retry_error:
        raise SubmissionFailed(result.retry_error)
    return result.sent
