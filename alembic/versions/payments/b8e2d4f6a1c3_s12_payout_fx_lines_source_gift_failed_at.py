"""Payouts: where their lines were read from (`lines_from_provider_at`), and a GoCardless payout converted to
another currency (`fx_currency`, `fx_amount`, `exchange_rate`, `exchange_rate_estimated`); gifts: when a Direct
Debit's failure happened (`failed_at`, the provider's event time), so a late failure found out later is dated by it.

Revision ID: b8e2d4f6a1c3
Revises: a3c7e2f41b90
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op
from core.db import UTCDateTime

revision: str = "b8e2d4f6a1c3"
down_revision: str | Sequence[str] | None = "a3c7e2f41b90"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payouts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lines_from_provider_at", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("fx_currency", sa.String(length=3), nullable=True))
        batch_op.add_column(sa.Column("fx_amount", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("exchange_rate", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("exchange_rate_estimated", sa.Boolean(), nullable=True))
    with op.batch_alter_table("gifts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failed_at", UTCDateTime(), nullable=True))
    # Payouts the provider reported with their lines loaded read them from the provider (as the code did before).
    op.execute("UPDATE payouts SET lines_from_provider_at = lines_loaded_at WHERE source = 'api'")


def downgrade() -> None:
    with op.batch_alter_table("gifts", schema=None) as batch_op:
        batch_op.drop_column("failed_at")
    with op.batch_alter_table("payouts", schema=None) as batch_op:
        batch_op.drop_column("exchange_rate_estimated")
        batch_op.drop_column("exchange_rate")
        batch_op.drop_column("fx_amount")
        batch_op.drop_column("fx_currency")
        batch_op.drop_column("lines_from_provider_at")
