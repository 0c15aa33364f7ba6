"""An address longer than its column is refused with a field error, not cut to fit (session 13 review): through the
JSON API's declarations here, the donor forms in tests/payments/test_s13c_donor_input.py."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.clock import uk_today
from core.runtime import Runtime
from crm.errors import InvalidDonorDetails
from crm.models import Declaration, HistoryEntry
from crm.validation import DonorDetails
from tests.crm.helpers import make_supporter, staff_token

TODAY = uk_today()


@pytest.fixture
def staff(runtime: Runtime) -> dict[str, str]:
    return staff_token(runtime, "fundraiser")


def declare(client: TestClient, supporter_id: uuid.UUID, staff: dict[str, str], address: dict[str, str]) -> Any:
    body = {"method": "written", "made_on": TODAY.isoformat(), "scope": "past_4_years_and_future", "address": address}
    return client.post(f"/api/supporters/{supporter_id}/declarations", json=body, headers=staff)


def address(**fields: str) -> dict[str, str]:
    return {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "address_line1": "12 Acacia Avenue",
        "town": "Dover",
        "postcode": "CT16 1AA",
        "country": "GB",
        **fields,
    }


def written(runtime: Runtime) -> tuple[list[Declaration], int]:
    with runtime.read_session() as session:
        declarations = list(session.exec(select(Declaration)).all())
        history = len(session.exec(select(HistoryEntry)).all())
    return declarations, history


TOO_LONG = [
    ({"town": "Llanfair" * 8}, "town", "60"),  # 64 characters
    ({"address_line2": "Flat 3, " + "x" * 93}, "address_line2", "100"),  # 101 characters
    ({"address_line1": "1 " + "x" * 99}, "address_line1", "100"),  # already refused: unchanged
    ({"postcode": "12345-67890", "country": "FR"}, "postcode", "10"),  # abroad: 11 characters
]


@pytest.mark.parametrize(("fields", "field", "limit"), TOO_LONG)
def test_a_declaration_address_longer_than_its_column_is_refused_and_nothing_is_written(
    runtime: Runtime, client: TestClient, staff: dict[str, str], fields: dict[str, str], field: str, limit: str
) -> None:
    """The town was kept as its first 60 characters (a second line as its first 100, a postcode abroad as its first
    10): a declaration HMRC may ask to see named an address the donor never gave."""
    ada = make_supporter(runtime)
    before = written(runtime)
    response = declare(client, ada, staff, address(**fields))
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "InvalidDonorDetails"
    assert field in body["detail"] and f"at most {limit} characters" in body["detail"], body["detail"]
    assert written(runtime) == before


def test_an_address_as_long_as_its_columns_is_kept_whole(
    runtime: Runtime, client: TestClient, staff: dict[str, str]
) -> None:
    ada = make_supporter(runtime)
    town, line2 = "T" * 60, "L" * 100
    response = declare(client, ada, staff, address(town=town, address_line2=line2, postcode="1234567890", country="FR"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["town"], body["address_line2"], body["postcode"]) == (town, line2, "1234567890")


def test_the_length_is_counted_after_cleaning_what_was_typed() -> None:
    """Spaces between words are one space and invisible characters are dropped before the count: what is kept is
    what is measured, so a town padded with spaces is not refused for them."""
    padded = "  Newcastle   upon   Tyne  " + "\u200b" * 80
    details = DonorDetails(first_name="Ada", last_name="Lovelace", town=padded).normalised()
    assert details.town == "Newcastle upon Tyne"


def test_every_field_too_long_is_named_at_once() -> None:
    with pytest.raises(InvalidDonorDetails) as refused:
        DonorDetails(
            first_name="Ada",
            last_name="Lovelace",
            address_line2="x" * 101,
            town="y" * 61,
            postcode="z" * 11,
            country="FR",
        ).normalised()
    assert set(refused.value.errors) == {"address_line2", "town", "postcode"}


def test_hmrc_limits_are_handled_as_before(runtime: Runtime, client: TestClient, staff: dict[str, str]) -> None:
    """Names over 35 characters are refused (HMRC's limit); the house HMRC gets is derived from the first line and
    kept within its 40 characters, not refused."""
    ada = make_supporter(runtime)
    refused = declare(client, ada, staff, address(first_name="A" * 36))
    assert refused.status_code == 400 and "first_name" in refused.json()["detail"]
    rectory = "The Old Rectory at the End of Long Lane Near the Church"
    taken = declare(client, ada, staff, address(address_line1=rectory))
    assert taken.status_code == 201, taken.text
    assert len(taken.json()["house"]) <= 40
    assert dt.date.fromisoformat(taken.json()["made_on"]) == TODAY
