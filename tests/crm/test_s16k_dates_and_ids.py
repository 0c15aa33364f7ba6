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
