"""Webhooks and their processing with 1 web + 1 worker process, then 2 + 2, on PostgreSQL and RabbitMQ, in one run.

    .venv/bin/python bench/scale/run.py [--events 3000] [--clients 16]

For each set-up: a database copied from a migrated template and a RabbitMQ vhost of its own; the donors' checkouts
recorded through `POST /donate` first (not timed); then signed `checkout.session.completed` events posted by
`--clients` concurrent clients, spread over the web processes, and the clock stops when the workers have processed
the last one (each event a gift: a locked checkout, a gift row, the supporter's history, durable follow-up jobs).
Printed: deliveries accepted per second, events processed per second end to end, and the ratio 2+2 / 1+1.

On a machine with two cores the second pair of processes has no core of its own: the ratio measures what running
more processes costs (target >= 0.9). On more cores it measures the speed-up; docs/operations.md explains.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


from tests.fakes.provider_server import FakeProvider
from tests.scale.flows import count, deliver, donate_all, prefer_yearly_statements, settled
from tests.scale.harness import (
    PostgresDatabase,
    RabbitVhost,
    new_system,
    system_env,
    wait_until,
)
from tests.scale.scenario import Scenario

RABBITMQ = os.environ.get("GIVING_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/%2F")


def run(pairs: int, events: int, clients: int, template: str, workdir: Path) -> dict[str, float]:
    database = PostgresDatabase(f"bench{pairs}", template=template).create()
    vhost = RabbitVhost(RABBITMQ, f"bench{pairs}").create()
    fake_stripe = FakeProvider().start()
    scenario = Scenario.plan(pairs, checkouts=events, donors=max(events // 3, 1), paid_share=1.0, refund_share=0.0)
    stripe = scenario.serve_stripe(fake_stripe)
    env = system_env(
        database_url=database.url,
        broker_url=vhost.url(),
        workdir=workdir / f"pairs{pairs}",
        stripe_api=fake_stripe.url,
        extra={"GIVING_WEB__FORM_RATE_PER_MINUTE": "100000000"},
    )
    system = new_system(workdir / f"pairs{pairs}", env)
    engine = database.engine()
    try:
        webs = system.serve_many(*(f"web-{n}" for n in range(pairs)))
        for n in range(pairs):
            system.worker(f"worker-{n}", processes=1, threads=8)
        donate_all(scenario, stripe, webs)
        prefer_yearly_statements(engine)
        # Paid at the session, no payment intent to fetch: the work measured is ours, not the fake Stripe's.
        checkout_events = [e for e in scenario.events() if e["type"] == "checkout.session.completed"]
        for event in checkout_events:
            event["data"]["object"]["payment_intent"] = None
        rng = random.Random(pairs)
        tasks = [[(event, rng.randrange(pairs))] for event in checkout_events]
        started = time.monotonic()
        answered = deliver(tasks, webs, clients=clients)
        accepted_in = time.monotonic() - started
        assert set(answered) <= {(web.name, 200) for web in webs}, answered
        wait_until(lambda: settled(engine), timeout=900, interval=0.2, what="every event processed")
        processed_in = time.monotonic() - started
        gifts = count(engine, "SELECT count(*) FROM gifts WHERE status = 'paid'")
        assert gifts == len(checkout_events), (gifts, len(checkout_events))
        return {
            "events": len(checkout_events),
            "accepted_per_s": len(checkout_events) / accepted_in,
            "processed_per_s": len(checkout_events) / processed_in,
            "seconds": processed_in,
        }
    finally:
        system.stop_all()
        engine.dispose()
        fake_stripe.stop()
        vhost.delete()
        database.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    template = PostgresDatabase("benchtemplate").create()
    template.admin.dispose()
    try:
        with tempfile.TemporaryDirectory(prefix="giving-bench-scale-") as tmp:
            results = {pairs: run(pairs, args.events, args.clients, template.name, Path(tmp)) for pairs in (1, 2)}
    finally:
        template.drop()
    print(f"cores: {os.cpu_count()}, load average before: {load_before:.1f}, after: {os.getloadavg()[0]:.1f}")
    print(f"{'set-up':<22}{'events':>8}{'accepted/s':>13}{'processed/s':>13}{'seconds':>9}")
    for pairs, result in results.items():
        label = f"{pairs} web + {pairs} worker"
        print(
            f"{label:<22}{result['events']:>8.0f}{result['accepted_per_s']:>13.0f}"
            f"{result['processed_per_s']:>13.0f}{result['seconds']:>9.1f}"
        )
    ratio = results[2]["processed_per_s"] / results[1]["processed_per_s"]
    print(f"ratio 2+2 / 1+1 (events processed per second): {ratio:.2f}  (target >= 0.9 on two cores)")


if __name__ == "__main__":
    main()
