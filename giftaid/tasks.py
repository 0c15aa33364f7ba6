"""Jobs of giftaid (dramatiq actors through core.jobs)."""

from __future__ import annotations

import datetime as dt
import uuid

from core import jobs
from core.db import UnitOfWork
from core.runtime import get_runtime
from giftaid import service
from giftaid.errors import InvalidTransition
from giftaid.models import ClaimStatus


@jobs.periodic("giftaid.poll_submitted", every=dt.timedelta(minutes=15))
@jobs.actor("giftaid.poll_submitted", queue="default", time_limit_ms=300_000, max_retries=2)
def poll_submitted(uow: UnitOfWork) -> int:
    """Ask HMRC about every claim submitted through the gateway that is still waiting, each in a job of its own:
    one claim's unreachable endpoint or failure never undoes another's verdict (HMRC deletes an answer once we
    have it). Returns how many were asked about."""
    waiting = [
        claim.id
        for claim in service.list_claims(uow.session)
        if ClaimStatus(claim.status) == ClaimStatus.SUBMITTED and claim.correlation_id
    ]
    for claim_id in waiting:
        uow.enqueue("giftaid.poll_claim", claim_id=str(claim_id))
    return len(waiting)


@jobs.actor("giftaid.poll_claim", queue="default", time_limit_ms=120_000, max_retries=5)
def poll_claim(uow: UnitOfWork, claim_id: str) -> str:
    """Poll one submitted claim (enqueued by `poll_submitted`). A claim no longer waiting (another poll, or a person,
    already had HMRC's verdict) is done: nothing to ask, and not a failure to retry."""
    identifier = uuid.UUID(claim_id)
    try:
        claim = service.poll_claim(uow, get_runtime().settings, identifier, actor="system:poll")
    except InvalidTransition:
        return str(service.get_claim(uow.session, identifier).status)
    return str(claim.status)
