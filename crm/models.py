"""Supporters and what we know of them: addresses with history, consents, interests, Gift Aid declarations,
the history timeline (written by every package through `crm.service`) and review items."""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from core.db import JSONType, UTCDateTime, created_at_field, id_field, json_field, utc_field


class StatementPreference(StrEnum):
    PER_GIFT = "per_gift"
    ANNUAL = "annual"


# The later words of a surname that PostgreSQL's search indexes reach: the second, third and fourth.
SURNAME_WORDS_INDEXED = (2, 3, 4)


def surname_from_word(word: int) -> sa.ColumnElement[str]:
    """PostgreSQL: the surname in lower case from its `word`th word on (words separated by spaces or hyphens),
    or NULL if it has fewer words: "van der Berg" from word 3 is "berg", "Jones-Smith" from word 2 "smith".
    The same expression builds the index and the search's condition, written out whole so that the planner sees
    the index's own expression in the query (no bound constants) and alembic compares it as PostgreSQL gives it
    back (SQLAlchemy would write substring() as SUBSTRING(... FROM ...))."""
    return sa.literal_column(
        f"substring(translate(lower(last_name), '-', ' '), '^(?:[^ ]* +){{{word - 1}}}(.*)$')", sa.Text
    )


class Supporter(SQLModel, table=True):
    __tablename__ = "supporters"
    __table_args__ = (
        sa.Index("ix_supporters_last_name_first_name", "last_name", "first_name"),
        sa.Index("ix_supporters_postcode", "postcode"),
        # Staff search matches each term as a prefix of these (crm.repository.search_supporters); text_pattern_ops
        # lets a btree serve LIKE 'abc%' whatever the collation. PostgreSQL only: SQLite scans its small tables.
        *(
            sa.Index(
                f"ix_supporters_search_{name}",
                expression.label(f"search_{name}"),
                postgresql_ops={f"search_{name}": "text_pattern_ops"},
            ).ddl_if(dialect="postgresql")
            for name, expression in (
                ("first_name", sa.func.lower(sa.column("first_name"))),
                ("last_name", sa.func.lower(sa.column("last_name"))),
                ("email", sa.func.lower(sa.column("email"))),
                ("postcode", sa.func.lower(sa.func.replace(sa.column("postcode"), " ", ""))),
            )
        ),
        # A later word of the surname ("Berg" finds "van der Berg", "Smith" finds "Jones-Smith"): one index per
        # position. Not partial (WHERE ... IS NOT NULL), though most surnames are NULL there: PostgreSQL keeps no
        # statistics for a partial index's expression, and without them it guessed a common later word ("van der")
        # rare and checked thousands of rows one by one instead of combining two indexes (700 ms against 3 ms).
        *(
            sa.Index(
                f"ix_supporters_search_surname_word{word}",
                surname_from_word(word).label(f"surname_word{word}"),
                postgresql_ops={f"surname_word{word}": "text_pattern_ops"},
            ).ddl_if(dialect="postgresql")
            for word in SURNAME_WORDS_INDEXED
        ),
    )

    id: uuid.UUID = id_field()
    # Normalised (NFKC, trimmed, lower case); unique when present. Donors without email get a record each.
    email: str | None = Field(default=None, max_length=254, unique=True)
    title: str | None = Field(default=None, max_length=4)
    first_name: str = Field(default="", max_length=35)
    last_name: str = Field(default="", max_length=35)
    phone: str | None = Field(default=None, max_length=30)
    # The current address, copied from the open SupporterAddress for search and display.
    postcode: str | None = Field(default=None, max_length=10)
    statement_preference: StatementPreference = Field(default=StatementPreference.PER_GIFT, sa_type=sa.String(16))
    # Set when merged: the old id keeps resolving to the survivor.
    merged_into_id: uuid.UUID | None = Field(default=None, foreign_key="supporters.id", index=True)
    # Set when erased (pseudonymised); what HMRC needs is kept until purge_after.
    erased_at: dt.datetime | None = utc_field()
    purge_after: dt.date | None = None
    created_at: dt.datetime = created_at_field()
    updated_at: dt.datetime = created_at_field()


