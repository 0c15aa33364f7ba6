"""A change of settings or of a declaration that changes which gifts are claimable says which gifts it changed."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pytest
from sqlmodel import select

from core.clock import uk_today
from core.runtime import Runtime
from crm.models import Declaration, DeclarationMethod
from giftaid import service
from giftaid.service import EligibilityChange, changed_eligibility
from tests.fixtures.app import make_settings
from tests.giftaid.factories import TODAY, donor, make_gift, make_supporter, run_giving, staff_headers


def declaration_of(runtime: Runtime, supporter_id: uuid.UUID) -> uuid.UUID:
    with runtime.read_session() as session:
        return session.exec(select(Declaration.id).where(Declaration.supporter_id == supporter_id)).one()


def test_changed_eligibility_compares_two_snapshots() -> None:
    a, b, c, d = (uuid.UUID(int=n) for n in range(1, 5))
    before = {a: None, b: "oral_unconfirmed", c: "no_declaration", d: None}
    after = {a: "declaration_cancelled", b: None, c: "no_declaration"}
    assert changed_eligibility(before, after) == [
        EligibilityChange(a, None, "declaration_cancelled"),
        EligibilityChange(b, "oral_unconfirmed", None),
    ]
    assert EligibilityChange(b, "oral_unconfirmed", None).to_json() == {
        "gift_id": str(b),
        "before": "oral_unconfirmed",
        "after": "claimable",
    }


def test_confirming_an_oral_declaration_says_which_gifts_became_claimable(runtime: Runtime, tmp_path: Path) -> None:
    settings = make_settings(
        runtime.settings.database.url, tmp_path, giftaid={"wait_for_oral_cancellation_window": False}
    )
    oral = donor(runtime, method=DeclarationMethod.ORAL, made_on=dt.date(2025, 9, 1))
    gifts = [make_gift(runtime, oral, received_on=dt.date(2025, 8, d)) for d in (1, 2)]
    other = make_gift(runtime, donor(runtime, method=DeclarationMethod.ORAL), received_on=dt.date(2025, 8, 3))
    with runtime.unit_of_work() as uow:
        change = service.confirm_declaration(
            uow,
            settings,
            declaration_of(runtime, oral),
            confirmation_sent_on=dt.date(2025, 9, 3),
            actor="f@example.org",
            today=TODAY,
        )
    assert sorted(c.gift_id for c in change.changed) == sorted(gifts)
    assert all(c.before == "oral_unconfirmed" and c.now_claimable for c in change.changed)
    assert other not in [c.gift_id for c in change.changed]


def test_cancelling_a_declaration_says_which_gifts_stopped_being_claimable(runtime: Runtime) -> None:
    ada = donor(runtime)
    before = make_gift(runtime, ada, received_on=dt.date(2025, 5, 31))
    after = make_gift(runtime, ada, received_on=dt.date(2025, 6, 1))
    with runtime.unit_of_work() as uow:
        change = service.cancel_declaration(
            uow,
            runtime.settings,
            declaration_of(runtime, ada),
            effective_on=dt.date(2025, 6, 1),
            actor="f@example.org",
            today=TODAY,
        )
    assert [(c.gift_id, c.before, c.after) for c in change.changed] == [(after, None, "declaration_cancelled")]
    assert before not in [c.gift_id for c in change.changed]
    assert change.adjusted_gift_ids == []


def test_a_change_of_settings_says_which_gifts_it_changes(runtime: Runtime, tmp_path: Path) -> None:
    oral = donor(runtime, method=DeclarationMethod.ORAL, confirmation_sent_on=dt.date(2025, 10, 20))
    waiting = make_gift(runtime, oral, received_on=dt.date(2025, 9, 1))
    make_gift(runtime, donor(runtime), received_on=dt.date(2025, 9, 1))
    eager = make_settings(runtime.settings.database.url, tmp_path, giftaid={"wait_for_oral_cancellation_window": False})
    with runtime.read_session() as session:
        changes = service.settings_changes(session, runtime.settings, eager, today=TODAY)
    assert changes == [EligibilityChange(waiting, "oral_unconfirmed", None)]


def test_the_changes_command(runtime: Runtime, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    today = uk_today()
    old = make_gift(
        runtime, donor(runtime, made_on=today - dt.timedelta(days=30)), received_on=today - dt.timedelta(days=800)
    )
    result = run_giving(
        [
            "giftaid",
            "changes",
            "--set",
            f"charity.recognised_on={(today - dt.timedelta(days=400)).isoformat()}",
            "--json",
        ],
        runtime.settings,
        monkeypatch,
        tmp_path,
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "changed": [{"gift_id": str(old), "before": "claimable", "after": "before_recognition"}]
    }
    bad = run_giving(
        ["giftaid", "changes", "--set", "charity.financial_year_end=13-40"], runtime.settings, monkeypatch, tmp_path
    )
    assert bad.exit_code == 1


def test_declaration_changes_through_the_api(runtime: Runtime, client) -> None:  # type: ignore[no-untyped-def]
    today = uk_today()
    ada = donor(runtime, made_on=today - dt.timedelta(days=100))
    gift = make_gift(runtime, ada, received_on=today - dt.timedelta(days=5))
    finance = staff_headers(runtime, "finance")
    url = f"/api/declarations/{declaration_of(runtime, ada)}/cancel"
    answer = client.post(url, json={"effective_on": (today - dt.timedelta(days=10)).isoformat()}, headers=finance)
    assert answer.status_code == 200
    assert answer.json()["changed"] == [{"gift_id": str(gift), "before": "claimable", "after": "declaration_cancelled"}]
    assert answer.json()["cancellation_effective_on"] == (today - dt.timedelta(days=10)).isoformat()
    assert answer.json()["adjusted_gift_ids"] == []
    explained = client.get(f"/api/giftaid/gifts/{gift}", headers=staff_headers(runtime, "fundraiser")).json()
    assert explained["claimable"] is False and explained["reason"].startswith("declaration_cancelled: ")
    assert client.get(f"/api/giftaid/gifts/{uuid.uuid4()}", headers=finance).status_code == 404
    assert (
        client.post(
            f"/api/declarations/{uuid.uuid4()}/cancel",
            json={"effective_on": today.isoformat()},
            headers=finance,
        ).status_code
        == 404
    )


def test_a_new_declaration_says_which_gifts_it_makes_claimable(runtime: Runtime, client) -> None:  # type: ignore[no-untyped-def]
    """Recording a declaration through the contract's endpoint lists the supporter's gifts it makes claimable (and
    an oral one's confirmation, those it releases), under the running settings' rules."""
    today = uk_today()
    ada = make_supporter(runtime)
    earlier = make_gift(runtime, ada, received_on=today - dt.timedelta(days=40))
    fundraiser = staff_headers(runtime, "fundraiser")
    body = {
        "method": "oral",
        "made_on": (today - dt.timedelta(days=35)).isoformat(),
        "scope": "past_4_years_and_future",
        "address": {"first_name": "Ada", "last_name": "Lovelace", "address_line1": "12 Acacia Avenue",
                    "postcode": "CT16 1AA", "country": "GB"},
    }  # fmt: skip
    answer = client.post(f"/api/supporters/{ada}/declarations", json=body, headers=fundraiser)
    assert answer.status_code == 201, answer.text
    # An oral declaration covers the gift, but no claim may include it before its written confirmation is sent.
    assert answer.json()["changed"] == [
        {"gift_id": str(earlier), "before": "no_declaration", "after": "oral_unconfirmed"}
    ]
    confirmed = client.post(
        f"/api/declarations/{answer.json()['id']}/confirm",
        json={"confirmation_sent_on": (today - dt.timedelta(days=34)).isoformat()},
        headers=fundraiser,
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["changed"] == [
        {"gift_id": str(earlier), "before": "oral_unconfirmed", "after": "claimable"}
    ]
