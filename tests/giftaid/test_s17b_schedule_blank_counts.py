"""A donor whose name or house HMRC's schedule shows as nothing, even transliterated (an Arabic alef, a private-use
character, non-breaking spaces), is held back by every claim build (`missing_name` / `missing_house`). What counts
"claimable" elsewhere must agree with the build: a supporter's `gift_aid_claimable` (the supporter API's totals), and
`giving giftaid changes` / `settings_changes` (a change of settings never says such a gift becomes claimable)."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from core.clock import uk_today
from core.money import gift_aid_on
from core.runtime import Runtime
from crm.models import Declaration, DeclarationMethod
from giftaid import service
from giftaid.service import EligibilityChange
from tests.fixtures.app import make_settings
from tests.giftaid.factories import TODAY, donor, make_gift, staff_headers

D = Declaration.__table__  # type: ignore[attr-defined]


def _legacy_donor(runtime: Runtime, **values: str) -> uuid.UUID:
    """A supporter whose declaration row holds `values` as stored (no crm cleaning on the way in)."""
    supporter_id = donor(runtime)
    with runtime.unit_of_work() as uow:
        uow.session.execute(sa.update(D).where(D.c.supporter_id == supporter_id).values(**values))
    return supporter_id


def _claimable(client: TestClient, headers: dict[str, str], supporter_id: uuid.UUID) -> int:
    answer = client.get(f"/api/supporters/{supporter_id}", headers=headers)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["totals"]["gift_aid_claimable"]["amount"])


def test_supporter_totals_agree_with_the_build(runtime: Runtime, client: TestClient) -> None:
    today = uk_today()
    on = today - dt.timedelta(days=40)
    made_on = today - dt.timedelta(days=60)
    good = donor(runtime, made_on=made_on)
    cyrillic = donor(runtime, made_on=made_on, first_name="\u0418\u0432\u0430\u043d")
    alef = donor(runtime, made_on=made_on, first_name="\u0627")
    unshown_house = _legacy_donor(runtime, house="\xa0\xa0", made_on=made_on)  # type: ignore[arg-type]
    gifts = {
        supporter: make_gift(runtime, supporter, amount=8_000, received_on=on)
        for supporter in (good, cyrillic, alef, unshown_house)
    }
    fundraiser = staff_headers(runtime, "fundraiser")
    before = {supporter: _claimable(client, fundraiser, supporter) for supporter in gifts}

    with runtime.unit_of_work() as uow:
        result = service.build_claim(uow, runtime.settings, through=today, actor="test", today=today)
    held = {h.gift_id for h in result.held_back}
    assert held == {gifts[alef], gifts[unshown_house]}
    # Before the build, each supporter's claimable Gift Aid is what the build then claimed of theirs.
    assert before == {supporter: 0 if gift in held else gift_aid_on(8_000) for supporter, gift in gifts.items()}
    with runtime.read_session() as session:
        totals = service.supporter_totals(session, list(gifts), runtime.settings)
    assert totals["gift_aid_claimable"].amount == 0  # the build claimed the rest; the held-back ones never were


@pytest.mark.parametrize("value", ["\u0627", "\uf8ff"])
def test_a_change_of_settings_never_makes_such_a_gift_claimable(runtime: Runtime, tmp_path: Path, value: str) -> None:
    """An oral declaration waiting out its 30-day window: turning the wait off makes a normal donor's gift claimable,
    and the unshown donor's gift goes from `oral_unconfirmed` to `missing_name`, as the build would hold it back."""
    oral = {"method": DeclarationMethod.ORAL, "confirmation_sent_on": dt.date(2025, 10, 20)}
    ada = make_gift(runtime, donor(runtime, **oral), received_on=dt.date(2025, 9, 1))  # type: ignore[arg-type]
    unshown = make_gift(runtime, donor(runtime, last_name=value, **oral), received_on=dt.date(2025, 9, 1))  # type: ignore[arg-type]
    eager = make_settings(runtime.settings.database.url, tmp_path, giftaid={"wait_for_oral_cancellation_window": False})
    with runtime.read_session() as session:
        changes = service.settings_changes(session, runtime.settings, eager, today=TODAY)
    assert changes == sorted(
        [
            EligibilityChange(ada, "oral_unconfirmed", None),
            EligibilityChange(unshown, "oral_unconfirmed", "missing_name"),
        ],
        key=lambda change: change.gift_id,
    )
    with runtime.unit_of_work() as uow:
        result = service.build_claim(uow, eager, through=TODAY, actor="test", today=TODAY)
    assert [(h.gift_id, h.reason.split(":")[0]) for h in result.held_back] == [(unshown, "no_declaration")]
