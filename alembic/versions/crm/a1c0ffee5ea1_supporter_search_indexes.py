"""Prefix-search indexes for staff supporter search (PostgreSQL).

`crm.repository.search_supporters` matches each term as a prefix of lower(first_name), lower(last_name),
lower(email) or the postcode without spaces. `text_pattern_ops` lets a btree serve `LIKE 'abc%'` whatever the
database's collation. Expression indexes are invisible to alembic's autogenerate, so they live only here.
SQLite (the laptop default) scans; its tables are small.

Revision ID: a1c0ffee5ea1
Revises: fdc12f00693c
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from alembic import op

revision: str = "a1c0ffee5ea1"
down_revision: str | Sequence[str] | None = "fdc12f00693c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_supporters_search_first_name": "lower(first_name) text_pattern_ops",
    "ix_supporters_search_last_name": "lower(last_name) text_pattern_ops",
    "ix_supporters_search_email": "lower(email) text_pattern_ops",
    "ix_supporters_search_postcode": "lower(replace(postcode, ' ', '')) text_pattern_ops",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name, expression in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON supporters ({expression})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in INDEXES:
        op.execute(f"DROP INDEX {name}")
