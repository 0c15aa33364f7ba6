"""`giving demo`: the main job on the embedded default (contract.md), end to end, with what it produced and where."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        directory: Path = typer.Option(  # noqa: B008
            Path("var") / "demo", "--dir", help="Where the demo keeps its database, PDFs, emails and claim files."
        ),
        database_url: str = typer.Option(
            "", "--database-url", help="Run on this EMPTY database instead of DIR/giving.sqlite3 (e.g. PostgreSQL)."
        ),
        seed: int = typer.Option(20_260_406, "--seed", help="Order of the deliveries (the same seed, the same order)."),
        timeout: float = typer.Option(90.0, "--timeout", min=5, help="Seconds to wait for the workers at each step."),
        serve: bool = typer.Option(False, "--serve", help="Keep the web application running afterwards (Ctrl-C)."),
    ) -> None:
        """Donors through the real forms, signed Stripe and GoCardless deliveries (duplicated, out of order) through
        the real webhooks, receipts, statements, a Gift Aid claim and reconciled payouts, on SQLite under ./var/demo
        with no network and no services. Exit 0 when every check it makes holds."""
        from giving.demo.run import Options, run

        options = Options(
            directory=directory, database_url=database_url or None, seed=seed, timeout=timeout, serve=serve
        )
        raise typer.Exit(run(options))
