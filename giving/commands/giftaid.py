"""`giving giftaid ...`: build Gift Aid claims and their HMRC files, say why a gift is (not) claimable, move claims
through their states, talk to HMRC's gateway, and check a schedule with HMRC's rules."""

from __future__ import annotations

import getpass
import uuid
from pathlib import Path
from typing import Any

import typer

from core.money import Money, MoneyError


def _actor(by: str) -> str:
    if by:
        return by
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _id(text: str, what: str) -> uuid.UUID:
    from giving.cli import fail

    try:
        return uuid.UUID(text)
    except ValueError:
        fail(f"{text!r} is not a {what} id")
        raise  # unreachable


def _print_json(body: Any) -> None:
    from core.http import json_text

    typer.echo(json_text(body))


def _say_emptied_schedules(session: Any, claim: Any) -> None:
    """The schedules a take-off left empty have no file (`service.schedule_parts`): the others keep their numbers, so
    say which number has none, on stderr (stdout is the paths written), lest finance look for it."""
    from giftaid import service

    count = service.schedule_count(claim)
    missing = sorted(set(range(1, count + 1)) - set(service.schedule_parts(session, claim)))
    for part in missing:
        typer.echo(
            f"schedule {part} of {count}: no file (gifts HMRC would refuse were taken off and left it empty; "
            "the other schedules keep their numbers)",
            err=True,
        )


