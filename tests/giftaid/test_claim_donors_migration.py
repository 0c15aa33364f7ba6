"""The migration that moved the donor details a claim sent from each claimed gift to one row per (claim,
declaration) keeps every claim's details, and its downgrade puts them back on the gifts; a person's rows are found
by their declarations through an index (erasure, the purge and the export look them up that way)."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from core import migrate
from core.db import make_engine
from core.runtime import Runtime
from core.settings import DatabaseSettings
from giftaid.models import ClaimDonor

BEFORE = "4a2c1aef86ed"  # giftaid's revision before the claim donors
COLUMNS = ("gift", "line", "declaration", "title", "first", "last", "house", "postcode", "overseas")


def _rows(url: str, query: str) -> list[tuple[object, ...]]:
    engine = make_engine(DatabaseSettings(url=url))
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(query))]
    finally:
        engine.dispose()


def test_claim_donor_details_move_to_their_own_table_and_back(own_database_url: str) -> None:
    url = own_database_url
    migrate.downgrade(url, BEFORE)
    claim, ada, bob = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    gifts = [uuid.uuid4() for _ in range(4)]
    rows = [
        # Two of Ada's gifts, one of Bob's (overseas), and a row without a declaration (not one a claim writes).
        (gifts[0], 1, ada, "Ms", "Ada", "Lovelace", "12", "CT16 1AA", False),
        (gifts[1], 2, ada, "Ms", "Ada", "Lovelace", "12", "CT16 1AA", False),
        (gifts[2], 3, bob, None, "Bob", "Jones", "7 Rue", "", True),
        (gifts[3], 4, None, None, "Cy", "Nobody", "1", "CT1 1AA", False),
    ]
    engine = make_engine(DatabaseSettings(url=url))
    try:
        with engine.begin() as conn:
            for row in rows:
                conn.execute(
                    sa.text(
                        "INSERT INTO giftaid_claim_gifts (claim_id, gift_id, live, line_no, aggregated, received_on, "
                        "amount, returned_at_claim, adjusted_returned, declaration_id, title, first_name, last_name, "
                        "house, postcode, overseas) VALUES (:claim, :gift, true, :line, false, '2025-05-01', 1000, 0, "
                        "0, :declaration, :title, :first, :last, :house, :postcode, :overseas)"
                    ).bindparams(*(sa.bindparam(name, type_=sa.Uuid) for name in ("claim", "gift", "declaration"))),
                    {"claim": claim, **dict(zip(COLUMNS, row, strict=True))},
                )
    finally:
        engine.dispose()

    migrate.upgrade(url)
    donors = _rows(
        url,
        "SELECT declaration_id, title, first_name, last_name, house, postcode, overseas FROM giftaid_claim_donors "
        "ORDER BY last_name",
    )
    assert [(uuid.UUID(str(d[0])), *d[1:6], bool(d[6])) for d in donors] == [
        (bob, None, "Bob", "Jones", "7 Rue", "", True),
        (ada, "Ms", "Ada", "Lovelace", "12", "CT16 1AA", False),
    ]
    assert _rows(url, "SELECT count(*) FROM giftaid_claim_gifts") == [(4,)]

    migrate.downgrade(url, BEFORE)
    back = _rows(
        url,
        "SELECT line_no, title, first_name, last_name, house, postcode, overseas FROM giftaid_claim_gifts "
        "ORDER BY line_no",
    )
    assert [(*r[:6], bool(r[6])) for r in back] == [
        (1, "Ms", "Ada", "Lovelace", "12", "CT16 1AA", False),
        (2, "Ms", "Ada", "Lovelace", "12", "CT16 1AA", False),
        (3, None, "Bob", "Jones", "7 Rue", "", True),
        (4, None, "", "", "", "", False),  # its details were never a claim's: none to put back
    ]
    migrate.upgrade(url)


def test_claim_donors_are_found_by_declaration_without_reading_the_whole_table(runtime: Runtime) -> None:
    engine = runtime.engine
    claims = [uuid.uuid4() for _ in range(20)]
    rows = [
        {
            "claim_id": c,
            "declaration_id": uuid.uuid4(),
            "title": None,
            "first_name": "Ada",
            "last_name": "Lovelace",
            "house": "1",
            "postcode": "CT16 1AA",
            "overseas": False,
        }
        for c in claims
        for _ in range(1000)
    ]
    with engine.begin() as conn:
        conn.execute(sa.insert(ClaimDonor.__table__), rows)  # type: ignore[attr-defined]
    wanted = rows[12345]["declaration_id"]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE giftaid_claim_donors")
            plan = "\n".join(
                r[0]
                for r in conn.exec_driver_sql(
                    f"EXPLAIN UPDATE giftaid_claim_donors SET first_name = 'Erased' WHERE declaration_id IN "
                    f"('{wanted}')"
                )
            )
            assert "Seq Scan on giftaid_claim_donors" not in plan, plan
        else:
            conn.exec_driver_sql("ANALYZE")
            plan = "\n".join(
                str(r[-1])
                for r in conn.exec_driver_sql(
                    f"EXPLAIN QUERY PLAN UPDATE giftaid_claim_donors SET first_name = 'Erased' "
                    f"WHERE declaration_id IN ('{wanted.hex}')"
                )
            )
            assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, plan
