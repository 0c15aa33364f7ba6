"""Instructions the worker spends per webhook event, counted by valgrind, beside another revision's in the same run.

    .venv/bin/python bench/webhooks/instructions.py [--against REV] [--events 200]

CPU time on this shared machine moves by a third from one run to the next (docs/benchmarks.md), too much to see a
change of a few percent. valgrind's callgrind counts instructions instead, which do not depend on the load:

1. A template PostgreSQL database with the checkouts and stored `checkout.session.completed` events of
   bench/webhooks.
2. For this checkout and for REV (a git worktree; default HEAD, so the figure is what the uncommitted change does):
   `webhooks.service.run_event` in-process (no broker: the in-process one) over a few events, then over those and
   N more, each under callgrind on a fresh copy of the template. The difference over N is the instructions per
   event: start-up, imports and warm-up cancel out.
3. A stand-in Stripe (bench/webhooks/fake_stripe.py) answers any call the code makes.

Each run under callgrind takes one to three minutes; the two revisions run side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# The measured child imports the code of the revision it measures (PYTHONPATH), so this file's own checkout is put
# on the path only by the parent, in main().
ROOT = Path(__file__).resolve().parents[2]
ADMIN_DSN = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
WARM = 50
TEMPLATE = f"giving_instr_{os.getpid()}"


def prepare_template(count: int) -> None:
    """Checkouts and their stored completion events, processed by nobody yet."""
    import psycopg

    from bench.webhooks.run import events_for, seed

    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{TEMPLATE}"
    pairs = seed(dsn, count)
    rows = [(json.loads(body)["id"], body.decode()) for body in events_for(pairs, "i")]
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE bench_baseline")
        with cur.copy(
            "COPY inbound_events (id, provider, external_id, event_type, body, livemode, status, attempts, "
            "received_at, source) FROM STDIN"
        ) as copy:
            for n, (external_id, body) in enumerate(rows):
                copy.write_row(
                    (
                        f"00000000-0000-4000-8000-{n:012d}",
                        "stripe",
                        external_id,
                        "checkout.session.completed",
                        body,
                        False,
                        "pending",
                        0,
                        "2026-01-01 00:00:00+00",
                        "delivery",
                    )
                )


def count_instructions(code_root: Path, label: str, events: int, stripe_port: int, out_dir: Path) -> int:
    """Instructions of one process that runs WARM + `events` events with the code at `code_root`."""
    import psycopg

    from bench.webhooks.run import drop_database

    database = f"{TEMPLATE}_{label}_{events}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}" TEMPLATE "{TEMPLATE}"')
    try:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("GIVING_")},
            "GIVING_DATABASE__URL": ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}",
            "GIVING_BROKER__URL": "",
            "GIVING_STRIPE__SECRET_KEY": "sk_test_bench",
            "GIVING_STRIPE__WEBHOOK_SECRET": "whsec_bench_secret",
            "GIVING_STRIPE__API_BASE": f"http://127.0.0.1:{stripe_port}",
            "GIVING_ENV": "production",
            "PYTHONPATH": str(code_root),
        }
        output = out_dir / f"callgrind.{label}.{events}"
        result = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={output}",
                sys.executable,
                str(Path(__file__).resolve()),
                "--run",
                str(WARM + events),
            ],
            cwd=code_root,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        processed = re.search(r"processed (\d+)", result.stdout)
        if processed is None or int(processed.group(1)) != WARM + events:
            raise RuntimeError(f"{label}: the events were not all processed:\n{result.stdout}\n{result.stderr}")
        collected = re.search(r"Collected : (\d+)", result.stderr)
        if collected is None:
            raise RuntimeError(f"{label}: no count from valgrind:\n{result.stderr[-2000:]}")
        return int(collected.group(1))
    finally:
        drop_database(database)


def run_events(count: int) -> None:
    """In the measured process: the first `count` stored events, one unit of work each, as the worker runs them."""
    import sqlalchemy as sa

    from core.runtime import build_runtime
    from core.settings import get_settings
    from giving.worker import import_tasks
    from webhooks import service

    import_tasks()
    runtime = build_runtime(get_settings())
    with runtime.engine.connect() as conn:
        ids = list(conn.execute(sa.text("SELECT id FROM inbound_events ORDER BY id LIMIT :n"), {"n": count}).scalars())
    for event_id in ids:
        service.run_event(runtime, event_id)
    with runtime.engine.connect() as conn:
        done = conn.execute(sa.text("SELECT count(*) FROM inbound_events WHERE status = 'processed'")).scalar()
    print(f"processed {done}")


def measure(code_root: Path, label: str, events: int, stripe_port: int, out_dir: Path) -> float:
    few = count_instructions(code_root, label, 0, stripe_port, out_dir)
    more = count_instructions(code_root, label, events, stripe_port, out_dir)
    return (more - few) / events


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--against", default="HEAD", help="the revision to compare with (default HEAD)")
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--run", type=int, help=argparse.SUPPRESS)  # the measured child process
    args = parser.parse_args()
    if args.run is not None:
        run_events(args.run)
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is needed (Debian's valgrind package)")
    sys.path.insert(0, str(ROOT))
    from concurrent.futures import ThreadPoolExecutor

    from bench.webhooks.run import drop_database, free_port, wait_for_port

    with tempfile.TemporaryDirectory(prefix="giving-instr-") as scratch:
        scratch_dir = Path(scratch)
        other = scratch_dir / "main"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(other), args.against], cwd=ROOT, check=True)
        stripe_port = free_port()
        uvicorn = [sys.executable, "-m", "uvicorn", "--log-level", "warning", "--lifespan", "off"]
        stripe = subprocess.Popen(
            [*uvicorn, "--port", str(stripe_port), "bench.webhooks.fake_stripe:app"], cwd=ROOT, start_new_session=True
        )
        try:
            print(f"preparing {WARM + args.events} checkouts and their events ...", flush=True)
            prepare_template(WARM + args.events)
            wait_for_port(stripe_port)
            print(f"counting instructions: this checkout and {args.against}, side by side ...", flush=True)
            with ThreadPoolExecutor(2) as pool:
                ours = pool.submit(measure, ROOT, "ours", args.events, stripe_port, scratch_dir)
                theirs = pool.submit(measure, other, "theirs", args.events, stripe_port, scratch_dir)
                ours_per_event, theirs_per_event = ours.result(), theirs.result()
        finally:
            stripe.terminate()
            stripe.wait(10)
            drop_database(TEMPLATE)
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=ROOT, check=False)
    change = 100 * (ours_per_event - theirs_per_event) / theirs_per_event
    print(f"this checkout          {ours_per_event / 1e6:8.2f} million instructions per event")
    print(f"{args.against:<22} {theirs_per_event / 1e6:8.2f} million instructions per event (baseline)")
    print(f"change: {change:+.1f}%")


if __name__ == "__main__":
    main()
