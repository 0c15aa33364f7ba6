"""Receipts throughput: the project's pipeline against weasyprint alone, in the same run.

    .venv/bin/python bench/receipts/bench.py                 # SQLite in a temporary directory
    .venv/bin/python bench/receipts/bench.py --postgres      # a temporary PostgreSQL database
    .venv/bin/python bench/receipts/bench.py --durable-jobs  # each job with its durable jobs row, as a worker runs it

Pipeline: the real jobs (`receipts.tasks.issue_for_gift` / `issue_annual_statement`): read the rows, number the
document under the counter lock, build its content, Jinja2, weasyprint, store the PDF with its SHA-256, mark it
issued and record its email job. Baseline: the same HTML (rendered from the pipeline's documents) straight through
weasyprint with one stylesheet and one FontConfiguration reused per process, nothing else. Both run with one and
with two worker processes (fork); start-up and warm-up are outside the timings. It prints documents per second,
the pipeline's share of the baseline, and the projected time for 50,000 statements on two cores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from dramatiq.brokers.stub import StubBroker  # noqa: E402

from bench.webhooks.run import cpu_seconds_by_process  # noqa: E402
from core import migrate  # noqa: E402
from core.clock import UK  # noqa: E402
from core.runtime import Runtime, build_runtime  # noqa: E402
from core.settings import Settings, load_settings  # noqa: E402
from crm.models import Declaration, DeclarationMethod, DeclarationScope, StatementPreference, Supporter  # noqa: E402
from giving.worker import import_tasks  # noqa: E402
from payments.models import Gift, GiftStatus, Method, Provider  # noqa: E402

TAX_YEAR = "2025-26"
TARGET_SHARE = 0.90
TARGET_MINUTES = 60
PROJECTED_STATEMENTS = 50_000
POSTGRES_ADMIN_URL = os.environ.get("GIVING_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")

# --- worker-process state (set by the pool initialisers) -----------------------------------------------------------
_runtime: Runtime | None = None
_baseline: dict[str, Any] = {}
_render_cpu = [0.0]  # CPU seconds the pipeline process spent in weasyprint (`receipts.render.html_to_pdf`)


def _donor(i: int) -> dict[str, Any]:
    return {
        "title": "Ms",
        "first_name": f"Donor{i}",
        "last_name": "Example",
        "address_line1": f"{i % 200 + 1} Acacia Avenue",
        "address_line2": "",
        "town": "Dover",
        "postcode": "CT16 1AA",
        "country": "GB",
    }


def seed(runtime: Runtime, gifts: int, statements: int, per_statement: int) -> tuple[list[str], list[str]]:
    """Supporters with one gift each (receipts) and supporters with `per_statement` gifts in the tax year. The
    last of each is kept back for the processes' warm-up."""
    gift_ids: list[str] = []
    statement_supporters: list[str] = []
    start = dt.date(2025, 4, 6)
    with runtime.unit_of_work() as uow:
        session = uow.session
        for i in range(gifts + statements):
            annual = i >= gifts
            supporter = Supporter(
                email=f"donor{i}@example.org",
                first_name=f"Donor{i}",
                last_name="Example",
                statement_preference=StatementPreference.ANNUAL if annual else StatementPreference.PER_GIFT,
            )
            session.add(supporter)
            session.flush()
            if i % 2 == 0:
                session.add(
                    Declaration(
                        supporter_id=supporter.id,
                        method=DeclarationMethod.ONLINE,
                        made_on=dt.date(2025, 4, 1),
                        scope=DeclarationScope.PAST_4_YEARS_AND_FUTURE,
                        start=dt.date(2021, 4, 1),
                        first_name=f"Donor{i}",
                        last_name="Example",
                        address_line1="1 Acacia Avenue",
                        house="1",
                        postcode="CT16 1AA",
                    )
                )
            for g in range(per_statement if annual else 1):
                received_on = start + dt.timedelta(days=30 * g + i % 25)
                gift = Gift(
                    supporter_id=supporter.id,
                    amount=500 + (i * 37 + g * 101) % 20_000,
                    status=GiftStatus.PAID,
                    provider=Provider.STRIPE,
                    method=Method.CARD if g % 2 else Method.DIRECT_DEBIT,
                    received_at=dt.datetime.combine(received_on, dt.time(12), UK).astimezone(dt.UTC),
                    received_on=received_on,
                    appeal="winter-appeal" if g % 3 else None,
                    donor=_donor(i),
                )
                session.add(gift)
                if not annual:
                    gift_ids.append(str(gift.id))
            if annual:
                statement_supporters.append(str(supporter.id))
    return gift_ids, statement_supporters


