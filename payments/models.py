"""Money received and returned: checkouts, gifts, regular gifts, refunds, disputes, shop orders, payouts.

Money is integer minor units (`amount`, `*_amount`) with `currency` (ISO, upper case).
Every provider id names its provider and object and is unique, so webhook effects are idempotent on it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from core.clock import utc_now
from core.db import UTCDateTime, created_at_field, id_field, json_field, utc_field


def money_field(default: int | None = 0) -> Any:
    return Field(default=default, sa_type=sa.BigInteger, nullable=default is None)


class Provider(StrEnum):
    STRIPE = "stripe"
    GOCARDLESS = "gocardless"
    MANUAL = "manual"


class Method(StrEnum):
    CARD = "card"
    DIRECT_DEBIT = "direct_debit"
    CASH = "cash"
    CHEQUE = "cheque"


class Frequency(StrEnum):
    ONCE = "once"
    MONTHLY = "monthly"


class CheckoutKind(StrEnum):
    DONATION = "donation"
    SHOP = "shop"


class CheckoutStatus(StrEnum):
    PENDING = "pending"  # recorded, provider page not created yet
    OPEN = "open"  # provider page created, donor sent there
    COMPLETED = "completed"
    EXPIRED = "expired"
    FAILED = "failed"
    # Closed by Giving before the donor paid: the supporter's data was erased (its provider page is expired by the
    # job `payments.close_checkout`). A completion that still arrives records the money without their details and
    # stops at once any regular gift it started (docs/payments.md, "Checkouts of an erased supporter").
    CANCELLED = "cancelled"


class Checkout(SQLModel, table=True):
    """Recorded before the donor is sent to the provider, so the webhook needs nothing from the provider
    to know who gave what, for which appeal, under which declaration."""

    __tablename__ = "checkouts"

    id: uuid.UUID = id_field()
    kind: CheckoutKind = Field(sa_type=sa.String(16))
    supporter_id: uuid.UUID = Field(foreign_key="supporters.id", index=True)
    amount: int = money_field()
    currency: str = Field(default="GBP", max_length=3)
    frequency: Frequency = Field(default=Frequency.ONCE, sa_type=sa.String(16))
    method: Method = Field(default=Method.CARD, sa_type=sa.String(16))
    appeal: str | None = Field(default=None, max_length=64)
    declaration_id: uuid.UUID | None = Field(default=None, foreign_key="declarations.id")
    order_id: uuid.UUID | None = Field(default=None, foreign_key="orders.id")
    # Name and address as given on the form (a gift keeps them).
    donor: dict[str, Any] = json_field()
    status: CheckoutStatus = Field(default=CheckoutStatus.PENDING, sa_type=sa.String(16))
    provider: Provider = Field(sa_type=sa.String(16))
    stripe_checkout_session_id: str | None = Field(default=None, max_length=255, unique=True)
    gocardless_billing_request_id: str | None = Field(default=None, max_length=64, unique=True)
    redirect_url: str | None = Field(default=None, max_length=2000)
    # Which try at making the provider's page: a try the provider answered with an error moves it on, so "Try again"
    # sends a new idempotency key (Stripe keeps and replays a 500 under the old one for a day).
    provider_attempt: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    created_at: dt.datetime = created_at_field()
    completed_at: dt.datetime | None = utc_field()


class GiftStatus(StrEnum):
    PENDING = "pending"  # e.g. a Direct Debit payment created, not yet confirmed
    PAID = "paid"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REVERSED = "reversed"  # late failure or chargeback after the money arrived


class DonorType(StrEnum):
    INDIVIDUAL = "individual"
    COMPANY = "company"


# A gift with money returned: part or all refunded, or reversed (`GiftStatus.REVERSED`). The predicate of the partial
# index `ix_gifts_money_returned`; a query uses that index only when it says the same.
MONEY_RETURNED = "returned_amount > 0 OR status = 'reversed'"


class Gift(SQLModel, table=True):
    """One payment of money given: a one-off gift, one regular instalment, or the donation line of a basket."""

    __tablename__ = "gifts"
    __table_args__ = (
        sa.Index("ix_gifts_supporter_id_received_at", "supporter_id", "received_at"),
        sa.Index("ix_gifts_status_received_on", "status", "received_on"),
        # The gifts that had money returned (refunded, charged back, a lost dispute, a late failure): Gift Aid's
        # adjustments start from these few instead of every claimed gift (giftaid.repository.returned_since_claim).
        sa.Index(
            "ix_gifts_money_returned",
            "id",
            postgresql_where=sa.text(MONEY_RETURNED),
            sqlite_where=sa.text(MONEY_RETURNED),
        ),
    )

    id: uuid.UUID = id_field()
    supporter_id: uuid.UUID = Field(foreign_key="supporters.id")
    amount: int = money_field()
    currency: str = Field(default="GBP", max_length=3)
    status: GiftStatus = Field(default=GiftStatus.PENDING, sa_type=sa.String(16))
    provider: Provider = Field(sa_type=sa.String(16))
    method: Method = Field(sa_type=sa.String(16))
    donor_type: DonorType = Field(default=DonorType.INDIVIDUAL, sa_type=sa.String(16))
    # When the provider says the money was received (UTC), and its UK calendar date for Gift Aid.
    received_at: dt.datetime | None = utc_field()
    received_on: dt.date | None = None
    appeal: str | None = Field(default=None, max_length=64, index=True)
    regular_gift_id: uuid.UUID | None = Field(default=None, foreign_key="regular_gifts.id", index=True)
    order_id: uuid.UUID | None = Field(default=None, foreign_key="orders.id", index=True)
    checkout_id: uuid.UUID | None = Field(default=None, foreign_key="checkouts.id", index=True)
    # The declaration given with the gift, if any (eligibility looks at every declaration in force).
    declaration_id: uuid.UUID | None = Field(default=None, foreign_key="declarations.id")
    # Name and address as given with the gift.
    donor: dict[str, Any] = json_field()
    # Refunds, lost disputes and chargebacks: what was returned of this gift.
    returned_amount: int = money_field()
    # Benefits to the donor (§1B relevant-value test): value in pence and what it was.
    benefit_amount: int = money_field()
    benefit_description: str = Field(default="", max_length=200)
    fee_amount: int | None = money_field(None)
    failure_reason: str = Field(default="", max_length=500)
    # When the provider failed it (a Direct Debit `failed` event's own time): a late failure found out later (the
    # payment proved paid after its failure was processed) is dated by the failure, not by the proof.
    failed_at: dt.datetime | None = utc_field()
    # A regular instalment's due date (invoice date, Direct Debit charge date), kept for failed ones too:
    # the latest instalment decides whether the regular gift is in arrears.
    due_on: dt.date | None = None
    stripe_checkout_session_id: str | None = Field(default=None, max_length=255, unique=True)
    stripe_payment_intent_id: str | None = Field(default=None, max_length=255, unique=True)
    stripe_charge_id: str | None = Field(default=None, max_length=255, unique=True)
    stripe_invoice_id: str | None = Field(default=None, max_length=255, unique=True)
    stripe_subscription_id: str | None = Field(default=None, max_length=255, index=True)
    gocardless_payment_id: str | None = Field(default=None, max_length=64, unique=True)
    gocardless_mandate_id: str | None = Field(default=None, max_length=64, index=True)
    gocardless_subscription_id: str | None = Field(default=None, max_length=64, index=True)
    created_at: dt.datetime = created_at_field()
    updated_at: dt.datetime = created_at_field()


def money_returned() -> sa.ColumnElement[Any]:
    """SQL for the money a gift gave back: all of it when reversed (late failure, chargeback), whatever
    `returned_amount` says; else `returned_amount` (refunds, lost disputes)."""
    gifts = Gift.__table__  # type: ignore[attr-defined]
    return sa.case((gifts.c.status == GiftStatus.REVERSED.value, gifts.c.amount), else_=gifts.c.returned_amount)


class RegularGiftStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    IN_ARREARS = "in_arrears"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    FINISHED = "finished"


class RegularGift(SQLModel, table=True):
    """One Stripe subscription, or one GoCardless mandate with its subscription; each instalment is a Gift."""

    __tablename__ = "regular_gifts"

    id: uuid.UUID = id_field()
    supporter_id: uuid.UUID = Field(foreign_key="supporters.id", index=True)
    amount: int = money_field()
    currency: str = Field(default="GBP", max_length=3)
    interval: str = Field(default="monthly", max_length=16)
    provider: Provider = Field(sa_type=sa.String(16))
    method: Method = Field(sa_type=sa.String(16))
    status: RegularGiftStatus = Field(default=RegularGiftStatus.PENDING, sa_type=sa.String(16))
    appeal: str | None = Field(default=None, max_length=64)
    declaration_id: uuid.UUID | None = Field(default=None, foreign_key="declarations.id")
    checkout_id: uuid.UUID | None = Field(default=None, foreign_key="checkouts.id")
    donor: dict[str, Any] = json_field()
    started_at: dt.datetime | None = utc_field()
    ended_at: dt.datetime | None = utc_field()
    next_due_on: dt.date | None = None
    last_paid_on: dt.date | None = None
    failure_reason: str = Field(default="", max_length=500)
    # The provider's timestamp of the newest status we applied: older snapshots never overwrite it.
    status_changed_at: dt.datetime | None = utc_field()
    # Staff (or an erasure) asked us to stop it: the `payments.cancel_regular_gift` job tells the provider.
    cancel_requested_at: dt.datetime | None = utc_field()
    cancel_requested_by: str | None = Field(default=None, max_length=255)
    stripe_subscription_id: str | None = Field(default=None, max_length=255, unique=True)
    stripe_customer_id: str | None = Field(default=None, max_length=255, index=True)
    gocardless_mandate_id: str | None = Field(default=None, max_length=64, index=True)
    gocardless_subscription_id: str | None = Field(default=None, max_length=64, unique=True)
    gocardless_customer_id: str | None = Field(default=None, max_length=64, index=True)
    created_at: dt.datetime = created_at_field()
    updated_at: dt.datetime = created_at_field()


class RefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Refund(SQLModel, table=True):
    """Money given back. On a mixed basket `gift_amount` + `order_amount` = `amount` (the allocation)."""

    __tablename__ = "refunds"

    id: uuid.UUID = id_field()
    supporter_id: uuid.UUID = Field(foreign_key="supporters.id", index=True)
    gift_id: uuid.UUID | None = Field(default=None, foreign_key="gifts.id", index=True)
    order_id: uuid.UUID | None = Field(default=None, foreign_key="orders.id", index=True)
    amount: int = money_field()
    gift_amount: int = money_field()
    order_amount: int = money_field()
    currency: str = Field(default="GBP", max_length=3)
    status: RefundStatus = Field(default=RefundStatus.PENDING, sa_type=sa.String(16))
    provider: Provider = Field(sa_type=sa.String(16))
    reason: str = Field(default="", max_length=200)
    allocated_by: str = Field(default="rule", max_length=254)
    refunded_at: dt.datetime | None = utc_field()
    stripe_refund_id: str | None = Field(default=None, max_length=255, unique=True)
    stripe_charge_id: str | None = Field(default=None, max_length=255, index=True)
    gocardless_refund_id: str | None = Field(default=None, max_length=64, unique=True)
    gocardless_payment_id: str | None = Field(default=None, max_length=64, index=True)
    created_at: dt.datetime = created_at_field()
    updated_at: dt.datetime = created_at_field()


class DisputeStatus(StrEnum):
    OPEN = "open"
    WON = "won"
    LOST = "lost"
    # Stripe's dispute prevention stopped it before it became a chargeback: blocked (the money stays), or resolved
    # by a refund, which Stripe records (and we with it) as a refund of the charge. The dispute takes no money.
    PREVENTED = "prevented"


class Dispute(SQLModel, table=True):
    """A card dispute, or a Direct Debit chargeback / late failure (which reverse the gift)."""

    __tablename__ = "disputes"

    id: uuid.UUID = id_field()
    supporter_id: uuid.UUID = Field(foreign_key="supporters.id", index=True)
    gift_id: uuid.UUID | None = Field(default=None, foreign_key="gifts.id", index=True)
    order_id: uuid.UUID | None = Field(default=None, foreign_key="orders.id", index=True)
    kind: str = Field(default="dispute", max_length=32)  # dispute, chargeback, late_failure
    amount: int = money_field()
    currency: str = Field(default="GBP", max_length=3)
    status: DisputeStatus = Field(default=DisputeStatus.OPEN, sa_type=sa.String(16))
    reason: str = Field(default="", max_length=200)
    funds_withdrawn: bool = False
    provider: Provider = Field(sa_type=sa.String(16))
    opened_at: dt.datetime | None = utc_field()
    closed_at: dt.datetime | None = utc_field()
    stripe_dispute_id: str | None = Field(default=None, max_length=255, unique=True)
    stripe_charge_id: str | None = Field(default=None, max_length=255, index=True)
    gocardless_payment_id: str | None = Field(default=None, max_length=64, unique=True)
    created_at: dt.datetime = created_at_field()
    updated_at: dt.datetime = created_at_field()


class PartnerCampaign(SQLModel, table=True):
    """A partner whose shirts we sell (e.g. Love Music Hate Racism): their share per shirt or % of net."""

    __tablename__ = "partner_campaigns"

    id: uuid.UUID = id_field()
    code: str = Field(max_length=32, unique=True)
    name: str = Field(max_length=100)
    partner_name: str = Field(max_length=100)
    share_kind: str = Field(default="per_item", max_length=16)  # per_item | percent_of_net
    # Pence per item, or basis points of the net for percent_of_net.
    share_value: int = 0
    created_at: dt.datetime = created_at_field()


class Product(SQLModel, table=True):
    __tablename__ = "products"

    id: uuid.UUID = id_field()
    code: str = Field(max_length=32, unique=True)
    name: str = Field(max_length=100)
    description: str = Field(default="", max_length=500)
    partner_campaign_id: uuid.UUID | None = Field(default=None, foreign_key="partner_campaigns.id")
    active: bool = True
    created_at: dt.datetime = created_at_field()


class Sku(SQLModel, table=True):
    """A product in one size: what the shop sells and counts stock of."""

    __tablename__ = "skus"

    id: uuid.UUID = id_field()
    sku: str = Field(max_length=64, unique=True)
    product_id: uuid.UUID = Field(foreign_key="products.id", index=True)
    size: str = Field(max_length=16)
    price: int = money_field()
    currency: str = Field(default="GBP", max_length=3)
    stock: int = 0
    position: int = 0


class OrderStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"
    # The basket paid again on another Checkout Session (open in two tabs, both paid): money held for the donor,
    # to be refunded (or kept as they wish). Never a sale: no stock, no shirts sent, no sale receipt.
    DUPLICATE_PAYMENT = "duplicate_payment"


class Order(SQLModel, table=True):
    """A shop basket: its shirt lines and, optionally, a donation line (recorded as a Gift)."""

    __tablename__ = "orders"

    id: uuid.UUID = id_field()
    supporter_id: uuid.UUID = Field(foreign_key="supporters.id", index=True)
    status: OrderStatus = Field(default=OrderStatus.PENDING, sa_type=sa.String(24))
    fulfilled_at: dt.datetime | None = utc_field()
    currency: str = Field(default="GBP", max_length=3)
    goods_amount: int = money_field()
    vat_amount: int = money_field()
    # The VAT rate the basket was priced at (basis points; `[shop] vat_rate_bp` then). None: recorded before it was
    # kept.
    vat_rate_bp: int | None = None
    donation_amount: int = money_field()
    refunded_amount: int = money_field()
    paid_at: dt.datetime | None = utc_field()
    stripe_checkout_session_id: str | None = Field(default=None, max_length=255, unique=True)
    stripe_payment_intent_id: str | None = Field(default=None, max_length=255, unique=True)
    stripe_charge_id: str | None = Field(default=None, max_length=255, unique=True)
    # A `duplicate_payment` order: the basket it paid for a second time (whose lines say what was in it).
    duplicate_of_id: uuid.UUID | None = Field(default=None, foreign_key="orders.id")
    created_at: dt.datetime = created_at_field()
    updated_at: dt.datetime = created_at_field()


class OrderLine(SQLModel, table=True):
    __tablename__ = "order_lines"

    id: uuid.UUID = id_field()
    order_id: uuid.UUID = Field(foreign_key="orders.id", index=True)
    sku: str = Field(max_length=64)
    product_name: str = Field(max_length=100)
    size: str = Field(max_length=16)
    quantity: int
    unit_price: int = money_field()
    vat_amount: int = money_field()
    refunded_quantity: int = 0
    partner_campaign_id: uuid.UUID | None = Field(default=None, foreign_key="partner_campaigns.id")
    partner_share_amount: int = money_field()


class OrderReturn(SQLModel, table=True):
    """Shirts of an order line sent back, as staff recorded them (`payments.shop.record_returns`; the line's
    `refunded_quantity` is their sum). Dated, so the journal gives back the partner share they change on the day
    they were recorded, and never moves a line already exported (payments/journal.py, `return_postings`)."""

    __tablename__ = "order_returns"

    id: uuid.UUID = id_field()
    order_id: uuid.UUID = Field(foreign_key="orders.id", index=True)
    order_line_id: uuid.UUID = Field(foreign_key="order_lines.id")
    quantity: int
    recorded_at: dt.datetime = Field(default_factory=utc_now, sa_type=UTCDateTime, nullable=False, index=True)


class PayoutStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    FAILED = "failed"


class Reconciliation(StrEnum):
    PENDING = "pending"
    RECONCILED = "reconciled"
    UNRECONCILED = "unreconciled"


class Payout(SQLModel, table=True):
    __tablename__ = "payouts"
    __table_args__ = (sa.UniqueConstraint("provider", "provider_payout_id"),)

    id: uuid.UUID = id_field()
    provider: Provider = Field(sa_type=sa.String(16))
    provider_payout_id: str = Field(max_length=255)
    amount: int = money_field()
    currency: str = Field(default="GBP", max_length=3)
    status: PayoutStatus = Field(default=PayoutStatus.PENDING, sa_type=sa.String(16))
    reconciliation: Reconciliation = Field(default=Reconciliation.PENDING, sa_type=sa.String(16))
    discrepancy: int = money_field()
    arrival_date: dt.date | None = None
    paid_at: dt.datetime | None = utc_field()
    reconciled_at: dt.datetime | None = utc_field()
    source: str = Field(default="api", max_length=16)  # api | csv
    # The bank statement reference (GoCardless `reference`, Stripe `statement_descriptor`).
    reference: str = Field(default="", max_length=255)
    # When its lines were last loaded from the provider or a CSV (None: reconciliation not complete yet).
    lines_loaded_at: dt.datetime | None = utc_field()
    # When its lines were last read from the provider itself (None: none yet, or only from files, which may hold a
    # part of the payout: the provider's list completes them once it is final).
    lines_from_provider_at: dt.datetime | None = utc_field()
    # A GoCardless payout converted to another currency before it reached the bank (its `fx`): `amount`/`currency`
    # are what GoCardless settled; `fx_amount` (minor units of `fx_currency`) is what reached the bank, at
    # `exchange_rate` (a decimal string, never a float), `exchange_rate_estimated` while GoCardless has only its
    # estimate. All None for a payout paid in its own currency.
    fx_currency: str | None = Field(default=None, max_length=3)
    fx_amount: int | None = money_field(None)
    exchange_rate: str | None = Field(default=None, max_length=32)
    exchange_rate_estimated: bool | None = None
    created_at: dt.datetime = created_at_field()
    updated_at: dt.datetime = created_at_field()


class PayoutLine(SQLModel, table=True):
    """One balance transaction or payout item, and what it settles (empty while unmatched)."""

    __tablename__ = "payout_lines"
    __table_args__ = (sa.UniqueConstraint("payout_id", "provider_line_id"),)

    id: uuid.UUID = id_field()
    payout_id: uuid.UUID = Field(foreign_key="payouts.id", index=True)
    # Indexed alone too: a Stripe import and each list load look a balance transaction up in every payout
    # (`reconcile.lines_recorded`: it belongs to one).
    provider_line_id: str = Field(max_length=255, index=True)
    kind: str = Field(max_length=32)  # gift, order, refund, dispute, fee, chargeback, late_failure, ...
    amount: int = money_field()
    fee: int = money_field()
    net: int = money_field()
    currency: str = Field(default="GBP", max_length=3)
    source_id: str | None = Field(default=None, max_length=255, index=True)  # ch_..., re_..., PM...
    gift_id: uuid.UUID | None = Field(default=None, foreign_key="gifts.id", index=True)
    order_id: uuid.UUID | None = Field(default=None, foreign_key="orders.id")
    refund_id: uuid.UUID | None = Field(default=None, foreign_key="refunds.id")
    dispute_id: uuid.UUID | None = Field(default=None, foreign_key="disputes.id")
    fee_for: str | None = Field(default=None, max_length=255)
    matched_at: dt.datetime | None = Field(default=None, sa_type=UTCDateTime)
    position: int = 0
    # The provider's own classification (Stripe reporting_category, GoCardless item type).
    provider_type: str = Field(default="", max_length=64)
    # A second provider id that also identifies what the line settles: a charge's payment intent,
    # a GoCardless refund's payment, a Stripe refund's or dispute's charge.
    related_id: str | None = Field(default=None, max_length=255, index=True)
    # GoCardless amounts exactly as given (decimal pence, e.g. "-12.5"); `amount` is its share of the
    # once-rounded payout total.
    amount_exact: str | None = Field(default=None, max_length=32)
    description: str = Field(default="", max_length=255)
