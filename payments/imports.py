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
`refund_id`, optional `currency`, `payout_amount` (whole pence), `arrival_date` (YYYY-MM-DD or DD/MM/YYYY) and
`reference`.

Files saved from a spreadsheet are read (a BOM, CRLF, blank rows, `£1,234.50`, `-£5.00`, `(5.00)`, `05/03/2026`; a
file whose dates show they are month first is refused); a bad file is refused whole, naming its row as a
spreadsheet numbers it (see docs/reconciliation.md, CSV imports).

A payout's amount (what reached the bank) is not in the Stripe report: it is the amount already recorded from the
provider's event, or the one given (`payout_amounts`), or else the sum of the lines' net (said in the result). A
given amount that contradicts the one the provider reported refuses the import (the provider's is the fact).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import re
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from core.db import UnitOfWork
from core.errors import BadRequest
from core.money import Currency, Money, MoneyError, format_pence
from payments.errors import PaymentsError
from payments.models import Payout, PayoutLine, PayoutStatus, Provider
from payments.payouts import SOURCE_API, SOURCE_GIVEN, SOURCE_LINES, gocardless_lines, stripe_kind, upsert_payout
from payments.reconcile import LineIn, MatchResult, lines_recorded, match_payout, store_lines, with_fee_line


class InvalidImport(BadRequest, PaymentsError):
    """A CSV file that cannot be read as the export it should be; names the row and column."""


@dataclasses.dataclass(frozen=True)
class ImportResult:
    provider_payout_id: str
    lines_added: int
    # "provider" (already recorded: reported by the provider, or given for an earlier file), "given" (with this
    # import), or "lines" (nobody said what reached the bank: the sum of every line of the payout, all files')
    amount_from: str
    match: MatchResult
    currency: str = "GBP"  # the payout's
    # How the file's `dd/mm/yyyy`-style dates were read when none of them shows the order ("" if nothing to say).
    dates: str = ""


STRIPE_REQUIRED = ("balance_transaction_id", "automatic_payout_id", "reporting_category", "gross", "fee", "net")
GOCARDLESS_REQUIRED = ("payout_id", "type", "amount")


def _rows(text: str, required: Iterable[str]) -> list[tuple[int, dict[str, str]]]:
    """(row number as a spreadsheet shows it, the row by column) for every row that is not blank. A blank line or a
    row of empty cells (a spreadsheet writes them at the end) is skipped; a row with more fields than the header
    (an amount such as 1,234.50 not in quotes) is refused, naming it."""
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise InvalidImport(f"row 1: {exc}") from None
    columns = [c.strip() for c in header or []]
    missing = [c for c in required if c not in columns]
    if missing:
        raise InvalidImport(f"the file has no column {', '.join(missing)}")
    rows: list[tuple[int, dict[str, str]]] = []
    number = 1
    while True:
        number += 1
        try:
            record = next(reader, None)
        except csv.Error as exc:
            raise InvalidImport(f"row {number}: {exc}") from None
        if record is None:
            return rows
        cells = [cell.strip() for cell in record]
        if not any(cells):
            continue
        if len(cells) > len(columns):
            raise InvalidImport(
                f"row {number} has more fields than the header ({len(cells)}, not {len(columns)}): "
                "an amount such as 1,234.50 must be in quotes"
            )
        rows.append((number, {name: cells[i] if i < len(cells) else "" for i, name in enumerate(columns)}))


def _currency(value: str, row_number: int) -> str:
    try:
        return str(Currency((value or "GBP").upper()))
    except ValueError:
        kept = ", ".join(str(c) for c in Currency)
        raise InvalidImport(f"row {row_number}: currency {value!r} is not one we keep ({kept})") from None


def _pence(value: str, row_number: int, column: str, currency: str) -> int:
    """Pounds as Stripe writes them (`35.00`, `-15.00`), or as a spreadsheet does (`£1,234.50`, `-£5.00`, and in
    accounting format a negative in brackets: `(5.00)`, `£(5.00)`, `(£5.00)`)."""
    text = value.strip()
    if not text:
        raise InvalidImport(f"row {row_number}: {column} is empty")
    bracketed = text.endswith(")") and (text.startswith("(") or text[:2] in ("£(", "€("))
    if bracketed:
        inner = text[text.index("(") + 1 : -1].strip()
        if not inner or inner[0] in "+-()" or ")" in inner or "(" in inner:
            raise InvalidImport(f"row {row_number}: {column} {value!r} is not an amount")
        text = text[: text.index("(")] + inner  # `£(5.00)` -> `£5.00`, negated below
    sign = text[0] if text[0] in "+-" else ""
    unsigned = text[len(sign) :].strip()
    if unsigned[:1] in ("£", "€"):
        unsigned = unsigned[1:].strip()
    try:
        amount = Money.parse(sign + unsigned, currency).amount
        return -amount if bracketed else amount
    except (MoneyError, ValueError):
        raise InvalidImport(f"row {row_number}: {column} {value!r} is not an amount") from None


def _one_currency(currencies: dict[str, str], payout_id: str, currency: str, row_number: int) -> None:
    known = currencies.setdefault(payout_id, currency)
    if known != currency:
        raise InvalidImport(f"row {row_number}: currency {currency} is not the payout's {known}")


def _recorded_currencies(uow: UnitOfWork, provider: Provider, payout_ids: Iterable[str]) -> dict[str, str]:
    """The currency of each of these payouts that is already recorded."""
    wanted = sorted(set(payout_ids))
    if not wanted:
        return {}
    return {
        payout.provider_payout_id: payout.currency
        for payout in uow.session.exec(
            select(Payout).where(Payout.provider == provider, col(Payout.provider_payout_id).in_(wanted))
        ).all()
    }


def _check_recorded_currency(uow: UnitOfWork, provider: Provider, currencies: dict[str, str]) -> None:
    """Before anything is written: a payout already recorded (from the provider) keeps its currency."""
    if not currencies:
        return
    recorded = uow.session.exec(
        select(Payout).where(Payout.provider == provider, col(Payout.provider_payout_id).in_(sorted(currencies)))
    ).all()
    for payout in recorded:
        if payout.currency != currencies[payout.provider_payout_id]:
            raise InvalidImport(
                f"payout {payout.provider_payout_id} is recorded in {payout.currency}, "
                f"the file says {currencies[payout.provider_payout_id]}"
            )


def import_stripe_report(
    uow: UnitOfWork, text: str, *, payout_amounts: dict[str, int] | None = None
) -> list[ImportResult]:
    """Store and match every payout of an itemised payout reconciliation report."""
    by_payout: dict[str, list[LineIn]] = {}
    currencies: dict[str, str] = {}
    seen: dict[str, tuple[int, tuple[str, ...]]] = {}
    for number, row in _rows(text, STRIPE_REQUIRED):
        payout_id = row["automatic_payout_id"]
        if not payout_id:
            raise InvalidImport(f"row {number}: automatic_payout_id is empty (only automatic payouts reconcile)")
        category = row["reporting_category"]
        if category == "payout":
            continue  # the payout's own line, if an export includes it
        currency = _currency(row.get("currency", ""), number)
        gross = _pence(row["gross"], number, "gross", currency)
        fee = _pence(row["fee"], number, "fee", currency)
        net = _pence(row["net"], number, "net", currency)
        if gross - fee != net:
            raise InvalidImport(f"row {number}: gross {row['gross']} - fee {row['fee']} is not net {row['net']}")
        _one_currency(currencies, payout_id, currency, number)
        # The same balance transaction twice (reports pasted together) is one line; with other figures, an error.
        txn = row["balance_transaction_id"]
        figures = (payout_id, category, currency, str(gross), str(fee), str(net))
        if txn in seen:
            first, first_figures = seen[txn]
            if first_figures[1:] != figures[1:]:
                raise InvalidImport(f"row {number}: balance transaction {txn} is also row {first}, with other figures")
            if first_figures[0] != payout_id:
                # A balance transaction belongs to one payout (an `automatic_payout_id` filled down, say).
                raise InvalidImport(
                    f"row {number}: balance transaction {txn} is in payout {payout_id}, but row {first} puts it in "
                    f"{first_figures[0]}; a balance transaction belongs to one payout: nothing was imported"
                )
            continue
        seen[txn] = (number, figures)
        source = row.get("source_id") or _source_by_category(row, category)
        if source and source.startswith(("ch_", "py_")):
            related = row.get("payment_intent_id") or None
        else:
            related = row.get("charge_id") or None
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
    _check_recorded_currency(uow, Provider.STRIPE, currencies)
    _check_not_in_another_payout(uow, seen)
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


def _check_not_in_another_payout(uow: UnitOfWork, seen: dict[str, tuple[int, tuple[str, ...]]]) -> None:
    """Before anything is written: a balance transaction belongs to one payout. One already recorded in another
    Stripe payout (by Stripe or an earlier file) would be stored and settled in both, its money counted twice."""
    if not seen:
        return
    recorded = lines_recorded(uow.session.connection(), Provider.STRIPE, sorted(seen))
    clashes = sorted(
        (seen[row.provider_line_id][0], row.provider_line_id, row.provider_payout_id)
        for row in recorded
        if row.provider_payout_id != seen[row.provider_line_id][1][0]
    )
    if clashes:
        number, txn, held_by = clashes[0]
        raise InvalidImport(
            f"row {number}: balance transaction {txn} is already in payout {held_by}, the file puts it in "
            f"{seen[txn][1][0]}; a balance transaction belongs to one payout (is automatic_payout_id filled "
            "down?): nothing was imported"
        )


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
    info: dict[str, dict[str, tuple[int, str]]] = {}
    currencies: dict[str, str] = {}
    amounts: dict[str, int] = {}
    arrivals: dict[str, tuple[int, str]] = {}
    repeats: dict[tuple[str, str, str, str, Decimal], int] = {}
    for number, row in _rows(text, GOCARDLESS_REQUIRED):
        payout_id = row["payout_id"]
        if not payout_id:
            raise InvalidImport(f"row {number}: payout_id is empty")
        if not _DECIMAL_PENCE.fullmatch(row["amount"]):
            raise InvalidImport(f"row {number}: amount {row['amount']!r} is not decimal pence (e.g. -20.5)")
        # Every row repeats the payout's own figures: rows that disagree are an error, not the last one winning.
        details = info.setdefault(payout_id, {})
        for key in ("currency", "payout_amount", "arrival_date", "reference"):
            if not row.get(key):
                continue
            first = details.setdefault(key, (number, row[key]))
            if first[1] != row[key]:
                raise InvalidImport(
                    f"row {number}: {key} {row[key]!r} is not the payout's {first[1]} on row {first[0]}"
                )
        if row.get("currency"):
            # A blank cell says nothing (the figures' check above skips it too); a payout with none is in pounds.
            _one_currency(currencies, payout_id, _currency(row["currency"], number), number)
        if row.get("payout_amount") and payout_id not in amounts:
            try:
                amounts[payout_id] = int(row["payout_amount"])
            except ValueError:
                raise InvalidImport(
                    f"row {number}: payout_amount {row['payout_amount']!r} is not whole pence"
                ) from None
        if row.get("arrival_date") and payout_id not in arrivals:
            arrivals[payout_id] = (number, row["arrival_date"])
        links = {k: row[f"{k}_id"] for k in ("payment", "refund", "mandate") if row.get(f"{k}_id")}
        _not_a_repeat(repeats, payout_id, row, number)
        items.setdefault(payout_id, []).append({"type": row["type"], "amount": row["amount"], "links": links})
    dates_note = _day_first_or_refuse(sorted(arrivals.values()), "arrival_date")
    arrival_dates = {payout_id: _date(value, number, "arrival_date") for payout_id, (number, value) in arrivals.items()}
    _check_recorded_currency(uow, Provider.GOCARDLESS, currencies)
    # A payout whose rows name no currency (an export without the column) is in the one it is recorded in, if it is
    # recorded: taking it for pounds turned a euro payout into a pound one, with lines in both.
    recorded = _recorded_currencies(uow, Provider.GOCARDLESS, (p for p in items if p not in currencies))
    results = []
    for payout_id, payout_items in items.items():
        currency = currencies.get(payout_id) or recorded.get(payout_id, "GBP")
        lines = gocardless_lines(payout_items, currency)
        given = (payout_amounts or {}).get(payout_id, amounts.get(payout_id))
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
                arrival=arrival_dates.get(payout_id),
                reference=info[payout_id].get("reference", (0, ""))[1],
            )
        )
    return [dataclasses.replace(result, dates=dates_note) for result in results]


