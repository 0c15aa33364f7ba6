"""order_returns: each return of shirts staff record, dated, so the journal gives back the partner share it changes
on the day it was recorded (a return recorded after its refund was exported no longer moves that refund's postings,
and a return whose money never goes back reaches the books). Returns recorded before this table existed are kept
as one return per order line, dated the order's last change (the best date there is for them).

Revision ID: d4a9c2e7f1b3
Revises: b8e2d4f6a1c3
Create Date: 2026-11-28
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa

import core.db
from alembic import op

revision: str = "d4a9c2e7f1b3"
down_revision: str | Sequence[str] | None = "b8e2d4f6a1c3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    returns = op.create_table(
        "order_returns",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("order_line_id", sa.Uuid(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("recorded_at", core.db.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"], name=op.f("fk_order_returns_order_id_orders")),
        sa.ForeignKeyConstraint(
            ["order_line_id"], ["order_lines.id"], name=op.f("fk_order_returns_order_line_id_order_lines")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_returns")),
    )
    with op.batch_alter_table("order_returns", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_order_returns_order_id"), ["order_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_order_returns_recorded_at"), ["recorded_at"], unique=False)
    lines = sa.table(
        "order_lines",
        sa.column("id", sa.Uuid()),
        sa.column("order_id", sa.Uuid()),
        sa.column("refunded_quantity", sa.Integer()),
    )
    orders = sa.table("orders", sa.column("id", sa.Uuid()), sa.column("updated_at", core.db.UTCDateTime()))
    earlier = op.get_bind().execute(
        sa.select(lines.c.id, lines.c.order_id, lines.c.refunded_quantity, orders.c.updated_at)
        .join(orders, orders.c.id == lines.c.order_id)
        .where(lines.c.refunded_quantity > 0)
    )
    rows = [
        {"id": uuid.uuid4(), "order_id": order_id, "order_line_id": line_id, "quantity": quantity, "recorded_at": at}
        for line_id, order_id, quantity, at in earlier
    ]
    if rows:
        op.bulk_insert(returns, rows)


def downgrade() -> None:
    with op.batch_alter_table("order_returns", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_order_returns_recorded_at"))
        batch_op.drop_index(batch_op.f("ix_order_returns_order_id"))
    op.drop_table("order_returns")
