"""orders.vat_rate_bp: the VAT rate an order was charged at, so its sale receipt states that rate, not today's

Orders recorded before stay NULL: their receipts fall back on the configured rate when they carried VAT.

Revision ID: 9e4a6c1d3b58
Revises: 8d3f5a2c6e71
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9e4a6c1d3b58"
down_revision: str | Sequence[str] | None = "8d3f5a2c6e71"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("vat_rate_bp", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("vat_rate_bp")
