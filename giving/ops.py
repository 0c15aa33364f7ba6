"""Running many processes: the metrics directory each command counts in, and the gauges `/metrics` computes live.

See docs/operations.md for how these fit together on one or several machines.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dramatiq.common import dq_name, xq_name
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import jobs, metrics
from core.auth import bearer_token
from core.clock import utc_now
from core.errors import NotFound, Unauthorized
from core.models import Job
from core.runtime import Runtime
from giftaid.models import Claim
from giving.worker import pika_quiet
from receipts.models import Delivery, Document
from webhooks.models import InboundEvent

log = logging.getLogger("giving.ops")

DEFAULT_METRICS_DIR = "./var/metrics"


def prepare_metrics_dir(role: str) -> Path:
    """Give this command (and every process it starts) its own counter directory under the machine's metrics root.

    The root is GIVING_METRICS_DIR (default ./var/metrics, relative to the current directory: start web and worker
    commands of one machine from the same place, or set it). Directories of commands that are no longer running are
    removed first; their counters restart from zero, which Prometheus reads as a restart.
    """
    root = Path(os.environ.get(metrics.METRICS_ROOT_ENV) or DEFAULT_METRICS_DIR).resolve()
    root.mkdir(parents=True, exist_ok=True)
    for child in root.iterdir():
        owner = child.name.rpartition("-")[2]
        if child.is_dir() and owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(child, ignore_errors=True)
    os.environ[metrics.METRICS_ROOT_ENV] = str(root)
    directory = root / f"{role}-{os.getpid()}"
    shutil.rmtree(directory, ignore_errors=True)
    metrics.enable_multiprocess(directory)
    return directory


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_sources(runtime: Runtime) -> list[metrics.LiveSource]:
    return [lambda: database_gauges(runtime), lambda: queue_gauges(runtime)]


# How long a probe's statement may wait (a lock held by a migration's ALTER TABLE, a database overloaded) before the
# probe says the database is unavailable: `/readyz` held a web thread, and a scrape outlasted Prometheus's timeout.
PROBE_STATEMENT_SECONDS = 3


def bound_probe(session: Session) -> None:
    """On PostgreSQL, this transaction's statements give up after PROBE_STATEMENT_SECONDS (`set_config(..., true)`:
    the transaction only, nothing left on the connection, as PgBouncer's transaction mode needs)."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection().exec_driver_sql(
            f"SELECT set_config('statement_timeout', '{PROBE_STATEMENT_SECONDS * 1000}', true)"
        )


def database_gauges(runtime: Runtime) -> Iterable[Metric]:
    """Events and durable jobs by status, and whether the database answered."""
    up = GaugeMetricFamily("giving_database_up", "1 when the database answered this scrape.")
    events = GaugeMetricFamily(
        "giving_events", "Stored provider events by status (pending, waiting, failed, ...).", labels=["status"]
    )
    job_rows = GaugeMetricFamily("giving_jobs", "Durable jobs by status (pending, failed).", labels=["status"])
    oldest = GaugeMetricFamily(
        "giving_oldest_pending_event_age_seconds", "Age of the oldest event not yet processed (0 when none)."
    )
    documents = GaugeMetricFamily(
        "giving_documents",
        "Receipts, statements and letters by kind and status (issued, ...).",
        labels=["kind", "status"],
    )
    deliveries = GaugeMetricFamily(
        "giving_document_deliveries",
        "Document deliveries by channel and status: email sent or failed (after every retry), posted, pending.",
        labels=["channel", "status"],
    )
    claims = GaugeMetricFamily("giving_giftaid_claims", "Gift Aid claims built, by status.", labels=["status"])
    try:
        with runtime.read_session() as session:
            bound_probe(session)
            event_counts = dict(
                session.exec(
                    select(InboundEvent.status, sa.func.count()).group_by(InboundEvent.status)  # type: ignore[arg-type]
                ).all()
            )
            job_counts = dict(
                session.exec(
                    select(Job.status, sa.func.count())  # type: ignore[arg-type]
                    .where(col(Job.status).in_(["pending", "failed"]))  # the index, not every job ever done
                    .group_by(Job.status)
                ).all()
            )
            document_counts = session.exec(
                select(Document.kind, Document.status, sa.func.count()).group_by(  # type: ignore[call-overload]
                    Document.kind, Document.status
                )
            ).all()
            delivery_counts = session.exec(
                select(Delivery.channel, Delivery.status, sa.func.count()).group_by(  # type: ignore[call-overload]
                    Delivery.channel, Delivery.status
                )
            ).all()
            claim_counts = session.exec(
                select(Claim.status, sa.func.count()).group_by(Claim.status)  # type: ignore[call-overload]
            ).all()
            first = session.exec(
                select(sa.func.min(InboundEvent.received_at)).where(
                    col(InboundEvent.status).in_(["pending", "waiting"])
                )
            ).one()
    except sa.exc.SQLAlchemyError as exc:
        # One line, no traceback: a scrape every few seconds during an outage the gauge already reports.
        log.warning("metrics: the database did not answer: %s", _one_line(exc))
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    for status in ("pending", "waiting", "processed", "ignored", "failed"):
        events.add_metric([status], int(event_counts.get(status, 0)))
    for status in ("pending", "failed"):
        job_rows.add_metric([status], int(job_counts.get(status, 0)))
    oldest.add_metric([], max(0.0, (utc_now() - first).total_seconds()) if first is not None else 0.0)
    for kind, status, number in document_counts:
        documents.add_metric([str(kind), str(status)], int(number))
    for channel, status, number in delivery_counts:
        deliveries.add_metric([str(channel), str(status)], int(number))
    for status, number in claim_counts:
        claims.add_metric([str(status)], int(number))
    return [up, events, job_rows, oldest, documents, deliveries, claims]


