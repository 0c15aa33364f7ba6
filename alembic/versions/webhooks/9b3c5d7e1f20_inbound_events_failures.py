"""inbound events: failures counted apart from runs

An event that waited for its object (one run an hour) had used up its retries by the time it failed once.

Revision ID: 9b3c5d7e1f20
Revises: 65aa1eeace47
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9b3c5d7e1f20"
down_revision: str | Sequence[str] | None = "65aa1eeace47"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbound_events") as batch_op:
        batch_op.add_column(sa.Column("failures", sa.Integer(), nullable=False, server_default="0"))
    # Events failed before this counted every run; a failed one had failed at least once.
    op.execute("UPDATE inbound_events SET failures = 1 WHERE status = 'failed'")


def downgrade() -> None:
    with op.batch_alter_table("inbound_events") as batch_op:
        batch_op.drop_column("failures")
