"""pending_subscriptions.skipped_at / skipped_reason: a confirmation email not sent because it was no longer wanted

The job sending a double opt-in email checks, when it runs (also on a retry), that the person has not withdrawn
since asking, is not subscribed already and that the link would not arrive expired; if so it sends nothing and
records when and why here (`withdrawn`, `granted`, `expired`).

Revision ID: e6a2c9f4b817
Revises: 9d4f6b2a8c31
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa

import core.db
from alembic import op

revision: str = "e6a2c9f4b817"
down_revision: str | Sequence[str] | None = "9d4f6b2a8c31"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable columns: added in place on both databases (no batch rebuild of the table on SQLite).
    op.add_column("pending_subscriptions", sa.Column("skipped_at", core.db.UTCDateTime(), nullable=True))
    op.add_column("pending_subscriptions", sa.Column("skipped_reason", sa.String(length=32), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE pending_subscriptions DROP COLUMN skipped_reason")
        op.execute("ALTER TABLE pending_subscriptions DROP COLUMN skipped_at")
    else:
        op.drop_column("pending_subscriptions", "skipped_reason")
        op.drop_column("pending_subscriptions", "skipped_at")
