"""Staff search finds a supporter by any word of their surname, not only its first: "Berg" finds Anna van der
Berg and "Smith" finds Sarah Jones-Smith (UK charities see many double-barrelled names), on both databases, in the
same order as before; on PostgreSQL every such search is served by indexes (no sequential scan of supporters)."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from core.runtime import Runtime
from crm import service
from crm.models import Supporter
from tests.crm.helpers import make_supporter, staff_token


@pytest.fixture
def people(runtime: Runtime) -> dict[str, str]:
    """Supporters whose surnames have several words (space or hyphen), and some that share their words."""
    names = {
        "anna": ("Anna", "van der Berg"),
        "sarah": ("Sarah", "Jones-Smith"),
        "john": ("John", "Smith"),
        "jo": ("Jo", "Smithson"),
        "ines": ("Inés", "de la Cruz-García"),
        "bea": ("Bea", "Bergman"),
        "lee": ("Lee", "Iceberg"),
    }
    return {
        key: str(make_supporter(runtime, email=f"{key}@example.org", first_name=first, last_name=last))
        for key, (first, last) in names.items()
    }


def found(client: TestClient, headers: dict[str, str], q: str) -> list[str]:
    response = client.get("/api/supporters", params={"q": q}, headers=headers)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


def test_a_later_word_of_a_surname_finds_the_supporter(
    runtime: Runtime, client: TestClient, people: dict[str, str]
) -> None:
    staff = staff_token(runtime, "fundraiser")
    # Ordered by last name as ever: "Bergman" before "van der Berg".
    assert found(client, staff, "Berg") == [people["bea"], people["anna"]]
    assert found(client, staff, "der") == [people["anna"]]
    assert found(client, staff, "der berg") == [people["anna"]]
    # A double-barrelled name by either half ("Jones-Smith" before "Smith").
    assert found(client, staff, "Smith") == [people["sarah"], people["john"], people["jo"]]
    assert found(client, staff, "jones") == [people["sarah"]]
    for q in ("sarah smith", "smith sarah", "jones smith", "Jones-Smith", "sarah jones-sm"):
        assert found(client, staff, q) == [people["sarah"]], q
    # The fourth word (a hyphen separates words too), accented letters and phrases across the later words.
    for q in ("garcía", "GARCÍA", "cruz garcía", "la cruz", "Inés García", "la cruz-garc"):
        assert found(client, staff, q) == [people["ines"]], q


def test_words_still_start_where_a_word_starts(runtime: Runtime, client: TestClient, people: dict[str, str]) -> None:
    """Nothing matches from inside a word ("erg" is in Berg, Bergman and Iceberg but starts none of their words),
    and every word typed must match."""
    staff = staff_token(runtime, "fundraiser")
    for q in ("erg", "mith", "nna van", "ones", "arcía", "anna smith", "berg smith"):
        assert found(client, staff, q) == [], q


def test_the_phrases_that_worked_still_do(runtime: Runtime, client: TestClient, people: dict[str, str]) -> None:
    staff = staff_token(runtime, "fundraiser")
    for q in ("anna van der berg", "van der berg", "van der berg anna", "VAN DER B", "anna van"):
        assert found(client, staff, q) == [people["anna"]], q
    assert found(client, staff, "john smith") == [people["john"]]
    assert found(client, staff, "jo@example.org") == [people["jo"]]


def test_a_merged_record_is_still_left_out(runtime: Runtime, client: TestClient, people: dict[str, str]) -> None:
    from giving.merge import merge_supporters

    staff = staff_token(runtime, "fundraiser")
    with runtime.unit_of_work() as uow:
        merge_supporters(uow, uuid.UUID(people["sarah"]), uuid.UUID(people["john"]), by="test")
    assert found(client, staff, "Smith") == [people["john"], people["jo"]]


# --- PostgreSQL: every search served by indexes ------------------------------------------------------------------

SURNAMES = [
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Williams",
    "Wilson",
    "Davies",
    "Evans",
    "Thomas",
    "Roberts",
    "Okafor",
    "Nguyen",
    "Patel",
    "Khan",
    "Murphy",
    "Kowalski",
    "Ahmed",
    "Clarke",
    "Hughes",
    "Walker",
]
FIRST_NAMES = ["Ann", "Ben", "Cara", "Dev", "Eve", "Femi", "Gus", "Hana", "Ivan", "Jo", "Kim", "Lou", "Mo", "Nia"]


@pytest.fixture
def many_people(runtime: Runtime) -> Runtime:
    """PostgreSQL with 20,000 supporters (a tenth double-barrelled, some with particles), analysed: the planner
    picks what it would pick on a real table, where on a handful of rows it would rightly scan."""
    if runtime.engine.dialect.name != "postgresql":
        pytest.skip("the query plan is PostgreSQL's")
    rng = random.Random(14)
    rows = []
    for n in range(20_000):
        last = rng.choice(SURNAMES)
        if n % 10 == 0:
            last = f"{last}-{rng.choice(SURNAMES)}"
        elif n % 50 == 1:
            last = f"{rng.choice(['van der', 'de la', 'von'])} {last}"
        rows.append({
            "id": uuid.uuid4(), "email": f"person{n}@example.org", "first_name": rng.choice(FIRST_NAMES),
            "last_name": last, "postcode": f"CT{n % 20 + 1} {n % 10}AB", "statement_preference": "per_gift",
        })  # fmt: skip
    with runtime.engine.begin() as conn:
        conn.execute(sa.insert(Supporter.__table__), rows)  # type: ignore[attr-defined]
        conn.exec_driver_sql("ANALYZE supporters")
    return runtime


def search_plan(runtime: Runtime, q: str) -> str:
    """The plan PostgreSQL chooses for the very statement crm's search runs (caught on its way to the database)."""
    statements: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if "FROM supporters" in statement and "LIKE" in statement:
            statements.append((statement, parameters))

    with runtime.read_session() as session:
        connection = session.connection()
        sa.event.listen(connection, "before_cursor_execute", capture)
        try:
            service.find_supporters(session, q=q)
        finally:
            sa.event.remove(connection, "before_cursor_execute", capture)
        assert len(statements) == 1, statements
        statement, parameters = statements[0]
        rows = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters).all()
    return "\n".join(row[0] for row in rows)


def test_postgres_serves_every_search_from_indexes(many_people: Runtime) -> None:
    for q in ("jones", "Smith", "der", "van der walker", "ann taylor-hughes", "hughes ann smith", "cara de la k"):
        plan = search_plan(many_people, q)
        assert "Seq Scan" not in plan, plan
        if " " not in q:
            assert "ix_supporters_search_surname_word2" in plan, plan
