"""staff_users.totp_last_step: a TOTP code is accepted once (the last time step used is kept)

Revision ID: 3e1f7c9a2b64
Revises: 6b00a19039bd
Create Date: 2026-11-26 13:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '3e1f7c9a2b64'
down_revision: str | Sequence[str] | None = '6b00a19039bd'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('staff_users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('totp_last_step', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('staff_users', schema=None) as batch_op:
        batch_op.drop_column('totp_last_step')
