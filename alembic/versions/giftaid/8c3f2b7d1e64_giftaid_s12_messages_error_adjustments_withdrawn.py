"""giftaid: a kept message's error (a failed attempt tried again); an adjustment withdrawn (a dispute won)

Revision ID: 8c3f2b7d1e64
Revises: 5d1e7a3c9b42
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa

import core.db
from alembic import op

revision: str = "8c3f2b7d1e64"
down_revision: str | Sequence[str] | None = "5d1e7a3c9b42"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("giftaid_messages") as batch:
        batch.add_column(sa.Column("error", sa.String(length=500), nullable=False, server_default=""))
    with op.batch_alter_table("giftaid_adjustments") as batch:
        batch.add_column(sa.Column("withdrawn_at", core.db.UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("withdrawn_reason", sa.String(length=300), nullable=False, server_default=""))
        batch.add_column(sa.Column("owed_noted_at", core.db.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("giftaid_adjustments") as batch:
        batch.drop_column("owed_noted_at")
        batch.drop_column("withdrawn_reason")
        batch.drop_column("withdrawn_at")
    with op.batch_alter_table("giftaid_messages") as batch:
        batch.drop_column("error")
