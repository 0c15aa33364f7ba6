"""An oral declaration with an audio recording and a written record too (charities often send the letter anyway):
a cancellation within 30 days of that letter voids it (§1C rule 13, crm's `_oral_void`; the claimed gifts' tax is
taken back), recording or not. By default (`[giftaid] wait_for_oral_cancellation_window`) a claim waits out that
window before relying on an oral declaration; the recording skipped the wait, so its gifts were claimed inside the
window, only to be taken back by an adjustment if the donor cancelled. A recording without a letter has no window:
its gifts are claimable at once, as before."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

from core.runtime import Runtime
from core.settings import Settings
from crm.models import DeclarationMethod
from giftaid import service
from tests.fixtures.app import make_settings
from tests.giftaid.factories import TODAY, donor, make_gift

RECORDING = {"recording_id": "call-0099"}


def code_of(runtime: Runtime, gift_id: uuid.UUID, settings: Settings | None = None) -> str:
    with runtime.read_session() as session:
        explanation = service.explain(session, settings or runtime.settings, gift_id, today=TODAY)
    return explanation.code or "claimable"


def recorded_gift(runtime: Runtime, letter_sent_on: dt.date | None) -> uuid.UUID:
    supporter = donor(
        runtime,
        method=DeclarationMethod.ORAL,
        made_on=dt.date(2025, 10, 20),
        confirmation_sent_on=letter_sent_on,
        evidence=RECORDING,
    )
    return make_gift(runtime, supporter, amount=10_000, received_on=dt.date(2025, 10, 21))


def test_a_recorded_oral_declaration_waits_for_its_letters_thirty_days(runtime: Runtime, tmp_path: Path) -> None:
    inside = recorded_gift(runtime, letter_sent_on=dt.date(2025, 10, 22))
    assert code_of(runtime, inside) == "oral_unconfirmed"
    with runtime.read_session() as session:
        reason = service.explain(session, runtime.settings, inside, today=TODAY).reason
    assert "window closes after 21/11/2025" in reason, reason
    with runtime.unit_of_work() as uow:
        result = service.build_claim(uow, runtime.settings, through=TODAY, actor="test", today=TODAY)
    assert result.claim_id is None
    assert [(h.gift_id, h.reason.split(":", 1)[0]) for h in result.held_back] == [(inside, "oral_unconfirmed")]
    eager = make_settings(runtime.settings.database.url, tmp_path, giftaid={"wait_for_oral_cancellation_window": False})
    assert code_of(runtime, inside, eager) == "claimable"


def test_a_recording_without_a_letter_or_past_its_window_is_claimable(runtime: Runtime) -> None:
    assert code_of(runtime, recorded_gift(runtime, letter_sent_on=None)) == "claimable"
    supporter = donor(
        runtime,
        method=DeclarationMethod.ORAL,
        made_on=dt.date(2025, 9, 1),
        confirmation_sent_on=dt.date(2025, 9, 2),
        evidence=RECORDING,
    )
    assert code_of(runtime, make_gift(runtime, supporter, received_on=dt.date(2025, 9, 3))) == "claimable"
