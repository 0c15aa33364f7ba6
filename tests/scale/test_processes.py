"""Several real processes over PostgreSQL and RabbitMQ: health, readiness through outages, metrics added up across
processes, and each periodic job run once per period however many workers are up."""

from __future__ import annotations

import re
import time
from collections import Counter

import httpx
import sqlalchemy as sa

from core import jobs as core_jobs
from giving.worker import import_tasks
from tests.scale.conftest import SystemFactory
from tests.scale.harness import PostgresDatabase, RabbitVhost, TcpProxy, wait_until


def scrape(url: str) -> dict[str, float]:
    return parse_metrics(httpx.get(url + "/metrics", timeout=10).text)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as {'name{labels}': value}."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def healthz_count(url: str) -> float:
    return scrape(url).get('giving_http_requests_total{route="/healthz",status="2xx"}', 0)


def test_readiness_follows_the_database_and_the_broker(
    system: SystemFactory, scale_db: PostgresDatabase, vhost: RabbitVhost, proxies
) -> None:
    db_proxy: TcpProxy = proxies(scale_db.port)
    broker_proxy: TcpProxy = proxies(vhost.port)
    giving = system(database_url=scale_db.url_through(db_proxy.port), broker_url=vhost.url(broker_proxy.port))
    web = giving.serve()

    ready = httpx.get(web.url + "/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json() == {"database": "ok", "broker": "ok", "pending_events": 0, "pending_jobs": 0}

    db_proxy.stop()
    down = httpx.get(web.url + "/readyz", timeout=20)
    assert down.status_code == 503
    assert down.json()["database"] == "unavailable"
    assert httpx.get(web.url + "/healthz", timeout=5).status_code == 200  # the process itself is fine
    metrics = scrape(web.url)
    assert metrics["giving_database_up"] == 0

    db_proxy.start()
    wait_until(lambda: httpx.get(web.url + "/readyz", timeout=10).status_code == 200, timeout=20, what="database back")

    broker_proxy.stop()
    body = httpx.get(web.url + "/readyz", timeout=20).json()
    assert body["broker"] == "unavailable"
    assert scrape(web.url)["giving_broker_up"] == 0
    broker_proxy.start()
    wait_until(lambda: httpx.get(web.url + "/readyz", timeout=10).json()["broker"] == "ok", timeout=20, what="broker")


def test_metrics_add_up_every_process_and_each_periodic_job_runs_once_per_period(
    system: SystemFactory, scale_db: PostgresDatabase, vhost: RabbitVhost
) -> None:
    giving = system(database_url=scale_db.url, broker_url=vhost.url())
    web = giving.serve("web", workers=2)
    # Three worker processes under two commands: three schedulers ticking every second race for each period.
    giving.worker("worker-a", processes=2, threads=2)
    giving.worker("worker-b", processes=1, threads=2)
    requests = 40
    before = healthz_count(web.url)
    with httpx.Client(base_url=web.url, timeout=10) as client:
        for _ in range(requests):
            # A new connection each time, so the kernel spreads them over both web processes.
            assert client.get("/healthz", headers={"connection": "close"}).status_code == 200
    assert healthz_count(web.url) - before == requests

    # The worker processes' job timings show in the web process's answer: the scheduler's first sweep ran there.
    wait_until(
        lambda: (
            scrape(web.url).get('giving_job_duration_seconds_count{actor="core.resend_pending_jobs",outcome="done"}', 0)
            >= 1
        ),
        timeout=60,
        what="a worker's job timing in /metrics",
    )
    processes = {p.name.split("-")[0] for p in (giving.workdir / "metrics").iterdir()}
    assert processes == {"web", "worker"}
    metrics = scrape(web.url)
    assert metrics['giving_jobs{status="failed"}'] == 0
    assert any(re.match(r'giving_queue_messages\{queue="default"\}', key) for key in metrics)

    engine = scale_db.engine()
    try:
        time.sleep(2)  # a few more ticks of every scheduler
        with engine.connect() as conn:
            runs = conn.execute(sa.text("SELECT name, period_start FROM scheduled_runs")).all()
            jobs = conn.execute(sa.text("SELECT actor_name, status FROM jobs")).all()
    finally:
        engine.dispose()
    periods = Counter(name for name, _ in runs)
    enqueued = Counter(actor for actor, _ in jobs)
    import_tasks()
    for name, count in periods.items():
        # One job row per period claimed: no second scheduler enqueued the same period.
        actor = core_jobs.PERIODIC[name].actor_name
        assert enqueued[actor] == count, (name, count, enqueued[actor])
    assert periods["core.resend_pending_jobs"] >= 1
