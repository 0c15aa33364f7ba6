"""giftaid claim gifts keyed by (claim, gift): a claim writes its rows in gift id order

Both keys, (claim, gift) and the unique (gift, live), then grow in order as a claim is written; the files read the
lines in line_no order with a sort.

Revision ID: 4a2c1aef86ed
Revises: ffc817d02a33
Create Date: 2026-11-26 10:05:00.000000
"""

from collections.abc import Sequence

from alembic import op


revision: str = '4a2c1aef86ed'
down_revision: str | Sequence[str] | None = 'ffc817d02a33'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('giftaid_claim_gifts', schema=None) as batch_op:
        batch_op.drop_constraint('pk_giftaid_claim_gifts', type_='primary')
        batch_op.create_primary_key('pk_giftaid_claim_gifts', ['claim_id', 'gift_id'])


def downgrade() -> None:
    with op.batch_alter_table('giftaid_claim_gifts', schema=None) as batch_op:
        batch_op.drop_constraint('pk_giftaid_claim_gifts', type_='primary')
        batch_op.create_primary_key('pk_giftaid_claim_gifts', ['claim_id', 'line_no', 'gift_id'])
