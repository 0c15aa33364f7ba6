"""wordings: the exact words of each Gift Aid declaration, kept with their version

HMRC asks a charity to keep the tax statement's wording as the donor saw it, not only a version name. A declaration
now points at its words (`declarations.wording_id`); declarations recorded before stay without them.

Revision ID: 5b8e2d7c4a19
Revises: 3e8f1a2b4c6d
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import core.db

revision: str = "5b8e2d7c4a19"
down_revision: str | Sequence[str] | None = "3e8f1a2b4c6d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FOREIGN_KEY = "fk_declarations_wording_id_wordings"


def upgrade() -> None:
    op.create_table(
        "wordings",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("version", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("digest", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("first_used_at", core.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wordings")),
        sa.UniqueConstraint("version", "digest", name="uq_wordings_version_digest"),
    )
    if op.get_bind().dialect.name == "sqlite":
        # SQLite adds a column with a named reference in place; a batch rebuild of `declarations` would trip the
        # foreign keys of the tables pointing at it.
        op.execute(
            f"ALTER TABLE declarations ADD COLUMN wording_id CHAR(32) CONSTRAINT {FOREIGN_KEY} REFERENCES wordings (id)"
        )
    else:
        op.add_column("declarations", sa.Column("wording_id", sa.Uuid(), nullable=True))
        op.create_foreign_key(FOREIGN_KEY, "declarations", "wordings", ["wording_id"], ["id"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE declarations DROP COLUMN wording_id")
    else:
        op.drop_constraint(FOREIGN_KEY, "declarations", type_="foreignkey")
        op.drop_column("declarations", "wording_id")
    op.drop_table("wordings")
