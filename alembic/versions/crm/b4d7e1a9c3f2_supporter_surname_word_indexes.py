"""supporters: search indexes on the later words of the surname (PostgreSQL)

Staff search finds a supporter by any word of the surname, not only its first: "Berg" finds Anna van der Berg,
"Smith" finds Sarah Jones-Smith. `crm.repository.search_supporters` matches each term as a prefix of the surname
from its second, third or fourth word on (words separated by spaces or hyphens; `crm.models.surname_from_word`),
and each of these expression indexes serves one position. A surname with fewer words is NULL there. They are not
partial indexes: PostgreSQL keeps no statistics on a partial index's expression, and without them it misjudged how
many rows a common later word matches. SQLite (the laptop default) scans.

Revision ID: b4d7e1a9c3f2
Revises: e6a2c9f4b817
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import op

revision: str = "b4d7e1a9c3f2"
down_revision: str | Sequence[str] | None = "e6a2c9f4b817"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported from crm.models: a migration keeps the schema of its day.
WORDS = (2, 3, 4)


def _from_word(word: int) -> str:
    return f"substring(translate(lower(last_name), '-', ' ') FROM '^(?:[^ ]* +){{{word - 1}}}(.*)$')"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for word in WORDS:
        op.execute(
            f"CREATE INDEX ix_supporters_search_surname_word{word} ON supporters ({_from_word(word)} text_pattern_ops)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for word in WORDS:
        op.execute(f"DROP INDEX ix_supporters_search_surname_word{word}")
