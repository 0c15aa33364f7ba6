"""`giving events replay EVENT_ID`, `giving events catch-up`, `giving events status`,
`giving payments overdue [--today YYYY-MM-DD]`."""

from __future__ import annotations

import datetime as dt
import json

import typer

from core.money import format_pence

# A provider's name, then the settings that turn it on (core.settings: `enabled`).
PROVIDER_SECRETS = {
    "stripe": ("Stripe", "GIVING_STRIPE__SECRET_KEY", "GIVING_STRIPE__WEBHOOK_SECRET"),
    "gocardless": ("GoCardless", "GIVING_GOCARDLESS__ACCESS_TOKEN", "GIVING_GOCARDLESS__WEBHOOK_SECRET"),
}


def register(app: typer.Typer) -> None:
    events_app = typer.Typer(no_args_is_help=True, help="Provider events (webhooks) stored here.")
    payments_app = typer.Typer(no_args_is_help=True, help="Gifts and regular gifts.")
    app.add_typer(events_app, name="events")
    app.add_typer(payments_app, name="payments")

    @events_app.command("replay")
    def replay(event_id: str = typer.Argument(..., help="Our event id, or the provider's (evt_..., EV...).")) -> None:
        """Process a stored provider event again (its effects are idempotent, so this is always safe)."""
        from giving.cli import command_runtime, fail
        from webhooks import service
        from webhooks.models import EventStatus

        with command_runtime() as runtime:
            with runtime.read_session() as session:
                event = service.find_event(session, event_id)
                stored_id, label = event.id, f"{event.provider} {event.external_id} {event.event_type}"
                provider = str(event.provider)
            # Run without the provider's secrets (a shell on the server without the service's environment), the
            # provider call would fail and turn an event processed long ago into a failed one.
            if not getattr(runtime.settings, provider).enabled:
                names = PROVIDER_SECRETS[provider]
                fail(f"{names[0]} is not configured here ({', '.join(names[1:])}): {label} is left as it is")
            result = service.run_event(runtime, stored_id, force=True)
            line = f"{label}: {result.status}"
            if result.waiting_for:
                line += f" (waits for {result.waiting_for})"
            elif result.note:
                line += f" ({result.note})"
            typer.echo(line)
            if result.status == EventStatus.FAILED:
                fail(f"processing failed: {result.note}")

    @events_app.command("catch-up")
    def catch_up(
        days: int = typer.Option(3, min=1, max=30, help="How far back to list the providers' events."),
        as_json: bool = typer.Option(False, "--json", help="Print the drift report as JSON."),
    ) -> None:
        """List the providers' recent events and store any that never reached the webhook; print the drift."""
        from giving.cli import command_runtime
        from webhooks import service

        with command_runtime() as runtime:
            report = service.catch_up(runtime, since=dt.timedelta(days=days))
        if as_json:
            typer.echo(json.dumps({"providers": [drift.to_json() for drift in report]}))
            return
        if not report:
            typer.echo("no provider is configured")
        for drift in report:
            typer.echo(f"{drift.provider}: {drift.listed} listed, {len(drift.missing)} never delivered (now stored)")
            for missing in drift.missing:
                typer.echo(f"  {missing}")

    @events_app.command("status")
    def status() -> None:
        """How many stored events are in each state."""
        from giving.cli import command_runtime
        from webhooks import service

        with command_runtime() as runtime, runtime.read_session() as session:
            counts = service.status_counts(session)
        typer.echo(json.dumps(counts, sort_keys=True))

    @payments_app.command("overdue")
    def overdue(
        today: str = typer.Option(
            "", "--today", help="List what is overdue as of this day (YYYY-MM-DD); default: today in the UK."
        ),
    ) -> None:
        """Monthly gifts whose expected instalment has not arrived by its due date plus the grace period."""
        from giving.cli import command_runtime, option_date
        from payments import service

        day = option_date(today, "--today") if today else None
        with command_runtime() as runtime, runtime.read_session() as session:
            grace = runtime.settings.donations.regular_grace_days
            for item in service.missing_instalments(session, today=day, grace_days=grace):
                typer.echo(
                    f"{item.due_on} {item.regular_gift_id} supporter {item.supporter_id} "
                    f"{format_pence(item.amount, item.currency)} ({item.provider})"
                )
