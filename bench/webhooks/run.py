"""Webhook ingest and backlog drain, measured against a minimal baseline in the same run.

    .venv/bin/python bench/webhooks/run.py [--events 10000] [--clients 16]

1. A fresh PostgreSQL database, migrated; one pending Checkout per event (so every event is a real gift to process).
2. Ingest: `giving serve` (one web process, Redis broker configured, NO worker running: the request only verifies,
   stores and enqueues) receives N signed `checkout.session.completed` events from 16 concurrent keep-alive clients.
3. Baseline: the same load on bench/webhooks/baseline.py (a raw ASGI app under uvicorn: verify_header + json.loads +
   one INSERT through a psycopg async pool).
4. Drain: the backlog left by step 2 is processed by `dramatiq giving.worker_boot --queues webhooks` (what
   `giving worker` runs, limited to the webhook queue: receipts render on other workers) against a stand-in Stripe
   API (each completed checkout fetches its payment intent with the charge); events/s from the first to the last
   event processed.

Load generator: a minimal HTTP/1.1 client on asyncio streams (cheaper than httpx, so it steals less of the 2 cores
that the servers also use). Prints accepted/s, p50, p99 for both servers and the drain rate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import redis
import stripe

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

ADMIN_DSN = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/14")
SECRET = "whsec_bench_secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def create_database() -> tuple[str, str]:
    name = f"giving_bench_{os.getpid()}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    return name, dsn


def drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed(dsn: str, count: int) -> list[tuple[str, str]]:
    """Supporters and one open Checkout per event; returns (checkout id, payment intent id) pairs."""
    from core import migrate

    migrate.upgrade(dsn)
    supporters = [uuid.uuid4() for _ in range(100)]
    pairs = [(str(uuid.uuid4()), f"pi_bench{n:06d}") for n in range(count)]
    now = time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime())
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY supporters (id, email, first_name, last_name, statement_preference, created_at, updated_at) "
            "FROM STDIN"
        ) as copy:
            for n, supporter in enumerate(supporters):
                copy.write_row((supporter, f"bench{n}@example.org", "Bench", f"Donor{n}", "per_gift", now, now))
        with cur.copy(
            "COPY checkouts (id, kind, supporter_id, amount, currency, frequency, method, donor, status, provider, "
            "created_at) FROM STDIN"
        ) as copy:
            for n, (checkout_id, _) in enumerate(pairs):
                copy.write_row(
                    (
                        checkout_id,
                        "donation",
                        supporters[n % 100],
                        2500,
                        "GBP",
                        "once",
                        "card",
                        "{}",
                        "open",
                        "stripe",
                        now,
                    )
                )
        cur.execute("CREATE TABLE bench_baseline (external_id text PRIMARY KEY, body text NOT NULL)")
    return pairs


def cpu_seconds_by_process() -> dict[str, float]:
    """CPU seconds used so far by each kind of process on this machine (Linux /proc; empty elsewhere): where a drain's
    time goes, since the workers, PostgreSQL, the stand-in Stripe and Redis share the same cores."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    totals: dict[str, float] = {}
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as stat_file, open(f"/proc/{pid}/cmdline", "rb") as cmdline_file:
                name, fields = stat_file.read().rsplit(")", 1)
                command = cmdline_file.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        if "giving.worker_boot" in command:
            kind = "giving worker"
        elif name.endswith("(postgres") or command.startswith("postgres"):
            kind = "PostgreSQL"
        elif "fake_stripe" in command:
            kind = "stand-in Stripe"
        elif "redis-server" in command:
            kind = "Redis"
        else:
            kind = "everything else"
        user, system = fields.split()[11:13]
        totals[kind] = totals.get(kind, 0.0) + (int(user) + int(system)) / tick
    return totals


def events_for(pairs: list[tuple[str, str]], tag: str) -> list[bytes]:
    template = json.loads(
        (ROOT.parent / "shared/fixtures/stripe/event_checkout_session_completed.constructed.json").read_text()
    )
    bodies = []
    for n, (checkout_id, intent_id) in enumerate(pairs):
        event = json.loads(json.dumps(template))
        event["id"] = f"evt_{tag}{n:06d}"
        session = event["data"]["object"]
        session.update(
            id=f"cs_{tag}{n:06d}",
            metadata={"checkout_id": checkout_id},
            client_reference_id=checkout_id,
            payment_intent=intent_id,
            amount_total=2500,
        )
        bodies.append(json.dumps(event).encode())
    return bodies


