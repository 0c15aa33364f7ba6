"""Payouts and their reconciliation (issue "Merchandise and money in the bank").

Interface used by the webhook handlers (payments processing calls these; the reconciliation work fills them in):
- `record_stripe_payout(uow, payout, event_type)`: a Stripe payout object (dict) from a `payout.*` event.
- `record_gocardless_payout(uow, payout_id, action)`: a GoCardless `payouts.*` event (fetch through the SDK).
- `on_money_recorded(uow, source_ids)`: a gift, refund or dispute was just recorded with these provider ids
  (ch_..., re_..., dp_..., PM..., RF...); payout lines waiting for them are matched now.
"""

from __future__ import annotations

from typing import Any

from core.db import UnitOfWork


def record_stripe_payout(uow: UnitOfWork, payout: dict[str, Any], event_type: str) -> None:
    """Placeholder until reconciliation lands: payouts are recorded by the reconciliation work."""


def record_gocardless_payout(uow: UnitOfWork, payout_id: str, action: str) -> None:
    """Placeholder until reconciliation lands."""


def on_money_recorded(uow: UnitOfWork, source_ids: list[str]) -> None:
    """Placeholder until reconciliation lands."""
