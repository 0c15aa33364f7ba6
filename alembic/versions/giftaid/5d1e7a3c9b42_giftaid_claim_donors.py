"""giftaid claim donors: the donor details a claim sent, once per (claim, declaration), not on every claimed gift

A claim of a million gifts from 200,000 donors wrote the same name and address on each of a donor's gifts; the
claim's rows now carry the declaration id only, and the details are written once per declaration.

Revision ID: 5d1e7a3c9b42
Revises: 4a2c1aef86ed
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5d1e7a3c9b42"
down_revision: str | Sequence[str] | None = "4a2c1aef86ed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DETAILS = ["title", "first_name", "last_name", "house", "postcode", "overseas"]


def upgrade() -> None:
    op.create_table(
        "giftaid_claim_donors",
        sa.Column("claim_id", sa.Uuid(), nullable=False),
        sa.Column("declaration_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=4), nullable=True),
        sa.Column("first_name", sa.String(length=35), nullable=False),
        sa.Column("last_name", sa.String(length=35), nullable=False),
        sa.Column("house", sa.String(length=40), nullable=False),
        sa.Column("postcode", sa.String(length=10), nullable=False),
        sa.Column("overseas", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("claim_id", "declaration_id", name=op.f("pk_giftaid_claim_donors")),
    )
    op.create_index("ix_giftaid_claim_donors_declaration_id", "giftaid_claim_donors", ["declaration_id"])
    # A claim wrote one declaration's details on each of its gifts alike: any row of the pair holds them.
    columns = ", ".join(DETAILS)
    op.execute(
        f"INSERT INTO giftaid_claim_donors (claim_id, declaration_id, {columns}) "
        f"SELECT claim_id, declaration_id, {', '.join(f'MIN({c})' if c != 'overseas' else 'MAX(CASE WHEN overseas THEN 1 ELSE 0 END) = 1' for c in DETAILS)} "  # noqa: E501
        "FROM giftaid_claim_gifts WHERE declaration_id IS NOT NULL GROUP BY claim_id, declaration_id"
    )
    with op.batch_alter_table("giftaid_claim_gifts", schema=None) as batch_op:
        for column in DETAILS:
            batch_op.drop_column(column)


def downgrade() -> None:
    with op.batch_alter_table("giftaid_claim_gifts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("title", sa.String(length=4), nullable=True))
        batch_op.add_column(sa.Column("first_name", sa.String(length=35), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("last_name", sa.String(length=35), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("house", sa.String(length=40), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("postcode", sa.String(length=10), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("overseas", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute(
        "UPDATE giftaid_claim_gifts SET "
        + ", ".join(
            f"{c} = (SELECT d.{c} FROM giftaid_claim_donors d WHERE d.claim_id = giftaid_claim_gifts.claim_id "
            "AND d.declaration_id = giftaid_claim_gifts.declaration_id)"
            for c in DETAILS
        )
        + " WHERE declaration_id IS NOT NULL"
    )
    op.drop_table("giftaid_claim_donors")