def _one_line(exc: BaseException) -> str:
    """The error's kind and the first line of its message (a SQLAlchemy error's next lines are its SQL)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def queue_gauges(runtime: Runtime) -> Iterable[Metric]:
    """Messages waiting in the broker per queue (ready and delayed; dead-lettered apart)."""
    up = GaugeMetricFamily("giving_broker_up", "1 when the broker answered this scrape.")
    waiting = GaugeMetricFamily(
        "giving_queue_messages", "Messages waiting in the broker (ready and delayed).", labels=["queue"]
    )
    dead = GaugeMetricFamily("giving_queue_dead_messages", "Messages dead-lettered by the broker.", labels=["queue"])
    try:
        counts = _queue_counts(runtime)
    except Exception as exc:
        log.warning("metrics: the broker did not answer: %s", _one_line(exc))
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    for queue, (ready, dead_count) in sorted(counts.items()):
        waiting.add_metric([queue], ready)
        if dead_count is not None:
            dead.add_metric([queue], dead_count)
    return [up, waiting, dead]


def _queue_counts(runtime: Runtime) -> dict[str, tuple[int, int | None]]:
    url = runtime.settings.broker.url
    queues = sorted(jobs.queue_names())
    if not url:
        broker = runtime.broker
        result: dict[str, tuple[int, int | None]] = {}
        for queue in queues:
            ready = sum(
                broker.queues[name].qsize()  # type: ignore[attr-defined]
                for name in (queue, dq_name(queue))
                if name in broker.queues  # type: ignore[attr-defined]
            )
            result[queue] = (ready, None)
        return result
    if url.startswith("redis"):
        broker = runtime.broker
        # dramatiq's qsize counts ready, delayed and unacknowledged messages together.
        return {queue: (int(broker.do_qsize(queue)), None) for queue in queues}  # type: ignore[attr-defined]
    return _rabbitmq_counts(url, queues)


def _rabbitmq_counts(url: str, queues: list[str]) -> dict[str, tuple[int, int | None]]:
    """Passive declares on a short-lived connection of our own (the broker's belongs to its sending threads)."""
    import pika

    params = pika.URLParameters(url)
    params.socket_timeout = 2
    # The AMQP handshake: pika's default 15 s, for a broker that accepts and says nothing, outlasted Prometheus's
    # 10 s scrape timeout, so the scrape was dropped whole (`giving_broker_up 0` with it).
    params.stack_timeout = 3
    params.blocked_connection_timeout = 2
    params.connection_attempts = 1
    # A broker that is down (`giving_broker_up 0` says so) and a queue no worker has declared yet (404) would each
    # have pika log errors or warnings on every scrape.
    with pika_quiet():
        return _rabbitmq_declares(pika.BlockingConnection(params), queues)


def _rabbitmq_declares(connection: Any, queues: list[str]) -> dict[str, tuple[int, int | None]]:
    import pika.exceptions

    try:
        channel = connection.channel()
        result: dict[str, tuple[int, int | None]] = {}
        for queue in queues:
            numbers = []
            for name in (queue, dq_name(queue), xq_name(queue)):
                try:
                    numbers.append(channel.queue_declare(name, passive=True).method.message_count)
                except pika.exceptions.ChannelClosedByBroker:
                    # Not declared yet (no worker has started): nothing waits in it.
                    numbers.append(0)
                    channel = connection.channel()
            result[queue] = (numbers[0] + numbers[1], numbers[2])
        return result
    finally:
        with contextlib.suppress(Exception):
            connection.close()


class MetricsMiddleware:
    """Counts responses and times requests by route template (`/api/supporters/{id}`), never by raw path."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        webhook = str(scope.get("path", "")).startswith(WEBHOOK_PREFIX)
        answer = bytearray()

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif webhook and message["type"] == "http.response.body" and len(answer) < 4096:
                answer.extend(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = _route_template(scope)
            metrics.count("http_requests", route=route, status=f"{status // 100}xx")
            metrics.observe("http_request_duration_seconds", time.perf_counter() - started, route=route)
            if webhook:
                _count_delivery(str(scope["path"]).removeprefix(WEBHOOK_PREFIX), status, bytes(answer))


WEBHOOK_PREFIX = "/webhooks/"
# The error codes webhooks answer with, as the `reason` label of refused deliveries.
_REFUSAL_REASONS = {
    "InvalidSignature": "signature",
    "InvalidGoCardlessSignature": "signature",
    "MalformedEvent": "malformed",
    "PayloadTooLarge": "too_large",
    "RequestTimeout": "too_slow",
    "ServiceUnavailable": "unavailable",
    "WebhookDisabled": "not_configured",
}


def _count_delivery(provider: str, status: int, answer: bytes) -> None:
    """Deliveries accepted (new or already stored) and refused (by reason), read from the webhook's own answer:
    `{"received": n, "stored": m}` or `{"error": code, "detail": ...}`."""
    if provider not in ("stripe", "gocardless"):
        return
    try:
        body = json.loads(answer) if answer else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if 200 <= status < 300:
        received, stored = body.get("received"), body.get("stored")
        if isinstance(received, int) and isinstance(stored, int) and received > 0 and stored == 0:
            metrics.count("deliveries_duplicate", provider=provider)
        else:
            metrics.count("deliveries_accepted", provider=provider)
        return
    code = body.get("error")
    reason = _REFUSAL_REASONS.get(code, "other") if isinstance(code, str) else f"http_{status}"
    metrics.count("deliveries_refused", provider=provider, reason=reason)


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    if not isinstance(route, Route):
        return "unmatched"
    return str(scope.get("root_path", "")) + route.path


# Headers a reverse proxy adds: a request carrying one came from elsewhere, even if its last hop was this machine.
_FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def check_metrics_access(request: Request, token: str) -> None:
    """Who may read `/metrics` (docs/operations.md §5). With `[web] metrics_token` set: whoever sends it as a bearer
    token, and nobody else (401, so a misconfigured Prometheus says why). Unset: only a request made on this machine
    (a loopback client, not relayed by a proxy); anyone else gets the 404 of a path that does not exist."""
    if token:
        given = bearer_token(request) or ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise Unauthorized("/metrics needs the metrics token", headers={"WWW-Authenticate": "Bearer"})
        return
    if not _made_on_this_machine(request):
        raise NotFound("Not Found")  # what Starlette says of a path no route serves


def _made_on_this_machine(request: Request) -> bool:
    if request.client is None or any(name in request.headers for name in _FORWARDING_HEADERS):
        return False  # a Unix socket (a proxy's, likely) or a proxied request
    try:
        address = ipaddress.ip_address(request.client.host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


async def metrics_endpoint(request: Request) -> Response:
    """`GET /metrics`: Prometheus text, for the metrics token or (without one) this machine only."""
    runtime: Runtime = request.app.state.runtime
    check_metrics_access(request, runtime.settings.web.metrics_token.get_secret_value())
    body, content_type = await run_in_threadpool(metrics.render, live_sources(runtime))
    return Response(body, media_type=content_type)
