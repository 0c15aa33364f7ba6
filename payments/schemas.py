"""Data shapes that payments hands to its callers (no tables here)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["processed", "ignored", "waiting"]


@dataclass
class Effect:
    """What processing one provider event did.

    `waiting_for` names the object the event needs and we have not recorded yet ("stripe_subscription:sub_...");
    `recorded` names the objects this event recorded, so events waiting for them can run again at once.
    """

    outcome: Outcome
    waiting_for: str | None = None
    recorded: list[str] = field(default_factory=list)
    note: str = ""

    @classmethod
    def processed(cls, *recorded: str | None, note: str = "") -> Effect:
        return cls("processed", recorded=[key for key in recorded if key], note=note)

    @classmethod
    def ignored(cls, note: str) -> Effect:
        return cls("ignored", note=note)

    @classmethod
    def waiting(cls, key: str, note: str = "") -> Effect:
        return cls("waiting", waiting_for=key, note=note or f"waits for {key}")


@dataclass(frozen=True)
class MissingInstalment:
    regular_gift_id: uuid.UUID
    supporter_id: uuid.UUID
    due_on: dt.date
    amount: int
    currency: str
    provider: str
