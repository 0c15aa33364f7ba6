"""orders.duplicate_of_id: a basket paid a second time on another Checkout Session is recorded as a second order
(status `duplicate_payment`) pointing at the basket it paid for again, so finance can see and refund the money.

Revision ID: a3c7e2f41b90
Revises: 9e4a6c1d3b58
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "a3c7e2f41b90"
down_revision: str | Sequence[str] | None = "9e4a6c1d3b58"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("duplicate_of_id", sa.Uuid(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_orders_duplicate_of_id_orders"), "orders", ["duplicate_of_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_orders_duplicate_of_id_orders"), type_="foreignkey")
        batch_op.drop_column("duplicate_of_id")
