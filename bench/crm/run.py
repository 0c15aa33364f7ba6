"""Supporter history and search over HTTP against `giving serve`, on PostgreSQL with 100,000 supporters and
1,000,000 timeline entries.

    .venv/bin/python bench/crm/run.py [--admin-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

It creates a fresh database (`giving_bench_crm`), migrates it with `giving db upgrade`, loads the rows with COPY,
makes a staff user and token with the real commands, starts `giving serve` on a free port, and then times, one
request at a time after a warm-up: one supporter's history (500 entries), a search by email, and `/healthz` as the
baseline of the same server and client. Prints p50/p95/p99 in milliseconds. Target: p99 under 50 ms.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
GIVING = [sys.executable, "-m", "giving.cli"]
SUPPORTERS = 100_000
ENTRIES = 1_000_000
TARGET_ENTRIES = 500
WARMUP = 200
REQUESTS = 1_000
TYPES = ["gift", "gift", "gift", "receipt", "consent", "regular_gift_started", "refund", "note"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create_database(admin_url: str, name: str) -> str:
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    return sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def giving(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([*GIVING, *args], env=env, input=stdin, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"giving {' '.join(args)} failed: {done.stderr}")
    return done.stdout


def load(url: str) -> tuple[uuid.UUID, str]:
    """COPY the supporters and the timeline; returns (the supporter with 500 entries, an email to search for).

    The history table's secondary indexes are dropped during the COPY and built again afterwards (one sort
    instead of a million random index inserts), exactly as the migration defines them."""
    rng = random.Random(20261126)
    now = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(SUPPORTERS)]
    target = ids[SUPPORTERS // 2]
    others = [i for i in ids if i != target]
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    started = time.perf_counter()
    with psycopg.connect(conninfo) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'history' AND indexname <> 'pk_history'"
        )
        indexes = cur.fetchall()
        constraints = [name for name, _ in indexes if name.startswith("uq_")]
        for name in constraints:
            cur.execute(f"ALTER TABLE history DROP CONSTRAINT {name}")
        for name, _ in indexes:
            cur.execute(f"DROP INDEX IF EXISTS {name}")
        with cur.copy(
            "COPY supporters (id, email, title, first_name, last_name, postcode, statement_preference, created_at, "
            "updated_at) FROM STDIN"
        ) as copy:
            lines = []
            for n, supporter_id in enumerate(ids):
                created = (now - dt.timedelta(days=rng.randrange(3650))).isoformat()
                lines.append(
                    f"{supporter_id}\tsupporter{n}@example.org\tMs\tFirst{n}\tLast{n % 5000}\t"
                    f"CT{n % 20 + 1} {n % 10}AB\tper_gift\t{created}\t{created}\n"
                )
            copy.write("".join(lines))
        # The target gets TARGET_ENTRIES; everyone else shares the rest.
        owners = [target] * TARGET_ENTRIES + [rng.choice(others) for _ in range(ENTRIES - TARGET_ENTRIES)]
        rng.shuffle(owners)
        with cur.copy(
            "COPY history (id, supporter_id, at, type, summary, amount, currency, data, created_at) FROM STDIN"
        ) as copy:
            lines = []
            for n, owner in enumerate(owners):
                at = (now - dt.timedelta(seconds=rng.randrange(5 * 365 * 86400))).isoformat()
                kind = TYPES[n % len(TYPES)]
                entry_id = uuid.UUID(int=rng.getrandbits(128), version=4)
                if kind in ("gift", "refund"):
                    gift_id = uuid.UUID(int=rng.getrandbits(128), version=4)
                    data = f'{{"gift_id": "{gift_id}", "provider_ids": ["pi_{n:024d}", "ch_{n:024d}"]}}'
                    money = "2500\tGBP"
                else:
                    data, money = "{}", "\\N\t\\N"
                lines.append(f"{entry_id}\t{owner}\t{at}\t{kind}\t{kind} number {n}\t{money}\t{data}\t{at}\n")
                if len(lines) == 50_000:
                    copy.write("".join(lines))
                    lines.clear()
            copy.write("".join(lines))
        for name, definition in indexes:
            if name in constraints:
                column = definition[definition.index("(") + 1 : definition.rindex(")")]
                cur.execute(f"ALTER TABLE history ADD CONSTRAINT {name} UNIQUE ({column})")
            else:
                cur.execute(definition)
        conn.commit()
        cur.execute("ANALYZE supporters")
        cur.execute("ANALYZE history")
        conn.commit()
    print(f"loaded {SUPPORTERS:,} supporters and {ENTRIES:,} history entries in {time.perf_counter() - started:.1f} s")
    return target, f"Supporter{SUPPORTERS // 3}@Example.org"


def find_target(url: str) -> tuple[uuid.UUID, str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        target = conn.exec_driver_sql(
            "SELECT supporter_id FROM history GROUP BY supporter_id HAVING count(*) = %(n)s LIMIT 1",
            {"n": TARGET_ENTRIES},
        ).scalar_one()
    engine.dispose()
    return target, f"Supporter{SUPPORTERS // 3}@Example.org"


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


def timed(client: httpx.Client, path: str, headers: dict[str, str]) -> list[float]:
    for _ in range(WARMUP):
        client.get(path, headers=headers).raise_for_status()
    samples = []
    for _ in range(REQUESTS):
        start = time.perf_counter()
        response = client.get(path, headers=headers)
        samples.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="giving_bench_crm")
    parser.add_argument("--reuse", action="store_true", help="time the database a previous run loaded")
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if not k.startswith("GIVING_")}
    if args.reuse:
        url = sa.make_url(args.admin_url).set(database=args.database).render_as_string(hide_password=False)
        target, email = find_target(url)
        env.update({"GIVING_DATABASE__URL": url, "GIVING_ENV": "production"})
    else:
        url = create_database(args.admin_url, args.database)
        env.update({"GIVING_DATABASE__URL": url, "GIVING_ENV": "production"})
        giving(env, "db", "upgrade")
        target, email = load(url)
        giving(env, "users", "add", "bench@example.org", "--role", "fundraiser", stdin="a long benchmark password\n")
    token = giving(env, "tokens", "create", "bench@example.org").strip()
    headers = {"Authorization": f"Bearer {token}"}

    port = free_port()
    server = subprocess.Popen([*GIVING, "serve", "--port", str(port)], env=env, cwd=ROOT)
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as client:
            for _ in range(200):
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            history = client.get(f"/api/supporters/{target}/history", headers=headers).json()["items"]
            assert len(history) == TARGET_ENTRIES, len(history)
            found = client.get("/api/supporters", params={"email": email}, headers=headers).json()["items"]
            assert len(found) == 1, found
            results = {
                "GET /healthz (baseline)": timed(client, "/healthz", {}),
                f"GET /api/supporters/{{id}}/history ({TARGET_ENTRIES} entries)": timed(
                    client, f"/api/supporters/{target}/history", headers
                ),
                "GET /api/supporters?email=... (search by email)": timed(
                    client, f"/api/supporters?email={email}", headers
                ),
            }
    finally:
        server.terminate()
        server.wait(timeout=10)

    print(f"\n{REQUESTS} sequential requests each after {WARMUP} warm-up, one client, keep-alive (ms)")
    print(f"{'endpoint':<55} {'p50':>7} {'p95':>7} {'p99':>7}")
    for name, samples in results.items():
        p50, p95, p99 = percentiles(samples)
        print(f"{name:<55} {p50:7.2f} {p95:7.2f} {p99:7.2f}")
    worst = max(percentiles(s)[2] for n, s in results.items() if "baseline" not in n)
    print(f"\ntarget p99 < 50 ms: {'met' if worst < 50 else 'NOT met'} (worst p99 {worst:.2f} ms)")


if __name__ == "__main__":
    main()
