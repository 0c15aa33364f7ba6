"""The audit log after an erasure (found in review): staff searching the JSON API by a donor's email write the
address, as typed, into the audit entry; once the donor is erased no entry may still hold it (the entry stays: who
searched, when, what came back), and nobody else's address is touched."""

from __future__ import annotations

import json

from sqlmodel import select
from starlette.testclient import TestClient

from core.models import AuditEntry
from core.runtime import Runtime
from giving.privacy import erase_supporter
from tests.crm.helpers import make_supporter, staff_token


def test_an_erasure_leaves_no_audit_entry_holding_the_donors_email(runtime: Runtime, client: TestClient) -> None:
    staff = staff_token(runtime, "fundraiser", email="fran@example.org")
    ada = make_supporter(runtime, email="ada@example.org")
    make_supporter(runtime, email="jada@example.org", first_name="Jada", last_name="Smith")
    for typed in ("  ADA@Example.ORG ", "ada@example.org", "jada@example.org"):
        assert client.get("/api/supporters", params={"email": typed}, headers=staff).status_code == 200
    with runtime.unit_of_work() as uow:
        erase_supporter(uow, runtime.settings, ada)
    with runtime.read_session() as session:
        searches = [
            e.detail
            for e in session.exec(select(AuditEntry).order_by(AuditEntry.at)).all()  # type: ignore[arg-type]
            if e.action == "search"
        ]
    assert len(searches) == 3
    assert "ada@example.org" not in json.dumps(searches[:2]).lower()
    assert searches[2] == {"email": "jada@example.org"}
