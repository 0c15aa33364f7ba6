"""Jobs of receipts. The job names are a contract: payments and crm enqueue them by name.

Placeholders until the receipts work lands; each takes the keyword arguments shown.
"""

from __future__ import annotations

import uuid

from core.db import UnitOfWork
from core.jobs import actor


@actor("receipts.issue_for_gift", queue="documents", time_limit_ms=120_000, max_retries=5)
def issue_for_gift(uow: UnitOfWork, gift_id: str) -> None:
    """A receipt for a paid gift (a one-off, a regular instalment, the donation line of a basket)."""
    uuid.UUID(gift_id)


@actor("receipts.issue_for_order", queue="documents", time_limit_ms=120_000, max_retries=5)
def issue_for_order(uow: UnitOfWork, order_id: str) -> None:
    """A sale receipt for a paid shop order."""
    uuid.UUID(order_id)


@actor("receipts.issue_correction", queue="documents", time_limit_ms=120_000, max_retries=5)
def issue_correction(uow: UnitOfWork, refund_id: str) -> None:
    """A corrected receipt after money was returned on a gift or order whose receipt was sent."""
    uuid.UUID(refund_id)


@actor("receipts.issue_oral_confirmation", queue="documents", time_limit_ms=120_000, max_retries=5)
def issue_oral_confirmation(uow: UnitOfWork, declaration_id: str) -> None:
    """The written confirmation of an oral Gift Aid declaration."""
    uuid.UUID(declaration_id)
