"""supporters.postcode: 10 characters, as every other postcode column

A donor abroad may have a postal code of 9 or 10 characters (`20500-0003`); the search copy on the supporter was 8,
so recording such a donor failed on PostgreSQL.

Revision ID: 3e8f1a2b4c6d
Revises: 7c4b2e9d1f05
Create Date: 2026-11-26
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3e8f1a2b4c6d"
down_revision: str | Sequence[str] | None = "7c4b2e9d1f05"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _width(old: int, new: int) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        op.alter_column(
            "supporters",
            "postcode",
            type_=sa.String(length=new),
            existing_type=sa.String(length=old),
            existing_nullable=True,
        )
        return
    # SQLite cannot alter a column, and rebuilding `supporters` would trip the foreign keys of every table pointing
    # at it. A declared length is only a name to SQLite (both are TEXT affinity, nothing stored changes), so the
    # table's declaration is edited in place: SQLite's documented procedure for changes of this kind, in this
    # migration's transaction.
    sql = bind.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'supporters'").scalar()
    changed = re.sub(rf"(\bpostcode\s+)VARCHAR\({old}\)", rf"\g<1>VARCHAR({new})", str(sql))
    if changed == sql:
        raise RuntimeError(f"supporters.postcode is not VARCHAR({old}) here: {sql}")
    version = int(bind.exec_driver_sql("PRAGMA schema_version").scalar() or 0)
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    bind.exec_driver_sql(
        "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'supporters'", (changed,)
    )
    bind.exec_driver_sql(f"PRAGMA schema_version = {version + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")


def upgrade() -> None:
    _width(8, 10)


def downgrade() -> None:
    _width(10, 8)
