"""payout_lines: an index on provider_line_id alone

A balance transaction belongs to one payout: a Stripe import and each load of Stripe's list look its id up in every
payout (`payments.reconcile.lines_recorded`), which the unique (payout_id, provider_line_id) key cannot serve.

Revision ID: e7b1c3d5f9a2
Revises: d4a9c2e7f1b3
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "e7b1c3d5f9a2"
down_revision: str | Sequence[str] | None = "d4a9c2e7f1b3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_payout_lines_provider_line_id", "payout_lines", ["provider_line_id"])


def downgrade() -> None:
    op.drop_index("ix_payout_lines_provider_line_id", table_name="payout_lines")
