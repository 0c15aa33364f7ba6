"""The words of each Gift Aid declaration are kept with their version (giftaid.md §4: "keep template text and version
id"), once per version and text, and shown with the declaration."""

from __future__ import annotations

import html
import uuid
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.clock import uk_today
from core.runtime import Runtime
from crm.models import Declaration, Wording
from crm.service import enduring_declaration_wording
from tests.crm.helpers import make_supporter, staff_token


@pytest.fixture
def staff(runtime: Runtime) -> dict[str, str]:
    return staff_token(runtime, "fundraiser")


def declare(client: TestClient, supporter_id: uuid.UUID, staff: dict[str, str], **fields: Any) -> Any:
    body = {"method": "written", "made_on": uk_today().isoformat(), "scope": "past_4_years_and_future", **fields}
    return client.post(f"/api/supporters/{supporter_id}/declarations", json=body, headers=staff)


def kept(runtime: Runtime) -> tuple[list[Wording], list[Declaration]]:
    with runtime.read_session() as session:
        return list(session.exec(select(Wording)).all()), list(session.exec(select(Declaration)).all())


def test_the_charitys_own_wording_is_kept_once_with_the_charitys_name(
    runtime: Runtime, client: TestClient, staff: dict[str, str]
) -> None:
    first = declare(client, make_supporter(runtime), staff)
    second = declare(client, make_supporter(runtime, email="grace@example.org"), staff)
    assert first.status_code == second.status_code == 201
    words = enduring_declaration_wording(runtime.settings.charity.name)
    assert runtime.settings.charity.name in words and "UK taxpayer" in words
    assert first.json()["wording_text"] == second.json()["wording_text"] == words
    wordings, declarations = kept(runtime)
    assert [(w.version, w.text) for w in wordings] == [(runtime.settings.giftaid.donation_wording_version, words)]
    assert {d.wording_id for d in declarations} == {wordings[0].id}


def test_another_wording_needs_its_words_the_first_time_and_nothing_is_written_without_them(
    runtime: Runtime, client: TestClient, staff: dict[str, str]
) -> None:
    ada = make_supporter(runtime)
    refused = declare(client, ada, staff, wording_version="paper-form-2019")
    assert refused.status_code == 400
    assert refused.json()["error"] == "InvalidDonorDetails"
    assert "wording_text" in refused.json()["detail"] and "paper-form-2019" in refused.json()["detail"]
    assert kept(runtime) == ([], [])

    paper = "I want the charity to treat all donations I have made in the past 4 years as Gift Aid donations."
    given = declare(client, ada, staff, wording_version="paper-form-2019", wording_text=paper)
    assert given.status_code == 201 and given.json()["wording_text"] == paper
    # Later declarations on the same paper form name the version only: the kept words are theirs.
    again = declare(client, ada, staff, wording_version="paper-form-2019")
    assert again.status_code == 201 and again.json()["wording_text"] == paper
    listed = client.get(f"/api/supporters/{ada}/declarations", headers=staff).json()["items"]
    assert [d["wording_text"] for d in listed] == [paper, paper]
    wordings, _ = kept(runtime)
    assert len(wordings) == 1


def test_changed_words_under_one_version_are_kept_apart(
    runtime: Runtime, client: TestClient, staff: dict[str, str]
) -> None:
    """A version whose words changed (the charity renamed, say) keeps both: each declaration has its own words."""
    ada = make_supporter(runtime)
    old = declare(client, ada, staff, wording_version="form-a", wording_text="Old words to Old Name.").json()
    new = declare(client, ada, staff, wording_version="form-a", wording_text="New words to New Name.").json()
    wordings, declarations = kept(runtime)
    assert sorted(w.text for w in wordings) == ["New words to New Name.", "Old words to Old Name."]
    by_id = {str(d.id): d.wording_id for d in declarations}
    assert by_id[old["id"]] != by_id[new["id"]]
    assert (old["wording_text"], new["wording_text"]) == ("Old words to Old Name.", "New words to New Name.")
    # Naming the version alone now means its latest words.
    assert declare(client, ada, staff, wording_version="form-a").json()["wording_text"] == "New words to New Name."


def test_the_donate_form_shows_the_words_kept_with_the_declaration_it_makes(
    runtime: Runtime, client: TestClient
) -> None:
    """The form prints `enduring_declaration_wording` and the checkout keeps the same words: what the donor read is
    what the record says they read."""
    page = client.get("/donate")
    words = enduring_declaration_wording(runtime.settings.charity.name)
    assert page.status_code == 200 and words in html.unescape(page.text)