def _not_a_repeat(
    repeats: dict[tuple[str, str, str, str, Decimal], int], payout_id: str, row: dict[str, str], number: int
) -> None:
    """A row repeating another of the same payout exactly (type, payment, refund and amount) is refused as a
    duplicate: payout items have no id, so it would be stored as a second item (a second fee, counted in a payout
    amount taken from the lines). A payout holds one item of a type for a payment (or refund): several fees of the
    same amount are one per payment, each naming its own. A row naming no payment and no refund cannot be told from
    another such item, so it is kept as the export gives it."""
    payment, refund = row.get("payment_id", ""), row.get("refund_id", "")
    if not payment and not refund:
        return
    key = (payout_id, row["type"], payment, refund, Decimal(row["amount"]))
    first = repeats.setdefault(key, number)
    if first != number:
        names = " and ".join(x for x in (payment, refund) if x)
        raise InvalidImport(
            f"row {number}: payout {payout_id}'s {row['type']} of {row['amount']} on {names} is row {first} again: "
            "a payout has one such item per payment or refund, so this looks like a repeated row; nothing was "
            "imported"
        )


# Decimal pence as the API gives them ("-20.5"): no exponent, NaN or infinity, no thousands separator.
_DECIMAL_PENCE = re.compile(r"[+-]?(\d{1,15}(\.\d*)?|\.\d+)")


