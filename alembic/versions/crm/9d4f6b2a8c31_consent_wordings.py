"""consents.wording_id: the exact words of each email consent, kept in `wordings`

A consent now points at the words the person agreed to (the donate and shop forms' email-updates box, the subscribe
page and its email), as Gift Aid declarations already do. Consents recorded before stay without them.

Revision ID: 9d4f6b2a8c31
Revises: 5b8e2d7c4a19
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "9d4f6b2a8c31"
down_revision: str | Sequence[str] | None = "5b8e2d7c4a19"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FOREIGN_KEY = "fk_consents_wording_id_wordings"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # As for declarations (5b8e2d7c4a19): SQLite adds a column with a named reference in place; a batch rebuild
        # of `consents` would trip the foreign key of `pending_subscriptions` pointing at it.
        op.execute(
            f"ALTER TABLE consents ADD COLUMN wording_id CHAR(32) CONSTRAINT {FOREIGN_KEY} REFERENCES wordings (id)"
        )
    else:
        op.add_column("consents", sa.Column("wording_id", sa.Uuid(), nullable=True))
        op.create_foreign_key(FOREIGN_KEY, "consents", "wordings", ["wording_id"], ["id"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE consents DROP COLUMN wording_id")
    else:
        op.drop_constraint(FOREIGN_KEY, "consents", type_="foreignkey")
        op.drop_column("consents", "wording_id")
