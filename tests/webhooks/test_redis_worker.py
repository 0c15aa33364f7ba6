"""The same flows on the Redis broker with a real dramatiq Worker (the production path of `giving worker`)."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator

import dramatiq
import pytest
import redis
from starlette.testclient import TestClient

from core import jobs
from core.runtime import Runtime, build_runtime, set_runtime
from core.settings import Settings
from payments import service as payments_service
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import standard_scenario
from tests.fixtures.db import empty_tables
from tests.fixtures.services import RUN_ID
from tests.webhooks.support import actual_ledger, deliver, install, settings, stuck_events

__all__ = ["settings"]


@pytest.fixture
def redis_runtime(settings: Settings, redis_url: str) -> Iterator[Runtime]:
    from giving.worker import import_tasks

    import_tasks()
    broker = jobs.make_broker(redis_url)
    # Other test processes may share this Redis: every key of this test lives under its own namespace.
    namespace = f"giving-test-{RUN_ID}-{uuid.uuid4().hex[:6]}"
    broker.namespace = namespace  # type: ignore[attr-defined]
    runtime = build_runtime(settings, broker=broker)
    empty_tables(runtime.engine)
    with runtime.unit_of_work() as uow:
        payments_service.ensure_default_catalogue(uow)
    try:
        yield runtime
    finally:
        broker.close()
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"{namespace}*"):
            client.delete(key)
        empty_tables(runtime.engine)
        runtime.engine.dispose()
        set_runtime(None)


def wait_until_processed(runtime: Runtime, timeout: float = 30) -> None:
    from webhooks.service import pending_event_count

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with runtime.read_session() as session:
            if pending_event_count(session) == 0:
                return
        time.sleep(0.1)


@pytest.mark.slow
def test_shuffled_deliveries_processed_by_a_redis_worker(
    redis_runtime: Runtime, fake_stripe: FakeProvider, fake_gocardless: FakeProvider
) -> None:
    from giving.app import create_app

    broker = redis_runtime.broker
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, queues={"webhooks"}, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        scenario = standard_scenario(redis_runtime)
        install(scenario, fake_stripe, fake_gocardless)
        with TestClient(create_app(runtime=redis_runtime, start_inline_worker=False)) as client:
            started = time.monotonic()
            deliver(client, scenario.deliveries, rng=random.Random(7))
            broker.join("webhooks", timeout=60_000)  # type: ignore[attr-defined]
            wait_until_processed(redis_runtime)
            elapsed = time.monotonic() - started
    finally:
        worker.stop()
    assert stuck_events(redis_runtime) == []
    assert actual_ledger(redis_runtime, scenario.expected) == scenario.expected
    assert elapsed < 60