class SupporterAddress(SQLModel, table=True):
    """Addresses with history: each gift uses the address in force on its date."""

    __tablename__ = "supporter_addresses"
    __table_args__ = (sa.Index("ix_supporter_addresses_supporter_id_valid_from", "supporter_id", "valid_from"),)

    id: uuid.UUID = id_field()
    supporter_id: uuid.UUID = Field(foreign_key="supporters.id")
    line1: str = Field(default="", max_length=100)
    line2: str = Field(default="", max_length=100)
    town: str = Field(default="", max_length=60)
    postcode: str = Field(default="", max_length=10)
    country: str = Field(default="GB", max_length=2)
    valid_from: dt.datetime = created_at_field()
    valid_to: dt.datetime | None = utc_field()
    source: str = Field(default="", max_length=32)


class ConsentChannel(StrEnum):
    EMAIL = "email"
    POST = "post"
    PHONE = "phone"


class ConsentStatus(StrEnum):
    PENDING = "pending"
    GRANTED = "granted"
    WITHDRAWN = "withdrawn"


class Consent(SQLModel, table=True):
    """Each change of consent is a row (provenance kept); the newest row per channel is in force."""

    __tablename__ = "consents"
    __table_args__ = (sa.Index("ix_consents_supporter_id_channel_at", "supporter_id", "channel", "at"),)

    id: uuid.UUID = id_field()
    supporter_id: uuid.UUID = Field(foreign_key="supporters.id")
    channel: ConsentChannel = Field(sa_type=sa.String(16))
    status: ConsentStatus = Field(sa_type=sa.String(16))
    at: dt.datetime = created_at_field()
    wording_version: str = Field(default="", max_length=64)
    # The words the person agreed to (`crm.service.email_updates_wording` on the forms, the subscribe page and its
    # email); none on consents recorded before they were kept, on withdrawals, and on staff's without words.
    wording_id: uuid.UUID | None = Field(default=None, foreign_key="wordings.id")
    # donate_form, shop, subscribe, staff, import, unsubscribe_link
    source: str = Field(max_length=32)
    evidence: dict[str, Any] = json_field()


class Interest(SQLModel, table=True):
    __tablename__ = "interests"

    id: uuid.UUID = id_field()
    supporter_id: uuid.UUID = Field(foreign_key="supporters.id", index=True)
    kind: str = Field(max_length=32)  # volunteering, events, ...
    source: str = Field(max_length=32)
    note: str = Field(default="", max_length=500)
    at: dt.datetime = created_at_field()


class DeclarationMethod(StrEnum):
    ONLINE = "online"
    WRITTEN = "written"
    ORAL = "oral"


class DeclarationScope(StrEnum):
    THIS_GIFT = "this_gift"
    FUTURE = "future"
    PAST_4_YEARS_AND_FUTURE = "past_4_years_and_future"
    PERIOD = "period"


# The evidence key of an oral declaration's audio recording: with it, the declaration is effective without a written
# record (HMRC; giftaid.eligibility reads the same key).
RECORDING_EVIDENCE = "recording_id"


class Wording(SQLModel, table=True):
    """The exact words a donor was shown or read when making a Gift Aid declaration (HMRC: keep the tax statement's
    wording and its version id) or giving a consent (UK GDPR: show what they agreed to), kept once per version and
    text. A version whose words change (the charity's name, say) gets a second row, so each declaration or consent
    points at the words it was really given."""

    __tablename__ = "wordings"
    __table_args__ = (sa.UniqueConstraint("version", "digest", name="uq_wordings_version_digest"),)

    id: uuid.UUID = id_field()
    version: str = Field(max_length=64)
    text: str = Field(sa_type=sa.Text)
    digest: str = Field(max_length=64)  # sha256 of the text, hex: the text itself is too long for a key
    first_used_at: dt.datetime = created_at_field()


