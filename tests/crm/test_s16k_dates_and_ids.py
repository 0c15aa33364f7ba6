"""A declaration dated tomorrow (UK) is refused; a path id that is no id is a 404 of the kind the path names."""

from __future__ import annotations

import datetime as dt

import pytest
from starlette.testclient import TestClient

from core.clock import uk_today
from core.runtime import Runtime
from tests.crm.helpers import make_supporter, staff_token


@pytest.fixture
def staff(runtime: Runtime) -> dict[str, str]:
    return staff_token(runtime, "fundraiser")


def test_a_declaration_made_tomorrow_is_refused_and_one_made_today_is_kept(
    runtime: Runtime, client: TestClient, staff: dict[str, str]
) -> None:
    ada = make_supporter(runtime)
    body = {"method": "written", "scope": "past_4_years_and_future"}
    tomorrow = client.post(
        f"/api/supporters/{ada}/declarations",
        json={**body, "made_on": (uk_today() + dt.timedelta(days=1)).isoformat()},
        headers=staff,
    )
    assert tomorrow.status_code == 400, tomorrow.text
    assert "cannot be made in the future" in tomorrow.text, tomorrow.text
    today = client.post(
        f"/api/supporters/{ada}/declarations", json={**body, "made_on": uk_today().isoformat()}, headers=staff
    )
    assert today.status_code == 201, today.text


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/api/declarations/not-an-id/confirm", "DeclarationNotFound"),
        ("/api/declarations/not-an-id/cancel", "DeclarationNotFound"),
        ("/api/review-items/not-an-id/resolve", "ReviewItemNotFound"),
    ],
)
def test_a_path_id_that_is_no_id_is_not_found_as_what_the_path_names(
    client: TestClient, staff: dict[str, str], path: str, error: str
) -> None:
    response = client.post(path, json={}, headers=staff)
    assert (response.status_code, response.json()["error"]) == (404, error), response.text


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"scope": "future", "end": "2025-03-31"}, "end"),
        ({"scope": "past_4_years_and_future", "end": "2025-03-31"}, "end"),
        ({"scope": "future", "start": "2024-01-01"}, "start"),
        ({"scope": "this_gift", "start": "2024-01-01", "gift_id": "00000000-0000-0000-0000-000000000001"}, "start"),
        ({"scope": "future", "gift_id": "00000000-0000-0000-0000-000000000001"}, "gift_id"),
        ({"scope": "future", "made_on": "0001-01-01"}, "made_on"),
        ({"scope": "past_4_years_and_future", "made_on": "1025-06-01"}, "made_on"),
    ],
)
def test_a_declaration_with_what_its_scope_does_not_use_or_no_real_date_is_refused_and_nothing_kept(
    runtime: Runtime, client: TestClient, staff: dict[str, str], extra: dict[str, str], field: str
) -> None:
    ada = make_supporter(runtime)
    body = {"method": "written", "made_on": uk_today().isoformat(), **extra}
    response = client.post(f"/api/supporters/{ada}/declarations", json=body, headers=staff)
    assert response.status_code == 400, response.text
    assert f"{field}:" in response.json()["detail"], response.json()
    assert client.get(f"/api/supporters/{ada}/declarations", headers=staff).json()["items"] == []


def test_a_declaration_for_a_period_keeps_its_start_and_end(
    runtime: Runtime, client: TestClient, staff: dict[str, str]
) -> None:
    ada = make_supporter(runtime)
    body = {"method": "written", "made_on": uk_today().isoformat(), "scope": "period"}
    body.update(start=(uk_today() - dt.timedelta(days=30)).isoformat(), end=uk_today().isoformat())
    response = client.post(f"/api/supporters/{ada}/declarations", json=body, headers=staff)
    assert response.status_code == 201, response.text
    assert (response.json()["start"], response.json()["end"]) == (body["start"], body["end"])
