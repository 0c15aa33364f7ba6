"""Gift Aid claims: the claim, the gifts it claims, gifts held back, adjustments, and messages with HMRC.

A gift is claimed by a row in `giftaid_claim_gifts` whose `live` is TRUE. The unique constraint on
(`gift_id`, `live`) lets at most one live row exist per gift, in any claim, even when two claims are built at the
same moment; releasing a rejected claim sets `live` to NULL (NULLs never clash), so the history stays.
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from core.db import created_at_field, id_field, json_field, utc_field


def money_field(default: int | None = 0) -> Any:
    return Field(default=default, sa_type=sa.BigInteger, nullable=default is None)


class ClaimStatus(StrEnum):
    BUILT = "built"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    PAID = "paid"


class Claim(SQLModel, table=True):
    """One Gift Aid claim: every claimable gift received on or before `through` that was in no claim."""

    __tablename__ = "giftaid_claims"

    id: uuid.UUID = id_field()
    status: ClaimStatus = Field(default=ClaimStatus.BUILT, sa_type=sa.String(16), index=True)
    through: dt.date
    # Donation lines (a line is one gift, or several small gifts aggregated) and the gifts on them.
    lines: int = 0
    gifts: int = 0
    total: int = money_field()  # the donations
    gift_aid: int = money_field()  # 25% of total
    adjustment: int = money_field()  # tax over-claimed before, deducted from this claim
    currency: str = Field(default="GBP", max_length=3)
    earliest_on: dt.date | None = None
    latest_on: dt.date | None = None
    held_back: int = 0
    # The IRmark of each Charities Online message (a claim over 500,000 lines has several).
    irmarks: list[str] = json_field(list)
    correlation_id: str | None = Field(default=None, max_length=32)
    response_endpoint: str | None = Field(default=None, max_length=500)
    poll_interval: int | None = None
    hmrc_receipt: str = Field(default="", max_length=2000)
    # HMRC's errors, each with the gift ids it concerns.
    errors: list[dict[str, Any]] = json_field(list)
    rejection_reason: str = Field(default="", max_length=500)
    paid_amount: int | None = money_field(None)
    paid_on: dt.date | None = None
    built_by: str = Field(default="", max_length=254)
    built_at: dt.datetime = created_at_field()
    status_changed_at: dt.datetime | None = utc_field()
    created_at: dt.datetime = created_at_field()


class ClaimEvent(SQLModel, table=True):
    """Each step of a claim (built, submitted, accepted, rejected, paid) with who and when."""

    __tablename__ = "giftaid_claim_events"
    __table_args__ = (sa.Index("ix_giftaid_claim_events_claim_id_at", "claim_id", "at"),)

    id: uuid.UUID = id_field()
    claim_id: uuid.UUID = Field(foreign_key="giftaid_claims.id")
    status: ClaimStatus = Field(sa_type=sa.String(16))
    at: dt.datetime = created_at_field()
    actor: str = Field(max_length=254)
    detail: dict[str, Any] = json_field()


class ClaimGift(SQLModel, table=True):
    """A gift on a claim, with the amount exactly as claimed; the donor's details as claimed are its declaration's
    `ClaimDonor` row (together, the evidence of what was sent).

    Gifts with the same `line_no` in one claim form one aggregated line; the files are written in `line_no`
    order (a sort when they are read). A claim writes its rows in gift id order, so both keys, (claim, gift) and
    the unique (gift, live), grow in order instead of taking a million random inserts (gift ids are random UUIDs).
    No foreign keys here, on purpose: the rows are written by one INSERT ... SELECT from `gifts` and `declarations`
    in the claim's own transaction, and per-row foreign-key triggers would triple the cost of a large claim
    (measured: ~20 µs a row for the three)."""

    __tablename__ = "giftaid_claim_gifts"
    __table_args__ = (sa.UniqueConstraint("gift_id", "live"),)

    claim_id: uuid.UUID = Field(primary_key=True)
    gift_id: uuid.UUID = Field(primary_key=True)
    line_no: int
    # TRUE while the gift is claimed by this claim; NULL once a rejected claim released it.
    live: bool | None = Field(default=True, nullable=True)
    aggregated: bool = False
    received_on: dt.date
    amount: int = money_field()  # the donation claimed (the gift less anything already returned)
    returned_at_claim: int = money_field()
    # Money returned after the claim that an adjustment has already taken back.
    adjusted_returned: int = money_field()
    declaration_id: uuid.UUID | None = None


class ClaimDonor(SQLModel, table=True):
    """The donor's details as a claim sent them, once per declaration its gifts were claimed under (the claim's
    `ClaimGift` rows name it). Kept apart from the gifts: a donor of many gifts is written once (a claim of a million
    gifts from 200,000 donors writes 200,000 donor rows, not a million copies).

    Like `ClaimGift`, no foreign keys: both are written together by the claim's own statements."""

    __tablename__ = "giftaid_claim_donors"
    # Erasure, the purge and the subject-access export find a person's rows by their declarations.
    __table_args__ = (sa.Index("ix_giftaid_claim_donors_declaration_id", "declaration_id"),)

    claim_id: uuid.UUID = Field(primary_key=True)
    declaration_id: uuid.UUID = Field(primary_key=True)
    title: str | None = Field(default=None, max_length=4)
    first_name: str = Field(default="", max_length=35)
    last_name: str = Field(default="", max_length=35)
    house: str = Field(default="", max_length=40)
    postcode: str = Field(default="", max_length=10)
    overseas: bool = False