_SLASH_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/\d{4}")


def _day_first_or_refuse(dates: list[tuple[int, str]], column: str) -> str:
    """Slash dates are read day first (UK). A spreadsheet set to US dates writes them month first, and a file whose
    days are all 12 or less reads as other dates without an error; so if any date of the file shows it is month first
    (a second number over 12) the whole file is refused. Returns what to say when no date shows the order."""
    ambiguous = day_first = False
    for number, value in dates:
        found = _SLASH_DATE.fullmatch(value)
        if not found:
            continue
        first, second = int(found.group(1)), int(found.group(2))
        if second > 12 and first <= 12:
            raise InvalidImport(
                f"row {number}: {column} {value!r} is written month first (there is no month {second}), but dates "
                "are read day first (DD/MM/YYYY); save the export with dates as YYYY-MM-DD (or DD/MM/YYYY): "
                "nothing was imported"
            )
        day_first = day_first or first > 12
        ambiguous = ambiguous or (first <= 12 and second <= 12 and first != second)
    if day_first or not ambiguous:
        return ""
    return f"{column} read day first (DD/MM/YYYY, UK): no date in the file shows whether it is day or month first"


def _date(value: str, row_number: int, column: str) -> dt.date:
    """`2026-03-05`, or `05/03/2026` as a UK spreadsheet writes it (day first)."""
    try:
        if "/" in value:
            day, month, year = value.split("/")
            if len(year) != 4:
                raise ValueError(value)
            return dt.date(int(year), int(month), int(day))
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidImport(f"row {row_number}: {column} {value!r} is not a date (YYYY-MM-DD or DD/MM/YYYY)") from None


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
    provider_name = "Stripe" if provider == Provider.STRIPE else "GoCardless"
    if (
        given_amount is not None
        and existing is not None
        and existing.source == SOURCE_API
        and given_amount != existing.amount
    ):
        # What the provider reported reaching the bank is the fact a file must agree with, not one it overwrites.
        raise InvalidImport(
            f"payout {provider_payout_id}: the file gives {format_pence(given_amount, existing.currency)}, but "
            f"{provider_name} reported {format_pence(existing.amount, existing.currency)}; nothing was imported"
        )
    if existing is not None:
        # Nor does a file move the day the payout reached the bank (the journal books it on that day: a date a
        # spreadsheet wrote month first would move it to another month) or change its bank reference.
        recorded_by = provider_name if existing.source == SOURCE_API else "an earlier file"
        if arrival is not None and existing.arrival_date is not None and arrival != existing.arrival_date:
            raise InvalidImport(
                f"payout {provider_payout_id}: the file gives arrival_date {arrival.isoformat()}, but {recorded_by} "
                f"recorded {existing.arrival_date.isoformat()}; nothing was imported"
            )
        if reference and existing.reference and reference != existing.reference:
            raise InvalidImport(
                f"payout {provider_payout_id}: the file gives reference {reference!r}, but {recorded_by} recorded "
                f"{existing.reference!r}; nothing was imported"
            )
        lines = _not_recorded_yet(uow, existing, lines)
    reported = existing is not None and existing.source == SOURCE_API
    if given_amount is not None:
        amount, amount_from, source = given_amount, "given", SOURCE_API if reported else SOURCE_GIVEN
    elif existing is not None and reported:
        amount, amount_from, source = existing.amount, "provider", SOURCE_API
    elif existing is not None and existing.source == SOURCE_GIVEN:
        # Given by an earlier file: already recorded, as one the provider reported.
        amount, amount_from, source = existing.amount, "provider", SOURCE_GIVEN
    else:
        # Nobody said what reached the bank: the sum of every line of the payout, this file's and earlier ones'.
        amount, amount_from, source = lines_total, "lines", SOURCE_LINES
    payout = upsert_payout(
        uow,
        provider,
        provider_payout_id,
        amount=amount if existing is None or amount_from != "lines" else existing.amount,
        currency=currency,
        status=PayoutStatus.PAID,
        arrival_date=arrival,
        reference=reference,
        source=source,
    )
    added = store_lines(uow, payout, lines)
    if amount_from == "lines":
        total = uow.session.exec(
            select(sa.func.coalesce(sa.func.sum(PayoutLine.amount), 0)).where(PayoutLine.payout_id == payout.id)
        ).one()
        if payout.amount != int(total):
            payout.amount = int(total)
            uow.session.add(payout)
            uow.session.flush()
    return ImportResult(provider_payout_id, added, amount_from, match_payout(uow, payout.id), payout.currency)


