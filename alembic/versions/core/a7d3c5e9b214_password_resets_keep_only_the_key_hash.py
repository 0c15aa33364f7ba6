"""password_resets keep only the SHA-256 of a reset's key: rows written as the key itself are dropped

Until this revision `password_resets.token_hash` held the reset's key itself, and the key signed with the app
secret (kept in `app_secrets` when `[web] secret_key` is not set) reset the password: whoever could read the
database could take over a staff account with an outstanding reset. From now on the row keeps only the key's
SHA-256 (core.auth.issue_password_reset_link). The rows written before cannot be told apart or hashed usefully (the
old key also sits in its email job's arguments), so they are deleted: a reset lasts an hour, and whoever was
waiting for one asks again. Their email jobs still pending have nothing left to send (and take the old argument),
so they are marked done. The same on downgrade: the old code cannot use a row written by the new one.

No schema change: the column already has the name and width of a SHA-256 hex digest.

Revision ID: a7d3c5e9b214
Revises: 3e1f7c9a2b64
Create Date: 2026-11-27 08:00:00.000000
"""

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db

revision: str = 'a7d3c5e9b214'
down_revision: str | Sequence[str] | None = '3e1f7c9a2b64'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_resets = sa.table('password_resets', sa.column('token_hash', sa.String))
_jobs = sa.table(
    'jobs',
    sa.column('actor_name', sa.String),
    sa.column('status', sa.String),
    sa.column('done_at', core.db.UTCDateTime()),
)


def _drop_outstanding_resets() -> None:
    op.execute(sa.delete(_resets))
    op.execute(
        sa.update(_jobs)
        .where(_jobs.c.actor_name == 'core.send_password_reset', _jobs.c.status == 'pending')
        .values(status='done', done_at=dt.datetime.now(dt.UTC))
    )


def upgrade() -> None:
    _drop_outstanding_resets()


def downgrade() -> None:
    _drop_outstanding_resets()