class HeldBack(SQLModel, table=True):
    """A gift a claim left out, and why (`reason` starts with its stable code)."""

    __tablename__ = "giftaid_held_back"

    claim_id: uuid.UUID = Field(foreign_key="giftaid_claims.id", primary_key=True)
    gift_id: uuid.UUID = Field(foreign_key="gifts.id", primary_key=True)
    code: str = Field(max_length=32)
    reason: str = Field(max_length=500)


class AdjustmentReason(StrEnum):
    REFUND = "refund"  # refunded, charged back or lost in a dispute after it was claimed
    DECLARATION_VOIDED = "declaration_voided"  # an oral declaration cancelled within its 30 days


class Adjustment(SQLModel, table=True):
    """Gift Aid claimed on money that was returned (or on a gift whose declaration became void), taken back by
    the next claim (`applied_claim_id`)."""

    __tablename__ = "giftaid_adjustments"

    id: uuid.UUID = id_field()
    gift_id: uuid.UUID = Field(foreign_key="gifts.id", index=True)
    claim_id: uuid.UUID = Field(foreign_key="giftaid_claims.id", index=True)
    applied_claim_id: uuid.UUID | None = Field(default=None, foreign_key="giftaid_claims.id", index=True)
    reason: AdjustmentReason = Field(sa_type=sa.String(32))
    returned_amount: int = money_field()  # the donation money the adjustment is about
    amount: int = money_field()  # the tax: 25% of returned_amount
    currency: str = Field(default="GBP", max_length=3)
    detail: str = Field(default="", max_length=300)
    detected_at: dt.datetime = created_at_field()
    # Withdrawn (kept, never deleted): the money came back after all (a dispute won on appeal, a chargeback
    # cancelled) before HMRC had the deduction, or HMRC had it and the gift is claimed again. A withdrawn adjustment
    # is carried by no claim still to be sent and counts nowhere.
    withdrawn_at: dt.datetime | None = utc_field()
    withdrawn_reason: str = Field(default="", max_length=300)
    # When finance was told that HMRC has this deduction on money that came back and that it cannot be claimed
    # again by a claim line (only part of the gift was taken back): said once, on the claim that carried it.
    owed_noted_at: dt.datetime | None = utc_field()


class Message(SQLModel, table=True):
    """Every GovTalk message sent to or received from HMRC for a claim (credentials removed)."""

    __tablename__ = "giftaid_messages"
    __table_args__ = (sa.Index("ix_giftaid_messages_claim_id_at", "claim_id", "at"),)

    id: uuid.UUID = id_field()
    claim_id: uuid.UUID | None = Field(default=None, foreign_key="giftaid_claims.id")
    part: int = 1
    direction: str = Field(max_length=8)  # sent | received
    function: str = Field(max_length=16)  # submit | poll | delete | list
    qualifier: str = Field(default="", max_length=16)
    correlation_id: str | None = Field(default=None, max_length=32)
    body: str = Field(sa_type=sa.Text)
    # Why an exchange failed and will be tried again (a delete the gateway did not answer, or answered with an
    # error worth asking again): kept all the same; empty for an answer that ends the exchange.
    error: str = Field(default="", max_length=500)
    at: dt.datetime = created_at_field()
