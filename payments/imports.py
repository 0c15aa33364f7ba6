"""Payout lines from CSV files, for when the provider's API is not available; matched exactly like API lines.

Stripe: the itemised payout reconciliation report (`payout_reconciliation.itemized.*`, Dashboard → Reports →
Payout reconciliation → Download, itemised). Columns read (others are ignored):
- required: `balance_transaction_id`, `automatic_payout_id`, `reporting_category`, `gross`, `fee`, `net`,
  `currency` (amounts in pounds as Stripe writes them, e.g. `35.00`, `-15.00`);
- what the line settles: `source_id`, or by category `charge_id`, `refund_id`, `dispute_id`; and
  `payment_intent_id` (matches a gift recorded with its payment intent only);
- optional: `description`.
Lines get the same ids as through the API (the balance transaction id), so importing a report for a payout that was
also loaded from the API changes nothing.

GoCardless: a payout items export, one row per payout item, columns `payout_id`, `type` (the payout item type, e.g.
`payment_paid_out`, `gocardless_fee`), `amount` (decimal pence as the API gives them, e.g. `-20.5`), `payment_id`,
`refund_id`, optional `currency`, `payout_amount` (whole pence), `arrival_date` (YYYY-MM-DD) and `reference`.

A payout's amount (what reached the bank) is not in the Stripe report: it is the amount already recorded from the
provider's event, or the one given (`payout_amounts`), or else the sum of the lines' net (said in the result).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlmodel import select

from core.db import UnitOfWork
from core.errors import BadRequest
from core.money import Money, MoneyError
from payments.errors import PaymentsError
from payments.models import Payout, PayoutStatus, Provider
from payments.payouts import gocardless_lines, stripe_kind, upsert_payout
from payments.reconcile import LineIn, MatchResult, match_payout, store_lines, with_fee_line


class InvalidImport(BadRequest, PaymentsError):
    """A CSV file that cannot be read as the export it should be; names the row and column."""


@dataclasses.dataclass(frozen=True)
class ImportResult:
    provider_payout_id: str
    lines_added: int
    amount_from: str  # "provider" (already recorded), "given", or "lines" (sum of the lines' net)
    match: MatchResult


STRIPE_REQUIRED = ("balance_transaction_id", "automatic_payout_id", "reporting_category", "gross", "fee", "net")
GOCARDLESS_REQUIRED = ("payout_id", "type", "amount")


def _rows(text: str, required: Iterable[str]) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    columns = {c.strip() for c in reader.fieldnames or []}
    missing = [c for c in required if c not in columns]
    if missing:
        raise InvalidImport(f"the file has no column {', '.join(missing)}")
    return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]


def _pence(value: str, row_number: int, column: str, currency: str) -> int:
    try:
        return Money.parse(value or "0", currency.upper() or "GBP").amount
    except (MoneyError, ValueError):
        raise InvalidImport(f"row {row_number}: {column} {value!r} is not an amount") from None


def import_stripe_report(
    uow: UnitOfWork, text: str, *, payout_amounts: dict[str, int] | None = None
) -> list[ImportResult]:
    """Store and match every payout of an itemised payout reconciliation report."""
    by_payout: dict[str, list[LineIn]] = {}
    currencies: dict[str, str] = {}
    for number, row in enumerate(_rows(text, STRIPE_REQUIRED), start=2):
        payout_id = row["automatic_payout_id"]
        if not payout_id:
            raise InvalidImport(f"row {number}: automatic_payout_id is empty (only automatic payouts reconcile)")
        category = row["reporting_category"]
        if category == "payout":
            continue  # the payout's own line, if an export includes it
        currency = (row.get("currency") or "gbp").upper()
        gross = _pence(row["gross"], number, "gross", currency)
        fee = _pence(row["fee"], number, "fee", currency)
        net = _pence(row["net"], number, "net", currency)
        if gross - fee != net:
            raise InvalidImport(f"row {number}: gross {row['gross']} - fee {row['fee']} is not net {row['net']}")
        source = row.get("source_id") or _source_by_category(row, category)
        if source and source.startswith(("ch_", "py_")):
            related = row.get("payment_intent_id") or None
        else:
            related = row.get("charge_id") or None
        currencies[payout_id] = currency
        by_payout.setdefault(payout_id, []).extend(
            with_fee_line(
                LineIn(
                    provider_line_id=row["balance_transaction_id"],
                    kind=stripe_kind(category, "", gross, source),
                    amount=gross,
                    fee=fee,
                    net=net,
                    currency=currency,
                    source_id=source or None,
                    related_id=related,
                    provider_type=category,
                    description=row.get("description", ""),
                )
            )
        )
    results = []
    for payout_id, lines in by_payout.items():
        total_net = sum(line.amount for line in lines)
        results.append(
            _store(
                uow,
                Provider.STRIPE,
                payout_id,
                lines,
                currencies[payout_id],
                (payout_amounts or {}).get(payout_id),
                total_net,
            )
        )
    return results


def _source_by_category(row: dict[str, str], category: str) -> str:
    if category.startswith("refund") or category == "partial_capture_reversal":
        return row.get("refund_id") or ""
    if category.startswith("dispute"):
        return row.get("dispute_id") or ""
    return row.get("charge_id") or ""


def import_gocardless_export(
    uow: UnitOfWork, text: str, *, payout_amounts: dict[str, int] | None = None
) -> list[ImportResult]:
    """Store and match every payout of a GoCardless payout items export."""
    items: dict[str, list[dict[str, Any]]] = {}
    info: dict[str, dict[str, str]] = {}
    for number, row in enumerate(_rows(text, GOCARDLESS_REQUIRED), start=2):
        payout_id = row["payout_id"]
        if not payout_id:
            raise InvalidImport(f"row {number}: payout_id is empty")
        try:
            Decimal(row["amount"])
        except InvalidOperation:
            raise InvalidImport(f"row {number}: amount {row['amount']!r} is not decimal pence") from None
        links = {k: row[f"{k}_id"] for k in ("payment", "refund", "mandate") if row.get(f"{k}_id")}
        items.setdefault(payout_id, []).append({"type": row["type"], "amount": row["amount"], "links": links})
        info.setdefault(payout_id, {}).update(
            {k: row[k] for k in ("currency", "payout_amount", "arrival_date", "reference") if row.get(k)}
        )
    results = []
    for payout_id, payout_items in items.items():
        details = info[payout_id]
        currency = (details.get("currency") or "GBP").upper()
        lines = gocardless_lines(payout_items, currency)
        given = (payout_amounts or {}).get(payout_id)
        if given is None and details.get("payout_amount"):
            try:
                given = int(details["payout_amount"])
            except ValueError:
                raise InvalidImport(f"payout {payout_id}: payout_amount must be whole pence") from None
        arrival = None
        if details.get("arrival_date"):
            try:
                arrival = dt.date.fromisoformat(details["arrival_date"])
            except ValueError:
                raise InvalidImport(f"payout {payout_id}: arrival_date must be YYYY-MM-DD") from None
        total = sum(line.amount for line in lines)
        results.append(
            _store(
                uow,
                Provider.GOCARDLESS,
                payout_id,
                lines,
                currency,
                given,
                total,
                arrival=arrival,
                reference=details.get("reference", ""),
            )
        )
    return results


def _store(
    uow: UnitOfWork,
    provider: Provider,
    provider_payout_id: str,
    lines: list[LineIn],
    currency: str,
    given_amount: int | None,
    lines_total: int,
    *,
    arrival: dt.date | None = None,
    reference: str = "",
) -> ImportResult:
    existing = uow.session.exec(
        select(Payout).where(Payout.provider == provider, Payout.provider_payout_id == provider_payout_id)
    ).first()
    if given_amount is not None:
        amount, amount_from = given_amount, "given"
    elif existing is not None:
        amount, amount_from = existing.amount, "provider"
    else:
        amount, amount_from = lines_total, "lines"
    payout = upsert_payout(
        uow,
        provider,
        provider_payout_id,
        amount=amount,
        currency=currency,
        status=PayoutStatus.PAID,
        arrival_date=arrival,
        reference=reference,
        source=existing.source if existing is not None else "csv",
    )
    added = store_lines(uow, payout, lines)
    return ImportResult(provider_payout_id, added, amount_from, match_payout(uow, payout.id))