async def load(port: int, bodies: list[bytes], clients: int) -> tuple[int, float, list[float]]:
    """Post every body once over `clients` keep-alive connections; (accepted, seconds, latencies)."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    timestamp = int(time.time())
    for body in bodies:
        header = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET, timestamp=timestamp)
        request = (
            f"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Stripe-Signature: {header}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        queue.put_nowait(request)
    latencies: list[float] = []
    accepted = 0

    async def client() -> None:
        nonlocal accepted
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while True:
            try:
                request = queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            assert b"chunked" not in head.lower(), "the load client reads Content-Length bodies only"
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if head.startswith(b"HTTP/1.1 2"):
                accepted += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return accepted, time.perf_counter() - started, latencies


def report(name: str, accepted: int, seconds: float, latencies: list[float]) -> float:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[int(len(ordered) * 0.99) - 1] * 1000
    rate = accepted / seconds
    print(f"{name:<28} {accepted:>6} accepted  {rate:8.0f} accepted/s  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")
    return rate


def run_phase(port: int, bodies: list[bytes], clients: int, warmup: list[bytes]) -> tuple[int, float, list[float]]:
    asyncio.run(load(port, warmup, clients))
    return asyncio.run(load(port, bodies, clients))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--worker-processes", type=int, default=2)
    parser.add_argument("--worker-threads", type=int, default=4)  # `giving worker`'s default
    args = parser.parse_args()

    warm = 300
    name, dsn = create_database()
    redis_client = redis.Redis.from_url(REDIS_URL)
    for key in redis_client.scan_iter("giving*"):
        redis_client.delete(key)
    processes: list[subprocess.Popen[bytes]] = []
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GIVING_")},
        "GIVING_DATABASE__URL": dsn,
        "GIVING_DATABASE__POOL_SIZE": "16",
        "GIVING_BROKER__URL": REDIS_URL,
        "GIVING_STRIPE__SECRET_KEY": "sk_test_bench",
        "GIVING_STRIPE__WEBHOOK_SECRET": SECRET,
        "GIVING_ENV": "production",
        "PYTHONPATH": str(ROOT),
    }

    def start(command: list[str], extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(command, cwd=ROOT, env={**env, **(extra or {})}, start_new_session=True)
        processes.append(process)
        return process

    def stop(process: subprocess.Popen[bytes]) -> None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)

    try:
        print(f"seeding {args.events + warm} checkouts ...", flush=True)
        pairs = seed(dsn, args.events + warm)
        ours, base = events_for(pairs[warm:], "b"), events_for(pairs[:warm], "w")
        uvicorn = [sys.executable, "-m", "uvicorn", "--log-level", "warning", "--no-access-log", "--host", "127.0.0.1"]

        fake_port = free_port()
        fake = start([*uvicorn, "--lifespan", "off", "--port", str(fake_port), "bench.webhooks.fake_stripe:app"])
        env["GIVING_STRIPE__API_BASE"] = f"http://127.0.0.1:{fake_port}"

        port = free_port()
        server = start([sys.executable, "-m", "giving.cli", "serve", "--port", str(port)])
        wait_for_port(port)
        wait_for_port(fake_port)
        print(
            f"ingest: {len(ours)} signed events, {args.clients} clients, "
            "giving serve (1 process, Redis broker, no worker)"
        )
        accepted, seconds, latencies = run_phase(port, ours, args.clients, base)
        ours_rate = report("giving serve", accepted, seconds, latencies)
        stop(server)

        base_port = free_port()
        baseline = start(
            [*uvicorn, "--port", str(base_port), "bench.webhooks.baseline:app"],
            {"BENCH_DSN": dsn, "BENCH_SECRET": SECRET},
        )
        wait_for_port(base_port)
        base_bodies = [body.replace(b'"evt_b', b'"evt_x') for body in ours]
        accepted, seconds, latencies = run_phase(base_port, base_bodies, args.clients, events_for(pairs[:warm], "y"))
        base_rate = report("baseline (raw ASGI+psycopg)", accepted, seconds, latencies)
        stop(baseline)
        print(f"ratio: {ours_rate / base_rate:.0%} of the baseline's rate (target >= 50%, p99 < 100 ms)")

        with psycopg.connect(dsn) as conn:
            backlog = conn.execute("SELECT count(*) FROM inbound_events WHERE status = 'pending'").fetchone()[0]
        messages = redis_client.hlen("giving:webhooks.msgs")
        print(f"broker: {messages} messages carry the {backlog} events (sent together, they travel together)")
        print(
            f"drain: {backlog} pending events, dramatiq giving.worker_boot --queues webhooks "
            f"--processes {args.worker_processes} --threads {args.worker_threads}",
            flush=True,
        )
        launched = time.monotonic()
        cpu_before = cpu_seconds_by_process()
        worker = start(
            [
                sys.executable,
                "-m",
                "dramatiq",
                "giving.worker_boot",
                "--queues",
                "webhooks",
                "--processes",
                str(args.worker_processes),
                "--threads",
                str(args.worker_threads),
            ]
        )
        deadline = time.monotonic() + 600
        with psycopg.connect(dsn, autocommit=True) as conn:
            while time.monotonic() < deadline:
                left = conn.execute(
                    "SELECT count(*) FROM inbound_events WHERE status IN ('pending', 'waiting')"
                ).fetchone()[0]
                if left == 0:
                    break
                time.sleep(0.25)
            wall = time.monotonic() - launched
            cpu_after = cpu_seconds_by_process()
            first, last, done, gifts = conn.execute(
                "SELECT min(processed_at), max(processed_at), count(*) FILTER (WHERE status = 'processed'), "
                "(SELECT count(*) FROM gifts WHERE status = 'paid') FROM inbound_events"
            ).fetchone()
            failed = conn.execute("SELECT count(*) FROM inbound_events WHERE status = 'failed'").fetchone()[0]
        stop(worker)
        span = (last - first).total_seconds()
        print(
            f"drain: {done} processed ({gifts} paid gifts, {failed} failed) in {span:.1f} s "
            f"= {done / span:.0f} events/s (first to last; {wall:.1f} s including worker start-up; target >= 300/s)"
        )
        if cpu_after:
            used = {kind: seconds - cpu_before.get(kind, 0.0) for kind, seconds in cpu_after.items()}
            per_event = {kind: 1000 * seconds / done for kind, seconds in used.items() if seconds > 0}
            total = sum(per_event.values())
            parts = ", ".join(f"{kind} {ms:.2f}" for kind, ms in sorted(per_event.items(), key=lambda item: -item[1]))
            print(
                f"drain CPU per event (ms, start-up included): {parts}; total {total:.2f} ms, "
                f"so {os.cpu_count()} cores fit at most {1000 * (os.cpu_count() or 1) / total:.0f} events/s"
            )
        stop(fake)
    finally:
        for process in processes:
            if process.poll() is None:
                stop(process)
        for key in redis_client.scan_iter("giving*"):
            redis_client.delete(key)
        drop_database(name)


if __name__ == "__main__":
    main()
