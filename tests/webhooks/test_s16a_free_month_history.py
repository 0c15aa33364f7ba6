"""Review of s15a: a free month (an instalment invoice paid with nothing: a 100%-off coupon, a credit balance) is
kept as a £0 `cancelled` instalment row for the schedule, and now also says so on the supporter's history, so a
fundraiser sees why no payment came that month: one `instalment_free` item per invoice (however often its event
arrives), dated when Stripe marked the invoice paid, naming the instalment, the plan and Stripe's ids."""

from __future__ import annotations

import datetime as dt

from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import Runtime
from crm.models import HistoryEntry
from payments.models import Gift
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import DAY, Scenario
from tests.webhooks.support import (
    EventsWorker,
    app_client,
    catalogue,
    history,
    install,
    reading,
    settings,
    stuck_events,
    worker,
)
from tests.webhooks.test_s14a_invoice_outcomes import _monthly_in_arrears, _post, _start
from tests.webhooks.test_s14r_closed_later_instalment import MARCH
from tests.webhooks.test_s15a_free_later_period import _march_free

__all__ = ["app_client", "catalogue", "settings", "worker"]


def test_a_free_month_writes_one_history_item_for_the_fundraiser(
    runtime: Runtime,
    worker: EventsWorker,
    app_client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> None:
    scenario = Scenario(runtime)
    supporter, subscription_id, failed = _monthly_in_arrears(scenario, "Free Item Ines")
    free = _march_free(failed)
    invoice_id = free["data"]["object"]["id"]
    install(scenario, fake_stripe, fake_gocardless)
    _start(runtime, scenario, app_client, worker)
    _post(app_client, worker, free, free, free)
    assert stuck_events(runtime) == []

    with reading(runtime) as session:
        row = session.exec(select(Gift).where(Gift.stripe_invoice_id == invoice_id)).one()
        entries = session.exec(
            select(HistoryEntry).where(HistoryEntry.supporter_id == supporter, HistoryEntry.type == "instalment_free")
        ).all()
    items = [i for i in history(runtime, supporter) if i["type"] == "instalment_free"]
    assert len(items) == 1 and len(entries) == 1, items
    item = items[0]
    assert item["gift_id"] == str(row.id) and item["regular_gift_id"] == str(row.regular_gift_id)
    assert invoice_id in item["provider_ids"] and subscription_id in item["provider_ids"]
    assert "nothing to pay" in item["summary"] and "05/03/2026" in item["summary"], item["summary"]
    assert "£0.00" not in item["summary"]
    # Dated when Stripe marked the invoice paid (6 March), not when the event was processed.
    paid_at = dt.datetime.fromtimestamp(MARCH + DAY, dt.UTC)
    assert entries[0].at.replace(tzinfo=dt.UTC) == paid_at
