"""checkouts: which try at making the provider's page (its idempotency key moves on after an error answer)

Revision ID: 8d3f5a2c6e71
Revises: 7c2e4b9a1d60
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8d3f5a2c6e71"
down_revision: str | Sequence[str] | None = "7c2e4b9a1d60"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("checkouts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("provider_attempt", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("checkouts", schema=None) as batch_op:
        batch_op.drop_column("provider_attempt")
