"""Characters XML cannot hold (U+FFFE, U+FFFF) are dropped from what people and the API give, like control
characters: a donor name carrying one reached the Charities Online XML raw and made the whole claim's message
malformed. A lone surrogate (JSON's \\uD800 escapes can carry one; no database stores it) is refused by the API
with a 400 naming the field."""

from __future__ import annotations

import json

from sqlmodel import select
from starlette.testclient import TestClient

from core.clock import uk_today
from core.runtime import Runtime
from crm.models import Declaration
from crm.validation import clean_name, clean_text
from tests.crm.helpers import make_supporter, staff_token


def test_names_and_text_lose_what_xml_and_databases_cannot_hold() -> None:
    assert clean_name("Ada\ufffe Love\uffffl\ud800ace") == "Ada Lovelace"
    assert clean_text("rang\udfff back\ufffe") == "rang back"


def test_a_declaration_given_through_the_api_with_them_is_stored_without_them(
    runtime: Runtime, client: TestClient
) -> None:
    ada = make_supporter(runtime)
    body = {
        "method": "online", "made_on": uk_today().isoformat(), "scope": "past_4_years_and_future",
        "evidence": {"form\uffff": "web\ufffe"},
        "address": {"first_name": "Ada\ufffe", "last_name": "Love\uffffl\ufffeace", "address_line1": "12 High St\uffff",
                    "town": "Dover", "postcode": "CT16 1AA"},
    }  # fmt: skip
    raw = json.dumps(body)  # ASCII, with \\uffff escapes as a client would send them
    headers = {**staff_token(runtime, "fundraiser"), "content-type": "application/json"}
    declared = client.post(f"/api/supporters/{ada}/declarations", content=raw, headers=headers)
    assert declared.status_code == 201, declared.text
    with runtime.read_session() as session:
        declaration = session.exec(select(Declaration).where(Declaration.supporter_id == ada)).one()
    assert (declaration.first_name, declaration.last_name, declaration.house) == ("Ada", "Lovelace", "12")
    assert declaration.evidence.get("form") == "web"


def test_a_lone_surrogate_through_the_api_is_refused_naming_its_field(runtime: Runtime, client: TestClient) -> None:
    ada = make_supporter(runtime)
    raw = json.dumps({"text": "rang \ud800 back"})
    headers = {**staff_token(runtime, "fundraiser"), "content-type": "application/json"}
    answer = client.post(f"/api/supporters/{ada}/notes", content=raw, headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"].startswith("text:")
