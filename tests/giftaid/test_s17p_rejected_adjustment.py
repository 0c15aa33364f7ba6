"""A rejected claim gives back the adjustments it carried (the next claim carries them), but kept its `adjustment`
figure: its JSON and pages showed a deduction it no longer carries, and summed with the next claim's the same tax
was deducted twice. A rejected claim now shows 0 (it deducts nothing: HMRC rejected it), and its rejection event keeps
what it carried."""

from __future__ import annotations

import datetime as dt
from typing import Any

from core.runtime import Runtime
from giftaid import service
from tests.giftaid.factories import TODAY, donor, make_gift, set_gift, staff_headers


def test_a_rejected_claim_shows_no_deduction_and_keeps_what_it_carried_in_its_history(
    runtime: Runtime, client: Any
) -> None:
    ada = donor(runtime)
    gift = make_gift(runtime, ada, amount=10_000, received_on=dt.date(2025, 6, 1))
    with runtime.unit_of_work() as uow:
        service.build_claim(uow, runtime.settings, through=TODAY, actor="test", today=TODAY)
    set_gift(runtime, gift, returned_amount=10_000)  # refunded after it was claimed: 25.00 of tax to give back
    make_gift(runtime, ada, amount=20_000, received_on=dt.date(2025, 10, 1))
    with runtime.unit_of_work() as uow:
        carrying = service.build_claim(uow, runtime.settings, through=TODAY, actor="test", today=TODAY)
    assert carrying.claim_id is not None and carrying.adjustment == 2_500
    finance = staff_headers(runtime, "finance")
    base = f"/api/giftaid/claims/{carrying.claim_id}"
    for step in ("submitted", "rejected"):
        answer = client.post(f"{base}/status", json={"status": step, "reason": "HMRC: typo"}, headers=finance)
        assert answer.status_code == 200, answer.text
    rejected = answer.json()
    assert rejected["adjustment"] == {"amount": 0, "currency": "GBP"}
    given_back = rejected["events"][-1]["detail"]
    assert given_back["adjustment_carried"] == {"amount": 2_500, "currency": "GBP"}
    assert len(given_back["adjustments_given_back"]) == 1
    # The next claim carries it: counted once across the claims.
    make_gift(runtime, ada, amount=30_000, received_on=dt.date(2025, 10, 2))
    with runtime.unit_of_work() as uow:
        nxt = service.build_claim(uow, runtime.settings, through=TODAY, actor="test", today=TODAY)
    assert nxt.adjustment == 2_500
    claims = client.get("/api/giftaid/claims", headers=finance).json()["items"]
    assert sum(c["adjustment"]["amount"] for c in claims) == 2_500