def reset_documents(runtime: Runtime) -> None:
    with runtime.engine.begin() as conn:
        for table in ("document_deliveries", "postal_batches", "documents", "document_counters", "jobs"):
            conn.exec_driver_sql(f"DELETE FROM {table}")
    shutil.rmtree(runtime.settings.receipts.storage_dir, ignore_errors=True)


# --- pipeline workers ----------------------------------------------------------------------------------------------


def _settle() -> None:
    """After the warm-up, as a long-lived worker would be: what the process inherited and loaded is moved out of
    the garbage collector's way (`gc.freeze`), so collections scan only what the documents allocate. Both the
    pipeline and the baseline processes do this."""
    import gc

    gc.collect()
    gc.freeze()


class _Rollback(Exception):
    pass


def _pipeline_init(settings: Settings, warm_gift: str, warm_supporter: str, ready: Any) -> None:
    """A worker process as `giving worker` has it after its first jobs: fonts, stylesheet, templates, compiled
    queries and a connection warm. The warm-up issues one receipt and one statement and rolls them back."""
    global _runtime
    import_tasks()
    _runtime = build_runtime(settings, broker=StubBroker(fail_fast_default=False))
    from receipts import render, service

    for allocate in (
        lambda uow: service.allocate_gift_receipt(uow, settings, uuid.UUID(warm_gift)),
        lambda uow: service.allocate_annual_statement(uow, settings, uuid.UUID(warm_supporter), TAX_YEAR),
    ):
        try:
            with _runtime.unit_of_work() as uow:
                job = service.render_job_of(allocate(uow))
                assert job is not None
                render.render_pdf(job.content)
                service.record_rendered(uow, job.document_id, storage_key="warm-up", digest="", size=0)
                raise _Rollback
        except _Rollback:
            pass
    html_to_pdf = render.html_to_pdf

    def timed_html_to_pdf(html: str) -> bytes:
        # The weasyprint call alone, to set beside the baseline's (what the rest of the pipeline costs is the rest).
        started = time.process_time()
        try:
            return html_to_pdf(html)
        finally:
            _render_cpu[0] += time.process_time() - started

    render.html_to_pdf = timed_html_to_pdf
    _settle()
    ready.wait()


def _timed(run: Callable[[], Any]) -> tuple[float, float]:
    """(CPU seconds of the job, of which in weasyprint)."""
    rendered = _render_cpu[0]
    started = time.process_time()
    run()
    return time.process_time() - started, _render_cpu[0] - rendered


def _pipeline_gift(gift_id: str) -> tuple[float, float]:
    from receipts import tasks

    return _timed(lambda: tasks.issue_for_gift(gift_id=gift_id))


def _pipeline_statement(supporter_id: str) -> tuple[float, float]:
    from receipts import tasks

    return _timed(lambda: tasks.issue_annual_statement(supporter_id=supporter_id, tax_year=TAX_YEAR))


def _pipeline_durable(message: tuple[str, dict[str, str]]) -> tuple[float, float]:
    """`--durable-jobs`: the message as the worker runs it, with its durable `jobs` row (`core.jobs`: the receipts
    jobs claim the row in their numbering transaction and mark it done with their last recording, `claims_itself`;
    the job-duration metric)."""
    import dramatiq

    actor_name, kwargs = message
    run = dramatiq.get_broker().get_actor(actor_name).fn
    return _timed(lambda: run(**kwargs))


def _pipeline_on_threads(batch: tuple[Callable[[Any], tuple[float, float]], list[Any], int]) -> tuple[float, float]:
    """`--threads`: one process's share of the jobs on that many threads, as `giving worker --threads` runs them.
    CPU is the whole batch's (the process's, all threads): one thread's share cannot be told apart."""
    from concurrent.futures import ThreadPoolExecutor

    job, items, threads = batch
    started = time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(job, items))
    return time.process_time() - started, 0.0


def durable_messages(runtime: Runtime, actor_name: str, items: Sequence[dict[str, str]]) -> list[Any]:
    """A durable `jobs` row for each job, as the code that asks for them writes them (payments when a gift is paid),
    before the timing; returns the messages (with their `job_id`) for the workers."""
    with runtime.unit_of_work() as uow:
        for kwargs in items:
            uow.enqueue(actor_name, **kwargs)
        messages = [(job.actor_name, job.kwargs) for job in uow.jobs]
    return messages


