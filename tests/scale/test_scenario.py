"""Two web and two worker processes on PostgreSQL and RabbitMQ take a few thousand deliveries: each event 1-3
times, shuffled, some copies at the same moment on both web processes. The gifts and totals must equal the ledger
the plan adds up to, and each periodic job must have run once per period."""

from __future__ import annotations

import os
import random

import httpx
import sqlalchemy as sa

from tests.fakes.provider_server import FakeProvider
from tests.scale.conftest import SystemFactory
from tests.scale.flows import (
    Phases,
    assert_ledger,
    deliver,
    donate_all,
    plan_deliveries,
    prefer_yearly_statements,
    settled,
)
from tests.scale.harness import PostgresDatabase, wait_until
from tests.scale.scenario import Scenario

SEED = 20251126
CHECKOUTS = int(os.environ.get("SCALE_CHECKOUTS", "500"))
DONORS = 250


def test_two_web_and_two_worker_processes_take_a_scenario_of_thousands_of_deliveries(
    system: SystemFactory, scale_db: PostgresDatabase, fake_stripe: FakeProvider
) -> None:
    scenario = Scenario.plan(SEED, checkouts=CHECKOUTS, donors=DONORS)
    stripe = scenario.serve_stripe(fake_stripe)
    giving = system(
        stripe_api=fake_stripe.url,
        extra={
            # Every donor comes from 127.0.0.1 here; the form's per-address limit is for the internet.
            "GIVING_WEB__FORM_RATE_PER_MINUTE": "1000000",
            # Statements instead of a PDF per gift: this test is about deliveries, bench/receipts about PDFs.
            "GIVING_RECEIPTS__DEFAULT_PREFERENCE": "annual",
        },
    )
    phases = Phases()
    webs = giving.serve_many("web-a", "web-b")
    giving.worker("worker-a", threads=4)
    giving.worker("worker-b", threads=4)

    phases.done("start")
    donate_all(scenario, stripe, webs)
    phases.done("donate")

    engine = scale_db.engine()
    try:
        prefer_yearly_statements(engine)
        events = scenario.events()
        tasks, deliveries = plan_deliveries(events, random.Random(SEED))
        assert deliveries >= 2000 or CHECKOUTS < 500
        answered = deliver(tasks, webs)
        phases.done(f"{deliveries} deliveries")
        assert sum(answered.values()) == deliveries
        assert set(answered) == {(web.name, 200) for web in webs}, answered  # both took some, all stored

        wait_until(lambda: settled(engine), timeout=180, interval=1, what="every event processed")
        phases.done("processing")
        with engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT count(*) FROM inbound_events")).scalar_one()
        assert stored == len(events)  # each event stored once, however often it came
        assert_ledger(engine, scenario, api_url=webs[0].url)
        _assert_periodic_jobs_ran_once_per_period(engine)
        phases.done("ledger")
    finally:
        engine.dispose()
    # Counted in two processes, added up in one answer.
    metrics = httpx.get(webs[1].url + "/metrics", timeout=10).text
    assert f'giving_http_requests_total{{route="/webhooks/stripe",status="2xx"}} {float(deliveries)}' in metrics
    print(phases)


def _assert_periodic_jobs_ran_once_per_period(engine: sa.Engine) -> None:
    from core import jobs
    from giving.worker import import_tasks

    import_tasks()
    with engine.connect() as conn:
        runs = conn.execute(sa.text("SELECT name, count(*) FROM scheduled_runs GROUP BY name")).all()
        enqueued = dict(conn.execute(sa.text("SELECT actor_name, count(*) FROM jobs GROUP BY actor_name")).all())
    assert runs, "no periodic job ran"
    for name, periods in runs:
        assert enqueued.get(jobs.PERIODIC[name].actor_name) == periods, (name, periods, enqueued)
