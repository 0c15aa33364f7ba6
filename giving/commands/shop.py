"""Money in the bank and the shop: `giving reconcile`, `giving payouts ...`, `giving export journal`,
`giving shop ...`.

Results go to stdout (a table, CSV or with `--json` exactly one JSON object); messages to stderr.
"""

from __future__ import annotations

import datetime as dt
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Annotated, Any

import sqlalchemy as sa
import typer
from sqlmodel import Session

from core.auth import audit
from core.clock import UK
from core.money import Money, format_pence
from core.runtime import Runtime
from payments import journal, payouts, shop
from payments.reconcile import MatchResult

GIFT_AID_RECEIVABLE = "Gift Aid receivable"
GIFT_AID_INCOME = "Gift Aid income"


def _period(start: str, end: str) -> tuple[dt.date, dt.date]:
    from giving.cli import fail, option_date

    first, last = option_date(start, "--from"), option_date(end, "--to")
    if last < first:
        fail("--to is before --from")
    return first, last


def _write_whole(out: Path, write: Callable[[IO[str]], None]) -> None:
    """Write a file beside `out`, then put it in its place: a failure part-way (a full disk) leaves no half file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.{uuid.uuid4().hex}.part")
    try:
        with partial.open("x", encoding="utf-8", newline="") as handle:
            write(handle)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)


def _emit_json(body: Any) -> None:
    from core.http import json_text

    typer.echo(json_text(body))


def reconciliation_lines(session: Session) -> list[str]:
    """One line per payout (newest first): what `giving reconcile` and `giving demo` print."""
    items, _ = payouts.list_payouts(session)
    out = []
    for item in items:
        unmatched = item["unmatched_lines"]
        fx = item["fx"]
        # A payout converted before it reached the bank: what the bank statement shows, and at what rate.
        banked = (
            f", reached the bank as {format_pence(**fx['amount'])} at {fx['exchange_rate']}"
            + (" (estimated)" if fx["estimated"] else "")
            if fx and fx["amount"]
            else ""
        )
        out.append(
            f"{item['provider']:<10} {item['provider_payout_id']:<28} {format_pence(**item['amount']):>12} "
            f"{item['status']:<12} discrepancy {format_pence(**item['discrepancy'])}"
            + (f", {unmatched} unmatched line(s)" if unmatched else "")
            + banked
        )
    return out


def reconcile_all(runtime: Runtime, *, payout: str | None = None, fetch: bool = False) -> list[MatchResult]:
    """Match every payout (or one) again; with `fetch`, load from the provider the lines of paid payouts that have
    none yet. Idempotent."""
    with runtime.unit_of_work() as uow:
        payout_id = payouts.find_payout(uow.session, payout).id if payout else None
        results = payouts.rematch(uow, payout_id, fetch_missing=fetch)
        audit(uow, None, "reconcile", "payout", payout or "all", {"payouts": len(results)})
    return results


def giftaid_postings(session: Session, start: dt.date, end: dt.date) -> list[journal.Posting]:
    """Gift Aid receivable: for each claim built in the period (and not rejected), the Gift Aid claimed less the
    adjustment it carries. Read from the giftaid tables only if they exist (payments cannot import giftaid)."""
    # Reflect through the session's own connection: a second one would wait on SQLite's write lock.
    connection = session.connection()
    bind = connection.engine
    if not sa.inspect(connection).has_table("giftaid_claims"):
        return []
    claims = sa.Table("giftaid_claims", sa.MetaData(), autoload_with=connection)
    needed = {"id", "status", "gift_aid", "built_at"}
    if not needed <= set(claims.c.keys()):
        return []
    since = dt.datetime.combine(start, dt.time(), tzinfo=UK).astimezone(dt.UTC)
    until = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), tzinfo=UK).astimezone(dt.UTC)
    adjustment = claims.c.adjustment if "adjustment" in claims.c else sa.literal(0)
    # SQLite keeps these timestamps without a zone (UTC).
    bound = (
        (since, until) if bind.dialect.name != "sqlite" else (since.replace(tzinfo=None), until.replace(tzinfo=None))
    )
    rows = session.connection().execute(
        sa.select(claims.c.id, claims.c.gift_aid, adjustment.label("adjustment"), claims.c.built_at)
        .where(claims.c.built_at >= bound[0], claims.c.built_at < bound[1], claims.c.status != "rejected")
        .order_by(claims.c.built_at, claims.c.id)
    )
    postings = []
    for raw_id, gift_aid, adjusted, built_at in rows:
        # Reflected, SQLite hands the id back as 32 hex digits: name it as everywhere else.
        claim_id = str(uuid.UUID(str(raw_id)))
        amount = int(gift_aid) - int(adjusted or 0)
        moment = built_at if built_at.tzinfo else built_at.replace(tzinfo=dt.UTC)
        day = moment.astimezone(UK).date()
        entry = f"giftaid:{claim_id}"
        for account, signed in ((GIFT_AID_RECEIVABLE, amount), (GIFT_AID_INCOME, -amount)):
            postings.append(
                journal.Posting(day, entry, account, signed, "GBP", "Gift Aid claimed from HMRC", "", "", str(claim_id))
            )
    return postings


def register(app: typer.Typer) -> None:
    payouts_app = typer.Typer(no_args_is_help=True, help="Payouts to the bank and their reconciliation.")
    export_app = typer.Typer(no_args_is_help=True, help="Exports for the accounts.")
    shop_app = typer.Typer(no_args_is_help=True, help="The shop: stock, orders, partner statements.")
    app.add_typer(payouts_app, name="payouts")
    app.add_typer(export_app, name="export")
    app.add_typer(shop_app, name="shop")

    @app.command("reconcile")
    def reconcile(
        payout: str = typer.Option("", "--payout", help="Only this payout (our id, or po_.../PO...)."),
        fetch: bool = typer.Option(False, "--fetch", help="Load missing lines of paid payouts from the provider."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """Match payout lines again (safe to run any time: what is right is left as it is)."""
        from giving.cli import command_runtime

        # No job is enqueued by matching, so the job registry is not needed.
        with command_runtime(with_tasks=False) as runtime:
            results = reconcile_all(runtime, payout=payout or None, fetch=fetch)
            with runtime.read_session() as session:
                if as_json:
                    items, _ = payouts.list_payouts(session)
                    wanted = {str(r.payout_id) for r in results}
                    _emit_json({"items": [i for i in items if i["id"] in wanted]})
                else:
                    for line in reconciliation_lines(session):
                        typer.echo(line)
        unreconciled = sum(1 for r in results if str(r.reconciliation) != "reconciled")
        typer.echo(f"{len(results)} payout(s), {unreconciled} not reconciled", err=True)

    @payouts_app.command("list")
    def payouts_list(as_json: bool = typer.Option(False, "--json")) -> None:
        """Every payout, newest first, with its reconciliation."""
        from giving.cli import command_runtime

        with command_runtime(with_tasks=False) as runtime, runtime.read_session() as session:
            if as_json:
                items, _ = payouts.list_payouts(session)
                _emit_json({"items": items})
            else:
                for line in reconciliation_lines(session):
                    typer.echo(line)

    @payouts_app.command("show")
    def payouts_show(payout: str = typer.Argument(..., help="Our id, or po_.../PO...")) -> None:
        """One payout with its lines, as JSON (what GET /api/payouts/{id} answers)."""
        from giving.cli import command_runtime

        with command_runtime(with_tasks=False) as runtime, runtime.read_session() as session:
            _emit_json(payouts.payout_json(session, payouts.find_payout(session, payout)))

    def _import(kind: str, path: Path, amount: str, as_json: bool) -> None:
        from giving.cli import command_runtime, fail
        from payments import imports

        try:
            raw = path.read_bytes()
        except OSError as exc:
            fail(f"cannot read {path}: {exc}")
            return
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            # A spreadsheet saved as "CSV" on Windows writes Windows-1252 (a £ is one byte, 0xA3).
            try:
                text = raw.decode("cp1252")
            except UnicodeDecodeError as exc:
                fail(f"{path} is neither UTF-8 nor Windows-1252 text: {exc}")
                return
        given: dict[str, int] = {}
        for pair in filter(None, amount.split(",")):
            payout_id, _, pence = pair.partition("=")
            if not pence.strip().lstrip("-").isdigit():
                fail("--payout-amount is PAYOUT_ID=PENCE[,PAYOUT_ID=PENCE]")
            given[payout_id.strip()] = int(pence)
        with command_runtime(with_tasks=False) as runtime, runtime.unit_of_work() as uow:
            run = imports.import_stripe_report if kind == "stripe" else imports.import_gocardless_export
            results = run(uow, text, payout_amounts=given)
            audit(uow, None, "import", "payout_csv", path.name, {"provider": kind, "payouts": len(results)})
        if as_json:
            _emit_json(
                {
                    "items": [
                        {
                            "provider_payout_id": r.provider_payout_id,
                            "lines_added": r.lines_added,
                            "amount_from": r.amount_from,
                            "status": "reconciled" if r.match.reconciliation == "reconciled" else "unreconciled",
                            "discrepancy": {"amount": r.match.discrepancy, "currency": r.currency},
                            "unmatched": r.match.unmatched,
                        }
                        | ({"dates": r.dates} if r.dates else {})
                        for r in results
                    ]
                }
            )
            return
        for r in results:
            status = "reconciled" if r.match.reconciliation == "reconciled" else "unreconciled"
            typer.echo(
                f"{r.provider_payout_id}: {r.lines_added} line(s) added, {status}, discrepancy "
                f"{format_pence(r.match.discrepancy, r.currency)}, {r.match.unmatched} unmatched"
                + (" (amount taken from the lines: give --payout-amount)" if r.amount_from == "lines" else "")
                + (f" ({r.dates})" if r.dates else "")
            )

    @payouts_app.command("import-stripe")
    def import_stripe(
        path: Annotated[Path, typer.Argument(help="Itemised payout reconciliation report (CSV).")],
        payout_amount: str = typer.Option("", "--payout-amount", help="PAYOUT_ID=PENCE,... paid to the bank."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Load and match payouts from Stripe's itemised payout reconciliation report."""
        _import("stripe", path, payout_amount, as_json)

    @payouts_app.command("import-gocardless")
    def import_gocardless(
        path: Annotated[Path, typer.Argument(help="GoCardless payout items export (CSV).")],
        payout_amount: str = typer.Option("", "--payout-amount", help="PAYOUT_ID=PENCE,... paid to the bank."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Load and match payouts from a GoCardless payout items export."""
        _import("gocardless", path, payout_amount, as_json)

    @export_app.command("journal")
    def export_journal(
        start: str = typer.Option(..., "--from", help="First day (YYYY-MM-DD), by the payout's arrival date."),
        end: str = typer.Option(..., "--to", help="Last day (YYYY-MM-DD), inclusive."),
        out: Annotated[Path | None, typer.Option("--out", help="Write the CSV here instead of stdout.")] = None,
    ) -> None:
        """A double-entry CSV journal of the payouts (and shirts sent back, Gift Aid claims) in the period; each entry
        balances."""
        from giving.cli import command_runtime, fail

        first, last = _period(start, end)
        if out is not None and out.is_dir():
            fail(f"--out is the CSV file to write, and {out} is a folder")
        # The export is audited in the unit of work that writes it: a journal that does not balance or cannot be
        # written leaves no audit entry, and no file (or the earlier one, whole).
        with command_runtime(with_tasks=False) as runtime, runtime.unit_of_work() as uow:
            postings = journal.payout_postings(uow.session, first, last)
            postings += journal.return_postings(uow.session, first, last)
            postings += giftaid_postings(uow.session, first, last)
            unbalanced = {entry: total for entry, total in journal.balances(postings).items() if total}
            if unbalanced:
                fail(f"entries that do not balance: {unbalanced}")
            if out is None:
                journal.write_csv(postings, sys.stdout)
            else:
                try:
                    _write_whole(out, lambda handle: journal.write_csv(postings, handle))
                except OSError as exc:
                    fail(f"could not write {out}: {exc}")
            audit(uow, None, "export", "journal", f"{first}..{last}", {"postings": len(postings)})
        if out is not None:
            typer.echo(str(out))
        entries = len(journal.balances(postings))
        typer.echo(f"{entries} entr{'y' if entries == 1 else 'ies'}, {len(postings)} postings, all balanced", err=True)

    @shop_app.command("partner-statement")
    def partner_statement(
        start: str = typer.Option(..., "--from", help="First day (YYYY-MM-DD) by the order's payment date."),
        end: str = typer.Option(..., "--to", help="Last day (YYYY-MM-DD), inclusive."),
        campaign: str = typer.Option("", "--campaign", help="Only this partner campaign code."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
        as_csv: bool = typer.Option(False, "--csv", help="Print one CSV row per order line."),
    ) -> None:
        """What is owed to each partner campaign for shirts sold in the period."""
        from giving.cli import command_runtime

        first, last = _period(start, end)
        with command_runtime(with_tasks=False) as runtime, runtime.unit_of_work() as uow:
            statement = shop.partner_statement(uow.session, first, last, campaign_code=campaign or None)
            audit(uow, None, "export", "partner_statement", campaign or "all", {"from": start, "to": end})
        if as_json:
            _emit_json(statement)
            return
        if as_csv:
            import csv

            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(["campaign", "order_id", "paid_on", "sku", "quantity", "returned", "share"])
            for entry in statement["campaigns"]:
                for line in entry["lines"]:
                    writer.writerow(
                        [
                            entry["code"],
                            line["order_id"],
                            line["paid_on"],
                            line["sku"],
                            line["quantity"],
                            line["returned"],
                            Money(line["share"]["amount"], line["share"]["currency"]).plain(),
                        ]
                    )
            return
        typer.echo(f"Partner statement {statement['from']} to {statement['to']}")
        for entry in statement["campaigns"]:
            typer.echo(
                f"{entry['code']:<10} {entry['partner_name']:<30} sold {entry['shirts_sold']:>4} "
                f"returned {entry['shirts_returned']:>3} owed {format_pence(entry['owed']['amount']):>10}"
            )
        typer.echo(f"{'total owed':<41} {format_pence(statement['total_owed']['amount']):>36}")

    def _stock(low: bool, as_json: bool) -> None:
        from giving.cli import command_runtime

        with command_runtime(with_tasks=False) as runtime, runtime.read_session() as session:
            threshold = runtime.settings.shop.low_stock_threshold
            rows = shop.low_stock(session, threshold) if low else shop.stock_list(session)
        if as_json:
            _emit_json({"threshold": threshold, "items": rows})
            return
        for row in rows:
            typer.echo(f"{row['sku']:<24} {row['name']:<40} {row['stock']:>5}")
        if low:
            typer.echo(f"{len(rows)} SKU(s) at or below {threshold}", err=True)

    @shop_app.command("low-stock")
    def low_stock(as_json: bool = typer.Option(False, "--json")) -> None:
        """SKUs at or below `\\[shop] low_stock_threshold`, fewest first."""
        _stock(True, as_json)

    @shop_app.command("stock")
    def stock(as_json: bool = typer.Option(False, "--json")) -> None:
        """Stock of every SKU."""
        _stock(False, as_json)

    @shop_app.command("fulfil")
    def fulfil(order_id: str = typer.Argument(..., help="The order's id.")) -> None:
        """Mark a paid order as posted."""
        from giving.cli import command_runtime, fail

        try:
            wanted = uuid.UUID(order_id)
        except ValueError:
            fail(f"{order_id!r} is not an order id")
            return
        with command_runtime(with_tasks=False) as runtime, runtime.unit_of_work() as uow:
            order, posted = shop.fulfil(uow, wanted)
            if posted:  # again: nothing changed, nothing to audit
                audit(uow, None, "fulfil", "order", order.id)
        typer.echo(f"order {order_id} fulfilled" + ("" if posted else " already (nothing changed)"), err=True)