def _not_recorded_yet(uow: UnitOfWork, payout: Payout, lines: list[LineIn]) -> list[LineIn]:
    """The lines of the file that the payout does not have yet. A line it already has (the same balance transaction,
    or the same n-th payout item of a type on a payment) must have the same figures: a file never changes what the
    provider or an earlier file recorded. Payout items have no id, so a second file with another item of the same
    type on the same payment would otherwise replace the first one's money: the whole export must be one file."""
    recorded = {
        row.provider_line_id: row
        for row in uow.session.exec(select(PayoutLine).where(PayoutLine.payout_id == payout.id)).all()
    }
    new = []
    for line in lines:
        old = recorded.get(line.provider_line_id)
        if old is None:
            new.append(line)
            continue
        if line.amount_exact is not None and old.amount_exact is not None:
            same = Decimal(line.amount_exact) == Decimal(old.amount_exact)
        else:
            net = line.amount - line.fee if line.net is None else line.net
            same = (old.amount, old.fee, old.net) == (line.amount, line.fee, net)
        if not same:
            said, had = (
                (line.amount_exact, old.amount_exact)
                if line.amount_exact is not None and old.amount_exact is not None
                else (_figures(line.amount, line.fee, payout.currency), _figures(old.amount, old.fee, payout.currency))
            )
            raise InvalidImport(
                f"payout {payout.provider_payout_id}: line {line.provider_line_id} is already recorded as {had}, the "
                f"file says {said}; a file does not change a recorded line (import a payout's items in one file); "
                "nothing was imported"
            )
    return new


def _figures(amount: int, fee: int, currency: str) -> str:
    return format_pence(amount, currency) + (f" (fee {format_pence(fee, currency)})" if fee else "")
