"""gifts: partial index of the gifts with money returned

Gift Aid's adjustments start from these (few) gifts instead of reading every claimed gift.

Revision ID: 5d1e0a7c3b92
Revises: cb5a4396a9e3
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5d1e0a7c3b92"
down_revision: str | Sequence[str] | None = "cb5a4396a9e3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# payments.models.MONEY_RETURNED as it was when this migration was written.
MONEY_RETURNED = "returned_amount > 0 OR status = 'reversed'"


def upgrade() -> None:
    op.create_index(
        "ix_gifts_money_returned",
        "gifts",
        ["id"],
        postgresql_where=sa.text(MONEY_RETURNED),
        sqlite_where=sa.text(MONEY_RETURNED),
    )


def downgrade() -> None:
    op.drop_index("ix_gifts_money_returned", table_name="gifts")