def register(app: typer.Typer) -> None:
    giftaid = typer.Typer(no_args_is_help=True, help="Gift Aid claims to HMRC.")
    app.add_typer(giftaid, name="giftaid")

    @giftaid.command("claim")
    def claim(
        through: str = typer.Option(..., "--through", help="Claim gifts received on or before this date (YYYY-MM-DD)."),
        out: Path = typer.Option(..., "--out", help="Folder for the schedule(s) and/or XML message(s)."),  # noqa: B008
        file_format: str = typer.Option("both", "--format", help="ods, xml or both."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
        by: str = typer.Option("", "--by", help="Who builds the claim (default: the system user)."),
    ) -> None:
        """Build a claim from every claimable gift received on or before DATE that is in no claim yet, and write
        HMRC's files. Exit 0 written, 3 nothing to claim, 1 error."""
        from giftaid import service
        from giving.cli import command_runtime, fail, option_date

        day = option_date(through, "--through")
        if file_format not in ("ods", "xml", "both"):
            fail("--format is ods, xml or both")
        written: list[Path] = []
        with command_runtime(with_tasks=False) as runtime:
            try:
                with runtime.unit_of_work() as uow:
                    result = service.build_claim(uow, runtime.settings, through=day, actor=_actor(by))
                    if result.claim_id is not None:
                        claim_row = service.get_claim(uow.session, result.claim_id)
                        written = service.write_claim_files(
                            uow.session,
                            runtime.settings,
                            claim_row,
                            out,
                            file_format,  # type: ignore[arg-type]
                            actor=_actor(by),
                        )
                        result.files = [str(p.resolve()) for p in written]
            except OSError as exc:
                for path in written:
                    path.unlink(missing_ok=True)
                fail(f"could not write into {out}: {exc}")
            except BaseException:
                for path in written:
                    path.unlink(missing_ok=True)
                raise
        if as_json:
            _print_json(result.to_json())
        elif result.claim_id is None:
            typer.echo(f"nothing to claim through {day.isoformat()} ({len(result.held_back)} gifts held back)")
        else:
            typer.echo(
                f"claim {result.claim_id}: {result.lines} lines ({result.gifts} gifts), donations "
                f"{Money(result.total).format()}, Gift Aid {Money(result.gift_aid).format()}, adjustment "
                f"{Money(result.adjustment).format()}"
            )
            for name in result.files:
                typer.echo(f"  {name}")
        if not as_json and result.held_back:
            typer.echo(f"{len(result.held_back)} gifts held back:", err=True)
            for held in result.held_back:
                typer.echo(f"  {held.gift_id}  {held.reason}", err=True)
        if result.claim_id is None:
            raise typer.Exit(3)

    @giftaid.command("explain")
    def explain(gift_id: str = typer.Argument(..., help="The gift's id.")) -> None:
        """Say in words whether and why a gift is or is not claimable."""
        from giftaid import service
        from giving.cli import command_runtime

        identifier = _id(gift_id, "gift")
        with command_runtime(with_tasks=False) as runtime, runtime.read_session() as session:
            explanation = service.explain(session, runtime.settings, identifier)
        typer.echo(f"{gift_id}: {explanation.reason}")

    @giftaid.command("claims")
    def claims(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
        """The claims, newest first."""
        from giftaid import service
        from giving.cli import command_runtime

        with command_runtime(with_tasks=False) as runtime, runtime.read_session() as session:
            items = [service.claim_json(session, c) for c in service.list_claims(session)]
        if as_json:
            _print_json({"items": items})
            return
        for item in items:
            typer.echo(
                f"{item['id']}  {item['status']:<9}  through {item['through']}  {item['lines']:>7} lines  "
                f"Gift Aid {item['gift_aid'].format()}"
            )

    @giftaid.command("export")
    def export(
        claim_id: str = typer.Argument(..., help="The claim's id."),
        out: Path = typer.Option(..., "--out", help="Folder for the files."),  # noqa: B008
        file_format: str = typer.Option("both", "--format", help="ods, xml or both."),
        by: str = typer.Option("", "--by", help="Who (default: the system user)."),
    ) -> None:
        """Write a claim's schedule(s) and/or XML message(s) again."""
        from giftaid import service
        from giving.cli import command_runtime, fail

        identifier = _id(claim_id, "claim")
        if file_format not in ("ods", "xml", "both"):
            fail("--format is ods, xml or both")
        with command_runtime(with_tasks=False) as runtime, runtime.unit_of_work() as uow:
            claim_row = service.get_claim(uow.session, identifier)
            try:
                # write_claim_files removes what it wrote if a later file fails: all of the claim's files or none.
                written = service.write_claim_files(
                    uow.session,
                    runtime.settings,
                    claim_row,
                    out,
                    file_format,  # type: ignore[arg-type]
                    actor=_actor(by),
                )
            except OSError as exc:
                fail(f"could not write into {out}: {exc}")
                return
            for path in written:
                typer.echo(str(path.resolve()))
            if file_format != "xml":
                _say_emptied_schedules(uow.session, service.get_claim(uow.session, identifier))

    @giftaid.command("status")
    def status(
        claim_id: str = typer.Argument(..., help="The claim's id."),
        new_status: str = typer.Argument(..., help="submitted, accepted, rejected or paid."),
        reason: str = typer.Option("", "--reason", help="Why (for rejected)."),
        amount: str = typer.Option("", "--amount", help="HMRC's payment in pounds (for paid), e.g. 1234.50."),
        paid_on: str = typer.Option("", "--paid-on", help="The date HMRC paid (for paid)."),
        by: str = typer.Option("", "--by", help="Who (default: the system user)."),
    ) -> None:
        """Record a claim's next step: submitted (e.g. uploaded by hand), accepted, rejected (releases its gifts)
        or paid."""
        from giftaid import service
        from giftaid.models import ClaimStatus
        from giving.cli import command_runtime, fail, option_date

        identifier = _id(claim_id, "claim")
        try:
            target = ClaimStatus(new_status)
        except ValueError:
            fail("the status is submitted, accepted, rejected or paid")
            return
        pence = None
        if amount:
            try:
                pence = Money.parse(amount).amount
            except MoneyError as exc:
                fail(str(exc))
        day = option_date(paid_on, "--paid-on") if paid_on else None
        # With the jobs: deciding a claim sent through the gateway records the delete of HMRC's copy.
        with command_runtime() as runtime, runtime.unit_of_work() as uow:
            claim_row = service.change_status(
                uow, identifier, target, actor=_actor(by), reason=reason, paid_amount=pence, paid_on=day
            )
            typer.echo(f"claim {claim_row.id} is {claim_row.status}")

    @giftaid.command("submit")
    def submit(
        claim_id: str = typer.Argument(...),
        by: str = typer.Option("", "--by"),
        again: bool = typer.Option(
            False, "--again", help="Send it again after a submission that got no answer (check gateway-list first)."
        ),
    ) -> None:
        """Send a built claim to HMRC's gateway (`\\[hmrc] gateway_url`)."""
        from giftaid import service
        from giving.cli import command_runtime, fail

        identifier = _id(claim_id, "claim")
        with command_runtime(with_tasks=False) as runtime, runtime.unit_of_work() as uow:
            claim_row = service.submit_claim(uow, runtime.settings, identifier, actor=_actor(by), again=again)
            refused = [service.error_words(e) for e in claim_row.errors] if claim_row.status == "built" else []
        if refused:
            fail("HMRC refused the claim: " + "; ".join(refused))
        typer.echo(f"claim {claim_row.id} submitted: correlation id {claim_row.correlation_id}")

    @giftaid.command("attach")
    def attach(
        claim_id: str = typer.Argument(..., help="The claim's id."),
        correlation_id: str = typer.Argument(..., help="Its correlation id, as gateway-list shows it."),
        by: str = typer.Option("", "--by", help="Who (default: the system user)."),
    ) -> None:
        """Attach the correlation id found with gateway-list to a claim whose submission got no answer: it becomes
        submitted and is polled as usual."""
        from giftaid import service
        from giving.cli import command_runtime

        identifier = _id(claim_id, "claim")
        with command_runtime(with_tasks=False) as runtime, runtime.unit_of_work() as uow:
            claim_row = service.attach_correlation_id(uow, identifier, correlation_id, actor=_actor(by))
            typer.echo(f"claim {claim_row.id} is {claim_row.status}: correlation id {claim_row.correlation_id}")

    @giftaid.command("poll")
    def poll(claim_id: str = typer.Argument(...), by: str = typer.Option("", "--by")) -> None:
        """Ask HMRC's gateway how a submitted claim went."""
        from giftaid import service
        from giving.cli import command_runtime

        identifier = _id(claim_id, "claim")
        # With the jobs: a verdict records the delete of HMRC's copy.
        with command_runtime() as runtime, runtime.unit_of_work() as uow:
            claim_row = service.poll_claim(uow, runtime.settings, identifier, actor=_actor(by))
            typer.echo(f"claim {claim_row.id} is {claim_row.status}")
            for error in claim_row.errors:
                typer.echo(f"  {service.error_words(error)} (gifts {', '.join(error['gift_ids']) or '-'})")

    @giftaid.command("gateway-list")
    def gateway_list(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
        """HMRC's gateway's list of our recent submissions (`list`): to find a claim's correlation id when a
        submission got no answer, before sending it again. The messages are kept."""
        from giftaid import service
        from giving.cli import command_runtime

        with command_runtime(with_tasks=False) as runtime, runtime.unit_of_work() as uow:
            reply = service.gateway_status(uow, runtime.settings)
        records = [
            {"timestamp": r.timestamp, "correlation_id": r.correlation_id, "status": r.status}
            for r in reply.status_records
        ]
        errors = [f"{e.number} {e.text}" for e in reply.errors if e.type != "warning"]
        if as_json:
            _print_json({"items": records, "errors": errors})
        else:
            for record in records:
                typer.echo(f"{record['timestamp']}  {record['correlation_id']}  {record['status']}")
        if errors:
            from giving.cli import fail

            fail("HMRC's gateway answered: " + "; ".join(errors))

    @giftaid.command("validate")
    def validate(
        path: Path = typer.Argument(..., help="A Gift Aid schedule (.ods)."),  # noqa: B008
    ) -> None:
        """Check a schedule with HMRC's rules and messages; exit 1 when it has problems."""
        from giftaid.validator import validate_schedule

        if not path.is_file():
            typer.echo(f"error: no file {path}", err=True)
            raise typer.Exit(1)
        report = validate_schedule(path)
        for error in report.errors:
            typer.echo(str(error))
        if not report.ok:
            raise typer.Exit(1)
        typer.echo(f"ok: {len(report.donations)} donations, total {report.total:.2f}")

    @giftaid.command("changes")
    def changes(
        setting: list[str] = typer.Option(  # noqa: B008
            ..., "--set", help="SECTION.KEY=VALUE, e.g. charity.financial_year_end=12-31."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """Which unclaimed gifts a change of settings would make claimable, or not (nothing is changed)."""
        from core.settings import SettingsError, load_settings
        from giftaid import service
        from giving.cli import command_runtime, fail

        with command_runtime(with_tasks=False) as runtime, runtime.read_session() as session:
            overrides: dict[str, dict[str, Any]] = {}
            for item in setting:
                key, _, value = item.partition("=")
                section, _, name = key.partition(".")
                if not section or not name or not _:
                    fail(f"--set takes SECTION.KEY=VALUE, not {item!r}")
                overrides.setdefault(section, {})[name] = value
            try:
                merged = {
                    section: {**getattr(runtime.settings, section).model_dump(), **values}
                    for section, values in overrides.items()
                }
                after = load_settings(**merged)
            except (SettingsError, AttributeError) as exc:
                fail(str(exc))
                return
            found = service.settings_changes(session, runtime.settings, after)
        if as_json:
            _print_json({"changed": [c.to_json() for c in found]})
            return
        for change in found:
            typer.echo(f"{change.gift_id}  {change.before or 'claimable'} -> {change.after or 'claimable'}")
        typer.echo(f"{len(found)} gifts would change", err=True)