# --- baseline workers ----------------------------------------------------------------------------------------------


def _baseline_init(stylesheet: str, base_url: str, ready: Any) -> None:
    from weasyprint import CSS, HTML

    from receipts import render
    from receipts.documents import load

    # As the pipeline parses it: the @font-face rules load the packaged fonts relative to the stylesheet.
    font_config = render.font_configuration()
    css = CSS(string=stylesheet, base_url=render.STYLESHEET, font_config=font_config)
    _baseline.update(css=css, fonts=font_config, base_url=base_url)

    HTML(string=render.render_html(load(_sample_content())), base_url=base_url).write_pdf(
        stylesheets=[_baseline["css"]], font_config=font_config
    )
    _settle()
    ready.wait()


def _baseline_render(html: str) -> tuple[float, float]:
    from weasyprint import HTML

    started = time.process_time()
    HTML(string=html, base_url=_baseline["base_url"]).write_pdf(
        stylesheets=[_baseline["css"]], font_config=_baseline["fonts"]
    )
    cpu = time.process_time() - started
    return cpu, cpu


def _sample_content() -> dict[str, Any]:
    from receipts import documents as docs

    charity = docs.Charity(
        name="Warm-up",
        registration="Registered charity number 1",
        address="1 Street",
        postcode="CT16 1AA",
        email="a@example.org",
        phone="0",
    )
    return docs.dump(
        docs.GiftReceipt(
            reference="GR-000000",
            issued_on=dt.date(2025, 1, 1),
            charity=charity,
            donor=docs.Donor(first_name="A", last_name="B"),
            gift_id=str(uuid.uuid4()),
            amount=100,
            received_on=dt.date(2025, 1, 1),
            method="Card",
            appeal="General fund",
            description="One-off gift",
            gift_aid=docs.GiftAidNote(status="invite"),
        )
    )


def timed_pool(
    processes: int,
    initializer: Callable[..., None],
    initargs: tuple[Any, ...],
    fn: Callable[[Any], tuple[float, float]],
    items: Sequence[Any],
    chunksize: int = 8,
) -> tuple[float, float, float, float]:
    """(wall seconds, CPU seconds, of which in weasyprint, PostgreSQL's CPU seconds meanwhile) to run `fn` over
    `items` on `processes` warmed-up processes (start-up not counted). CPU time is what the work itself cost,
    whatever else the machine was doing meanwhile; PostgreSQL's is every server process's on this machine."""
    context = mp.get_context("fork")
    ready = context.Barrier(processes + 1)
    with context.Pool(processes, initializer=initializer, initargs=(*initargs, ready)) as pool:
        ready.wait()
        postgres_before = cpu_seconds_by_process().get("PostgreSQL", 0.0)
        started = time.perf_counter()
        cpu = render = 0.0
        for job_cpu, render_cpu in pool.imap_unordered(fn, items, chunksize=chunksize):
            cpu, render = cpu + job_cpu, render + render_cpu
        elapsed = time.perf_counter() - started
        postgres = cpu_seconds_by_process().get("PostgreSQL", 0.0) - postgres_before
    return elapsed, cpu, render, postgres


def issued_html(runtime: Runtime, kind: str, after_number: int = 0) -> list[str]:
    """The HTML of the documents of a kind numbered after `after_number`, as the pipeline rendered them."""
    from sqlmodel import col, select

    from receipts import render
    from receipts.documents import load
    from receipts.models import Document

    logo = render.logo_markup(runtime.settings.charity.logo_path)
    with runtime.read_session() as session:
        rows = session.exec(
            select(Document.content)
            .where(Document.kind == kind, col(Document.number) > after_number)
            .order_by(col(Document.number))
        ).all()
    return [render.render_html(load(content), logo=logo) for content in rows]


