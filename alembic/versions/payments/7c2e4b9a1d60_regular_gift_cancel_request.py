"""regular gifts: who asked us to cancel one, and when

Staff (or an erasure) cancel a regular gift through Giving; the job that tells Stripe or GoCardless reads these.

Revision ID: 7c2e4b9a1d60
Revises: 5d1e0a7c3b92
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db

revision: str = "7c2e4b9a1d60"
down_revision: str | Sequence[str] | None = "5d1e0a7c3b92"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("regular_gifts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cancel_requested_at", core.db.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("cancel_requested_by", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("regular_gifts", schema=None) as batch_op:
        batch_op.drop_column("cancel_requested_by")
        batch_op.drop_column("cancel_requested_at")
