"""jobs.run_host, jobs.run_process: a claim names the process holding it, so a broker-less process starting up
ends only the claims of its machine's processes that have exited

Revision ID: e2b7d4f1a903
Revises: c4e8a1d7f302
Create Date: 2026-11-27 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "e2b7d4f1a903"
down_revision: str | Sequence[str] | None = "c4e8a1d7f302"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("run_host", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("run_process", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("run_process")
        batch_op.drop_column("run_host")