class Declaration(SQLModel, table=True):
    """A Gift Aid declaration as given: the name and address on it are kept as they were."""

    __tablename__ = "declarations"
    # The void declarations (few): Gift Aid's adjustments start from these instead of every claimed gift.
    __table_args__ = (
        sa.Index(
            "ix_declarations_voided",
            "supporter_id",
            postgresql_where=sa.text("voided"),
            sqlite_where=sa.text("voided"),
        ),
    )

    id: uuid.UUID = id_field()
    supporter_id: uuid.UUID = Field(foreign_key="supporters.id", index=True)
    method: DeclarationMethod = Field(sa_type=sa.String(16))
    made_on: dt.date
    scope: DeclarationScope = Field(sa_type=sa.String(32))
    start: dt.date | None = None
    end: dt.date | None = None
    # For a this_gift declaration: the gift it covers (a payments id; crm does not import payments).
    gift_id: uuid.UUID | None = Field(default=None, index=True)
    title: str | None = Field(default=None, max_length=4)
    first_name: str = Field(max_length=35)
    last_name: str = Field(max_length=35)
    address_line1: str = Field(default="", max_length=100)
    address_line2: str = Field(default="", max_length=100)
    town: str = Field(default="", max_length=60)
    # HMRC's house name or number, derived from address_line1 at capture (≤ 40 characters).
    house: str = Field(default="", max_length=40)
    postcode: str = Field(default="", max_length=10)
    country: str = Field(default="GB", max_length=2)
    non_uk: bool = False
    wording_version: str = Field(default="", max_length=64)
    # The words themselves (none on declarations recorded before they were kept).
    wording_id: uuid.UUID | None = Field(default=None, foreign_key="wordings.id")
    source: str = Field(default="", max_length=32)
    evidence: dict[str, Any] = json_field()
    # Oral declarations: effective once the written confirmation is sent.
    confirmation_sent_on: dt.date | None = None
    cancelled_at: dt.datetime | None = utc_field()
    cancellation_effective_on: dt.date | None = None
    cancellation_reason: str = Field(default="", max_length=200)
    # Cancelled within 30 days of an oral declaration's confirmation: treated as never made.
    voided: bool = False
    recorded_by: str = Field(default="", max_length=254)
    created_at: dt.datetime = created_at_field()

    @property
    def recorded(self) -> bool:
        """An oral declaration with an auditable audio recording."""
        return (self.evidence or {}).get(RECORDING_EVIDENCE) is not None


class HistoryEntry(SQLModel, table=True):
    """One supporter's timeline. Every package writes here through `crm.service.record_history`."""

    __tablename__ = "history"
    __table_args__ = (
        sa.Index("ix_history_supporter_id_at_id", "supporter_id", "at", "id"),
        # One entry per business event: re-processing the same event writes nothing new.
        sa.UniqueConstraint("dedupe_key", name="uq_history_dedupe_key"),
    )

    id: uuid.UUID = id_field()
    supporter_id: uuid.UUID = Field(foreign_key="supporters.id")
    at: dt.datetime = Field(sa_type=UTCDateTime, nullable=False)
    type: str = Field(max_length=32)
    summary: str = Field(max_length=500)
    amount: int | None = Field(default=None, sa_type=sa.BigInteger)
    currency: str | None = Field(default=None, max_length=3)
    # Ids of our records (gift_id, refund_id, order_id, dispute_id, declaration_id, ...) and provider_ids.
    data: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType, nullable=False)
    dedupe_key: str | None = Field(default=None, max_length=200)
    created_at: dt.datetime = created_at_field()


class ReviewItem(SQLModel, table=True):
    """Something a person should look at (a different name on a known email, a missing instalment)."""

    __tablename__ = "review_items"

    id: uuid.UUID = id_field()
    supporter_id: uuid.UUID = Field(foreign_key="supporters.id", index=True)
    kind: str = Field(max_length=32)
    detail: str = Field(max_length=500)
    data: dict[str, Any] = json_field()
    dedupe_key: str | None = Field(default=None, max_length=200, unique=True)
    created_at: dt.datetime = created_at_field()
    resolved_at: dt.datetime | None = utc_field()
    resolved_by: str = Field(default="", max_length=254)


class PendingSubscription(SQLModel, table=True):
    """A "Subscribe for updates" request waiting for its confirmation link (double opt-in)."""

    __tablename__ = "pending_subscriptions"

    id: uuid.UUID = id_field()
    supporter_id: uuid.UUID = Field(foreign_key="supporters.id", index=True)
    consent_id: uuid.UUID = Field(foreign_key="consents.id")
    created_at: dt.datetime = created_at_field()
    expires_at: dt.datetime = created_at_field()
    confirmed_at: dt.datetime | None = utc_field()
    # The confirmation email was not sent, because when its job ran it was no longer wanted: `withdrawn` (they
    # asked us to stop after asking for it), `granted` (subscribed meanwhile) or `expired` (the link would be dead).
    skipped_at: dt.datetime | None = utc_field()
    skipped_reason: str | None = Field(default=None, max_length=32)
