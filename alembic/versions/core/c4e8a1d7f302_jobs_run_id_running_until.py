"""jobs.run_id, jobs.running_until: a job claimed apart from its work is held by one run until its time limit

Revision ID: c4e8a1d7f302
Revises: a7d3c5e9b214
Create Date: 2026-11-27 12:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

import core.db
from alembic import op

revision: str = "c4e8a1d7f302"
down_revision: str | Sequence[str] | None = "a7d3c5e9b214"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("run_id", sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column("running_until", core.db.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("running_until")
        batch_op.drop_column("run_id")
