"""`giving receipts annual --tax-year 2025-26` and `giving receipts postal-batch`.

The annual run first numbers every statement and records one durable render job per statement (batches of
`--batch` statements per transaction), then shows the workers' progress. Everything it does is recorded before it
is sent, so stopping it at any point and running it again numbers, renders and sends nothing twice: supporters who
already have a statement for the year are skipped, and render/send jobs left pending are sent again (at once with
the in-process worker; by the workers' sweep with a broker).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from core import jobs
from core.runtime import InlineWorker, Runtime
from receipts import documents as docs
from receipts import service
from receipts.errors import TaxYearNotOver
from receipts.models import DocumentKind, DocumentStatus

POLL_SECONDS = 0.5
# How often a broker-less run sweeps for jobs left pending (it starts no scheduler): a job another process held as it
# started is that process's, and is sent again here only if that run dies (2 minutes after its time limit).
SWEEP_SECONDS = 60.0


@dataclass
class AnnualOutcome:
    tax_year: str
    numbered_now: int
    statements: int
    issued: int
    emailed: int
    failed: int
    for_post: int
    pending_email: int
    finished: bool


def number_statements(
    runtime: Runtime,
    tax_year: str,
    *,
    everyone: bool,
    batch: int = 200,
    limit: int | None = None,
    advance: Callable[[int], None] = lambda _n: None,
    year_to_date: bool = False,
) -> int:
    """Number the statements still missing for the year and record their render jobs; returns how many. A year
    not yet over is refused (`receipts.errors.TaxYearNotOver`) unless `year_to_date`."""
    if not year_to_date:
        service.ensure_tax_year_over(tax_year)
    with runtime.read_session() as session:
        candidates = service.statement_candidates(session, tax_year, everyone=everyone)
    if limit is not None:
        candidates = candidates[:limit]
    numbered = 0
    for start in range(0, len(candidates), batch):
        chunk = candidates[start : start + batch]
        with runtime.unit_of_work() as uow:
            for supporter_id in chunk:
                document = service.allocate_annual_statement(
                    uow, runtime.settings, supporter_id, tax_year, year_to_date=year_to_date
                )
                if document is not None and document.status == DocumentStatus.ALLOCATED:
                    uow.enqueue("receipts.render_document", document_id=str(document.id))
                    numbered += 1
        advance(len(chunk))
    return numbered


def annual_outcome(runtime: Runtime, tax_year: str, numbered_now: int) -> AnnualOutcome:
    with runtime.read_session() as session:
        counts = service.statement_progress(session, tax_year)
    allocated = counts.get(DocumentStatus.ALLOCATED.value, 0)
    issued = counts.get(DocumentStatus.ISSUED.value, 0)
    pending_email = counts.get("email_pending", 0)
    return AnnualOutcome(
        tax_year=tax_year,
        numbered_now=numbered_now,
        statements=allocated + issued,
        issued=issued,
        emailed=counts.get("email_sent", 0),
        failed=counts.get("email_failed", 0),
        # Postal deliveries wait for `postal-batch`; only emails still to send keep the run going.
        for_post=counts.get("post_pending", 0) + counts.get("post_posted", 0),
        pending_email=pending_email,
        finished=allocated == 0 and pending_email == 0,
    )


def run_annual(
    runtime: Runtime,
    tax_year: str,
    *,
    everyone: bool = False,
    wait: bool = True,
    batch: int = 200,
    limit: int | None = None,
    console: Console | None = None,
    timeout: float | None = None,
    year_to_date: bool = False,
) -> AnnualOutcome:
    console = console or Console(stderr=True)
    inline: InlineWorker | None = None
    if runtime.inline and wait:
        # No broker: this process is the worker. Jobs a stopped run left pending are in no queue: send them again
        # (not those a live process is running: a broker-less `giving serve` on the same database).
        inline = InlineWorker(runtime, runtime.settings.broker.inline_threads)
        inline.send_pending()
        inline.start(scheduler=False)
    try:
        with runtime.read_session() as session:
            todo = len(service.statement_candidates(session, tax_year, everyone=everyone))
        if limit is not None:
            todo = min(todo, limit)
        with _progress(console) as progress:
            numbering = progress.add_task(f"Numbering {tax_year} statements", total=todo)
            numbered = number_statements(
                runtime,
                tax_year,
                everyone=everyone,
                batch=batch,
                limit=limit,
                advance=lambda n: progress.advance(numbering, n),
                year_to_date=year_to_date,
            )
            outcome = annual_outcome(runtime, tax_year, numbered)
            if not wait:
                return outcome
            rendering = progress.add_task("Rendering and sending", total=outcome.statements)
            deadline = None if timeout is None else time.monotonic() + timeout
            next_sweep = time.monotonic() + SWEEP_SECONDS
            while not outcome.finished:
                done = outcome.issued - outcome.pending_email
                progress.update(rendering, completed=max(done, 0), total=outcome.statements)
                if deadline is not None and time.monotonic() > deadline:
                    break
                time.sleep(POLL_SECONDS)
                if inline is not None and time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + SWEEP_SECONDS
                    with runtime.unit_of_work() as uow:
                        jobs.resend_pending(uow)
                outcome = annual_outcome(runtime, tax_year, numbered)
            progress.update(rendering, completed=outcome.issued - outcome.pending_email)
        return outcome
    finally:
        if inline is not None:
            inline.stop()


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def register(app: typer.Typer) -> None:
    receipts_app = typer.Typer(no_args_is_help=True, help="Receipts, annual statements and the postal batch.")
    app.add_typer(receipts_app, name="receipts")

    @receipts_app.command("annual")
    def annual(
        tax_year: str = typer.Option(..., "--tax-year", help="The tax year, e.g. 2025-26 (6 April to 5 April)."),
        everyone: bool = typer.Option(
            False,
            "--everyone",
            help=(
                "Every supporter who gave in the year, not only those who chose a statement (or whose merged "
                "record did)."
            ),
        ),
        wait: bool = typer.Option(True, "--wait/--no-wait", help="Show progress until every statement is sent."),
        batch: int = typer.Option(200, "--batch", min=1, max=10_000, help="Statements numbered per transaction."),
        limit: int | None = typer.Option(None, "--limit", min=1, help="At most this many new statements this run."),
        as_json: bool = typer.Option(False, "--json", help="Print the outcome as one JSON object."),
        year_to_date: bool = typer.Option(
            False,
            "--year-to-date",
            help="Allow a tax year not yet over; each statement then stands as the year's (one per supporter).",
        ),
    ) -> None:
        """Number, render and send the annual statements of a tax year; safe to stop and run again."""
        from giving.cli import command_runtime, fail

        try:
            docs.parse_tax_year(tax_year)
            if not year_to_date:
                service.ensure_tax_year_over(tax_year)
        except (docs.TaxYearError, TaxYearNotOver) as exc:
            fail(str(exc))
        console = Console(stderr=True)
        with command_runtime() as runtime:
            try:
                outcome = run_annual(
                    runtime,
                    tax_year,
                    everyone=everyone,
                    wait=wait,
                    batch=batch,
                    limit=limit,
                    console=console,
                    year_to_date=year_to_date,
                )
            except KeyboardInterrupt:
                console.print("stopped; run the same command again to carry on (nothing is sent twice)")
                raise typer.Exit(130) from None
        if as_json:
            typer.echo(json.dumps(asdict(outcome)))
            return
        typer.echo(
            f"{outcome.tax_year}: {outcome.statements} statements ({outcome.numbered_now} new this run), "
            f"{outcome.issued} issued, {outcome.emailed} emailed, {outcome.for_post} for the post, "
            f"{outcome.failed} failed"
        )
        if outcome.for_post:
            typer.echo("run `giving receipts postal-batch` to print the statements that go by post", err=True)

    @receipts_app.command("postal-batch")
    def postal_batch(
        limit: int = typer.Option(500, "--limit", min=1, help="At most this many documents in the batch."),
    ) -> None:
        """One PDF of every document waiting for the post (supporters without email); prints its path."""
        from giving.cli import command_runtime, fail
        from receipts import tasks

        with command_runtime() as runtime:
            batch = tasks.make_postal_batch(runtime, limit=limit)  # rendered with no transaction open
            if batch is None:
                fail("nothing is waiting for the post", code=3)
                return
            typer.echo(service.postal_batch_path(runtime.settings, batch))
            typer.echo(f"{batch.documents} documents to print and post today", err=True)

    @receipts_app.command("list")
    def list_documents(
        # The enum as the option's type: click refuses another value as a usage error (exit 2) listing the kinds.
        kind: DocumentKind | None = typer.Option(None, "--kind", help="Only documents of this kind."),  # noqa: B008
        limit: int = typer.Option(50, "--limit", min=1),
    ) -> None:
        """The newest issued documents and where their PDFs are."""
        from giving.cli import command_runtime

        with command_runtime(with_tasks=False) as runtime, runtime.read_session() as session:
            for reference, path in service.issued_paths(session, runtime.settings, kind=kind, limit=limit):
                typer.echo(f"{reference}\t{path}")