def check_issued(runtime: Runtime, kind: str, expected: int) -> None:
    from sqlmodel import select

    from receipts.models import Document, DocumentStatus

    with runtime.read_session() as session:
        issued = len(
            session.exec(
                select(Document.id).where(Document.kind == kind, Document.status == DocumentStatus.ISSUED)
            ).all()
        )
    if issued != expected:
        raise SystemExit(f"the pipeline issued {issued} {kind} documents, expected {expected}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gifts", type=int, default=2000, help="gift receipts to render (one gift each)")
    parser.add_argument("--statements", type=int, default=500, help="annual statements to render")
    parser.add_argument("--per-statement", type=int, default=12, help="gifts on each statement")
    parser.add_argument("--processes", default="1,2", help="worker process counts to measure")
    parser.add_argument("--postgres", action="store_true", help="use a temporary PostgreSQL database")
    parser.add_argument("--rounds", type=int, default=4, help="alternate pipeline and baseline this many times")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="run each pipeline process's jobs on this many threads, as `giving worker --threads` does (default 1)",
    )
    parser.add_argument(
        "--durable-jobs",
        action="store_true",
        help="run each pipeline job as the worker runs a message: with its durable jobs row (claimed, marked done)",
    )
    args = parser.parse_args()
    counts = [int(p) for p in args.processes.split(",")]

    from receipts import render

    if not render.harfbuzz_subset_available():
        print("WARNING: libharfbuzz-subset0 is missing: weasyprint will be 2-3x slower", file=sys.stderr)

    workdir = Path(tempfile.mkdtemp(prefix="bench-receipts-"))
    pg_name = None
    if args.postgres:
        pg_name = f"bench_receipts_{os.getpid()}"
        admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{pg_name}"')
        url = sa.make_url(POSTGRES_ADMIN_URL).set(database=pg_name).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{workdir / 'bench.sqlite3'}"
    try:
        migrate.upgrade(url)
        settings = load_settings(
            env="test",
            database={"url": url},
            broker={"url": ""},
            receipts={"storage_dir": str(workdir / "receipts")},
        )
        import_tasks()
        runtime = build_runtime(settings, broker=StubBroker(fail_fast_default=False))
        seeded = time.perf_counter()
        gift_ids, statement_ids = seed(runtime, args.gifts + 1, args.statements + 1, args.per_statement)
        warm = (gift_ids.pop(), statement_ids.pop())
        print(
            f"database: {'PostgreSQL' if args.postgres else 'SQLite'}; seeded {len(gift_ids)} receipt gifts and "
            f"{len(statement_ids)} supporters x {args.per_statement} gifts in {time.perf_counter() - seeded:.1f} s; "
            f"hb-subset: {'yes' if render.harfbuzz_subset_available() else 'NO'}; cpus: {os.cpu_count()}; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        stylesheet = render.STYLESHEET.read_text(encoding="utf-8")
        base_url = str(render.TEMPLATES_DIR)
        # (label, processes) -> (pipeline docs/s, baseline docs/s, pipeline CPU ms/doc, baseline CPU ms/doc)
        results: dict[tuple[str, int], tuple[float, float, float, float]] = {}
        cases: list[tuple[str, str, list[str], Callable[[Any], tuple[float, float]]]] = [
            ("gift receipts", "gift_receipt", gift_ids, _pipeline_gift),
            (f"annual statements ({args.per_statement} gifts)", "annual_statement", statement_ids, _pipeline_statement),
        ]
        durable_jobs: dict[str, tuple[str, Callable[[str], dict[str, str]]]] = {
            "gift_receipt": ("receipts.issue_for_gift", lambda i: {"gift_id": i}),
            "annual_statement": (
                "receipts.issue_annual_statement",
                lambda i: {"supporter_id": i, "tax_year": TAX_YEAR},
            ),
        }
        if args.durable_jobs:
            print("pipeline jobs run with their durable jobs rows (claim, job, mark done), as a worker runs them")
        if args.threads > 1:
            print(f"pipeline processes run their jobs on {args.threads} threads each (the weasyprint split is n/a)")
        print(
            "docs/s is wall-clock (it drops when other programs share the cores); CPU ms/doc is what each document "
            "cost the worker process itself; PostgreSQL's CPU (every server process on this machine while the "
            "pipeline ran) is on the line below it, in none of the other figures."
        )
        for label, kind, ids, direct_job in cases:
            for processes in counts:
                reset_documents(runtime)
                work: list[Any] = list(ids)
                job = direct_job
                if args.durable_jobs:
                    actor_name, kwargs_of = durable_jobs[kind]
                    work = durable_messages(runtime, actor_name, [kwargs_of(i) for i in ids])
                    job = _pipeline_durable
                # Rounds alternate pipeline and baseline, so both see the same machine (other load comes and goes).
                size = -(-len(ids) // args.rounds)
                pipeline = baseline = pipeline_cpu = baseline_cpu = pipeline_render = pipeline_postgres = 0.0
                rendered = 0
                loads = [os.getloadavg()[0]]
                for start in range(0, len(ids), size):
                    chunk = work[start : start + size]
                    runtime.engine.dispose()
                    if args.threads > 1:
                        batches = [(job, chunk[n::processes], args.threads) for n in range(processes)]
                        # One batch to each process (chunksize 1), which runs it on its threads.
                        init = (settings, *warm)
                        timed = timed_pool(processes, _pipeline_init, init, _pipeline_on_threads, batches, chunksize=1)
                    else:
                        timed = timed_pool(processes, _pipeline_init, (settings, *warm), job, chunk)
                    wall, cpu, render_cpu, postgres_cpu = timed
                    pipeline, pipeline_cpu = pipeline + wall, pipeline_cpu + cpu
                    pipeline_render += render_cpu
                    pipeline_postgres += postgres_cpu
                    html = issued_html(runtime, kind, after_number=start)
                    runtime.engine.dispose()
                    wall, cpu, _, _ = timed_pool(
                        processes, _baseline_init, (stylesheet, base_url), _baseline_render, html
                    )
                    baseline, baseline_cpu = baseline + wall, baseline_cpu + cpu
                    rendered += len(html)
                    loads.append(os.getloadavg()[0])
                check_issued(runtime, kind, len(ids))
                row = (
                    len(ids) / pipeline,
                    rendered / baseline,
                    pipeline_cpu * 1000 / len(ids),
                    baseline_cpu * 1000 / rendered,
                )
                results[(label, processes)] = row
                print(
                    f"{label:<30} {processes} proc  pipeline {row[0]:6.1f} docs/s {row[2]:6.1f} CPU ms/doc | "
                    f"baseline {row[1]:6.1f} docs/s {row[3]:6.1f} CPU ms/doc | pipeline/baseline: "
                    f"wall {row[0] / row[1]:6.1%}, CPU {row[3] / row[2]:6.1%} | load {max(loads):.1f}",
                    flush=True,
                )
                # Where the pipeline's extra CPU goes: weasyprint in its processes (same HTML as the baseline's)
                # and everything else (receipts' own work: queries, Jinja2, storing, recording).
                # PostgreSQL's CPU is on the same cores, but in none of the figures above.
                render_ms = pipeline_render * 1000 / len(ids)
                postgres_ms = pipeline_postgres * 1000 / len(ids)
                split = (
                    f"weasyprint {render_ms:6.1f} (baseline {row[3]:6.1f}), the rest {row[2] - render_ms:5.1f}; "
                    if args.threads == 1
                    else ""
                )
                print(f"{'':<30}         pipeline CPU ms/doc: {split}PostgreSQL {postgres_ms:5.1f}", flush=True)
        print()
        statements_label = cases[1][0]
        cores = max(counts)
        p_rate, b_rate, p_cpu, b_cpu = results[(statements_label, cores)]
        wall_minutes = PROJECTED_STATEMENTS / p_rate / 60
        cpu_minutes = PROJECTED_STATEMENTS * p_cpu / 1000 / cores / 60
        print(
            f"projected: {PROJECTED_STATEMENTS:,} statements of {args.per_statement} gifts on {cores} cores: "
            f"pipeline {wall_minutes:.1f} min at the measured wall-clock rate, {cpu_minutes:.1f} min from CPU cost "
            f"on {cores} dedicated cores (baseline {PROJECTED_STATEMENTS / b_rate / 60:.1f} / "
            f"{PROJECTED_STATEMENTS * b_cpu / 1000 / cores / 60:.1f} min); target < {TARGET_MINUTES} min: "
            f"{'met' if min(wall_minutes, cpu_minutes) < TARGET_MINUTES else 'NOT met'}"
        )
        worst_wall = min(r[0] / r[1] for r in results.values())
        worst_cpu = min(r[3] / r[2] for r in results.values())
        print(
            f"pipeline share of baseline, worst case: wall {worst_wall:.1%}, CPU {worst_cpu:.1%} "
            f"(target >= {TARGET_SHARE:.0%})"
        )
        runtime.engine.dispose()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if pg_name is not None:
            admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
            admin.dispose()


if __name__ == "__main__":
    main()
