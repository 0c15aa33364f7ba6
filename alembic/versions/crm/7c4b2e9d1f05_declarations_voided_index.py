"""declarations: partial index of the void declarations

Gift Aid's adjustments start from these (few) declarations' supporters instead of reading every claimed gift.

Revision ID: 7c4b2e9d1f05
Revises: a1c0ffee5ea1
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7c4b2e9d1f05"
down_revision: str | Sequence[str] | None = "a1c0ffee5ea1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_declarations_voided",
        "declarations",
        ["supporter_id"],
        postgresql_where=sa.text("voided"),
        sqlite_where=sa.text("voided"),
    )


def downgrade() -> None:
    op.drop_index("ix_declarations_voided", table_name="declarations")
