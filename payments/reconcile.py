"""Matching payout lines to what they settle, in a number of SQL statements that does not grow with the payout.

A payout's lines (Stripe balance transactions, GoCardless payout items, or rows of a CSV export) are stored once
(`store_lines`), then `match_payout` resolves every line against gifts, orders, refunds and disputes with one join
per (table, provider id) pair, and writes back only what changed in one bulk UPDATE. Re-running it changes nothing
that is already right, so it is safe to run from a webhook, from `on_money_recorded` and from `giving reconcile`.

A payout is `reconciled` when it did not fail, its lines were loaded, every line is matched and the lines add up to
the payout amount to the penny; otherwise `unreconciled`, with `discrepancy = payout amount - sum of the lines`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import sqlalchemy as sa

from core.clock import utc_now
from core.db import UnitOfWork
from payments.models import Dispute, Gift, Order, Payout, PayoutLine, PayoutStatus, Provider, Reconciliation, Refund

PAYOUTS = Payout.__table__  # type: ignore[attr-defined]
LINES = PayoutLine.__table__  # type: ignore[attr-defined]
GIFTS = Gift.__table__  # type: ignore[attr-defined]
ORDERS = Order.__table__  # type: ignore[attr-defined]
REFUNDS = Refund.__table__  # type: ignore[attr-defined]
DISPUTES = Dispute.__table__  # type: ignore[attr-defined]

log = logging.getLogger("giving.payments.reconcile")

# Kinds of line. A charge or a Direct Debit payment becomes `gift` or `order` once we know which it paid for.
CHARGE = "charge"
PAYMENT = "payment"
GIFT = "gift"
ORDER = "order"
REFUND = "refund"
REFUND_RETURNED = "refund_returned"
DISPUTE = "dispute"
DISPUTE_REVERSAL = "dispute_reversal"
CHARGEBACK = "chargeback"
LATE_FAILURE = "late_failure"
FEE = "fee"
ACCOUNT_FEE = "account_fee"  # a Stripe fee charged on the account itself (Radar, billing): settles nothing of ours
# The money of a failed Stripe payout, back in the balance and paid out again: settles that failed payout (`po_...`).
PAYOUT_FAILURE = "payout_failure"
OTHER = "other"

FEE_SUFFIX = ":fee"


@dataclasses.dataclass
class LineIn:
    """One line as the provider (or its CSV export) gives it, before matching."""

    provider_line_id: str
    kind: str
    amount: int
    currency: str = "GBP"
    fee: int = 0
    net: int | None = None
    source_id: str | None = None
    related_id: str | None = None
    fee_for: str | None = None
    provider_type: str = ""
    description: str = ""
    amount_exact: str | None = None

    def row(self, payout_id: uuid.UUID, position: int) -> dict[str, Any]:
        return {
            "id": uuid.uuid4(),
            "payout_id": payout_id,
            "provider_line_id": self.provider_line_id[:255],
            "kind": self.kind,
            "amount": self.amount,
            "fee": self.fee,
            "net": self.amount - self.fee if self.net is None else self.net,
            "currency": self.currency.upper(),
            "source_id": self.source_id,
            "related_id": self.related_id,
            "fee_for": self.fee_for,
            "provider_type": self.provider_type[:64],
            "description": self.description[:255],
            "amount_exact": self.amount_exact,
            "position": position,
            "gift_id": None,
            "order_id": None,
            "refund_id": None,
            "dispute_id": None,
            "matched_at": None,
        }


@dataclasses.dataclass(frozen=True)
class MatchResult:
    payout_id: uuid.UUID
    reconciliation: Reconciliation
    discrepancy: int
    lines: int
    unmatched: int
    changed_lines: int


def with_fee_line(line: LineIn) -> list[LineIn]:
    """A Stripe balance transaction as two lines: its gross amount, and (if any) the fee charged on it, so that the
    lines of a payout add up to what reached the bank and the fee line names what it was charged on."""
    lines = [line]
    if line.fee:
        lines.append(
            LineIn(
                provider_line_id=line.provider_line_id + FEE_SUFFIX,
                kind=FEE,
                amount=-line.fee,
                currency=line.currency,
                fee=0,
                net=-line.fee,
                source_id=line.source_id,
                related_id=line.related_id,
                fee_for=line.source_id or line.provider_line_id,
                provider_type=line.provider_type,
                description=f"fee on {line.source_id or line.provider_line_id}",
            )
        )
    return lines


def allocate_exact_pence(exact_amounts: Sequence[str]) -> list[int]:
    """Whole pence for each decimal-pence string such that they add up to the exact total rounded once (half up).

    GoCardless gives "-12.5"-style amounts: rounding each line would drift; instead each line gets its floor and the
    pennies left over go to the lines with the largest remainders (earliest first on a tie).
    """
    values = [Decimal(v) for v in exact_amounts]
    total = int(sum(values, Decimal(0)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    floors = [int(v.to_integral_value(rounding="ROUND_FLOOR")) for v in values]
    left = total - sum(floors)
    order = sorted(range(len(values)), key=lambda i: (-(values[i] - floors[i]), i))
    result = list(floors)
    for i in order[:left]:
        result[i] += 1
    return result


def store_lines(uow: UnitOfWork, payout: Payout, lines: Iterable[LineIn], *, from_provider: bool = False) -> int:
    """Add the lines the payout does not have yet (by provider line id); keeps existing lines and their matches,
    but takes the provider's figures if they changed. Returns how many lines were added. Constant statements.
    `from_provider`: the lines are the provider's own list (not a file's), so the payout's lines are final."""
    conn = uow.session.connection()
    existing = {
        row.provider_line_id: row
        for row in conn.execute(
            sa.select(
                LINES.c.id,
                LINES.c.provider_line_id,
                LINES.c.amount,
                LINES.c.fee,
                LINES.c.net,
                LINES.c.kind,
                LINES.c.source_id,
            ).where(LINES.c.payout_id == payout.id)
        ).all()
    }
    new_rows: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    seen: set[str] = set()
    for position, line in enumerate(lines):
        if line.provider_line_id in seen:
            continue
        seen.add(line.provider_line_id)
        row = line.row(payout.id, position)
        old = existing.get(line.provider_line_id)
        if old is None:
            new_rows.append(row)
        elif (old.amount, old.fee, old.net) != (row["amount"], row["fee"], row["net"]):
            changed.append({"b_id": old.id, "b_amount": row["amount"], "b_fee": row["fee"], "b_net": row["net"]})
    moved_from: list[uuid.UUID] = []
    if new_rows and from_provider and str(payout.provider) == Provider.STRIPE.value:
        moved_from = _take_from_other_payouts(conn, payout.id, [row["provider_line_id"] for row in new_rows])
    if new_rows:
        # New lines are matched as they are inserted, so a payout is written once, not inserted then updated.
        found = _lookup(conn, str(payout.provider), new_rows)
        now = utc_now()
        settled = {old.source_id for old in existing.values() if old.kind in (GIFT, ORDER) and old.source_id}
        for row in new_rows:
            kind, gift, order, refund, dispute, matched = _settle_once(
                _resolve(_RowView(row), found), row["source_id"], settled
            )
            if matched:
                row.update(
                    kind=kind, gift_id=gift, order_id=order, refund_id=refund, dispute_id=dispute, matched_at=now
                )
            else:
                row["kind"] = kind
        _bulk_insert_lines(conn, new_rows)
    if changed:
        conn.execute(
            sa.update(LINES)
            .where(LINES.c.id == sa.bindparam("b_id"))
            .values(amount=sa.bindparam("b_amount"), fee=sa.bindparam("b_fee"), net=sa.bindparam("b_net")),
            changed,
        )
    now = utc_now()
    loaded: dict[str, Any] = {"lines_loaded_at": now, "updated_at": now}
    if from_provider:
        loaded["lines_from_provider_at"] = now
    conn.execute(sa.update(PAYOUTS).where(PAYOUTS.c.id == payout.id).values(**loaded))
    # The ORM copy of the payout must see what Core just wrote.
    uow.session.expire(payout)
    for obj in uow.session.identity_map.values():
        if isinstance(obj, Payout) and obj.id in moved_from:
            uow.session.expire(obj)
    for other in moved_from:
        match_payout(uow, other)
    return len(new_rows)


def lines_recorded(conn: sa.Connection, provider: Provider, line_ids: Sequence[str]) -> list[Any]:
    """(id, payout_id, provider_payout_id, provider_line_id) of the lines of this provider's payouts with one of
    these line ids, in one statement whatever their number (the ids as one parameter, as matching does)."""
    if not line_ids:
        return []
    k = _keys(conn, line_ids)
    return list(
        conn.execute(
            sa.select(LINES.c.id, LINES.c.payout_id, PAYOUTS.c.provider_payout_id, LINES.c.provider_line_id)
            .select_from(
                k.join(LINES, LINES.c.provider_line_id == k.c.key).join(PAYOUTS, PAYOUTS.c.id == LINES.c.payout_id)
            )
            .where(PAYOUTS.c.provider == provider.value)
        ).all()
    )


def _take_from_other_payouts(conn: sa.Connection, payout_id: uuid.UUID, line_ids: Sequence[str]) -> list[uuid.UUID]:
    """A balance transaction belongs to one payout, and Stripe's own list says which. A line of that list that a
    file put in another Stripe payout (an `automatic_payout_id` a spreadsheet filled down) is taken out of that
    payout, so its money is not counted twice; the payouts it leaves are returned, to be matched again (their
    amount, if it was only the sum of their lines, becomes the sum of the lines left). Constant statements."""
    held = [row for row in lines_recorded(conn, Provider.STRIPE, line_ids) if row.payout_id != payout_id]
    if not held:
        return []
    others = sorted({row.payout_id for row in held}, key=str)
    log.warning(
        "balance transactions %s were recorded in another payout by a file; Stripe lists them in this one: moved",
        ", ".join(sorted({row.provider_line_id for row in held})),
    )
    moved = _keys(conn, sorted({row.provider_line_id for row in held}))
    conn.execute(
        sa.delete(LINES).where(LINES.c.payout_id.in_(others), LINES.c.provider_line_id.in_(sa.select(moved.c.key)))
    )
    sums = (
        sa.select(sa.func.coalesce(sa.func.sum(LINES.c.amount), 0))
        .where(LINES.c.payout_id == PAYOUTS.c.id)
        .scalar_subquery()
    )
    # `lines`: nobody said what reached the bank, so the amount is the sum of the lines (payments.payouts).
    conn.execute(
        sa.update(PAYOUTS)
        .where(PAYOUTS.c.id.in_(others), PAYOUTS.c.source == "lines")
        .values(amount=sums, updated_at=utc_now())
    )
    return others


# Bulk writes. PostgreSQL gets one statement whose rows travel as arrays (`unnest`), which costs one round trip
# whatever the number of rows; SQLite runs in-process, where an executemany is already cheap.

_INSERT_COLUMNS = {
    "id": "uuid",
    "payout_id": "uuid",
    "provider_line_id": "varchar",
    "kind": "varchar",
    "amount": "bigint",
    "fee": "bigint",
    "net": "bigint",
    "currency": "varchar",
    "source_id": "varchar",
    "related_id": "varchar",
    "fee_for": "varchar",
    "provider_type": "varchar",
    "description": "varchar",
    "amount_exact": "varchar",
    "position": "integer",
    "gift_id": "uuid",
    "order_id": "uuid",
    "refund_id": "uuid",
    "dispute_id": "uuid",
    "matched_at": "timestamptz",
}

_MATCH_COLUMNS = {
    "kind": ("b_kind", "varchar"),
    "gift_id": ("b_gift", "uuid"),
    "order_id": ("b_order", "uuid"),
    "refund_id": ("b_refund", "uuid"),
    "dispute_id": ("b_dispute", "uuid"),
    "matched_at": ("b_matched_at", "timestamptz"),
}


def _bulk_insert_lines(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    if conn.dialect.name != "postgresql":
        conn.execute(sa.insert(LINES), rows)
        return
    names = list(_INSERT_COLUMNS)
    quoted = [f'"{name}"' for name in names]
    arrays = ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _INSERT_COLUMNS.items())
    statement = sa.text(f"INSERT INTO payout_lines ({', '.join(quoted)}) SELECT * FROM unnest({arrays})")
    conn.execute(statement, {name: [row[name] for row in rows] for name in names})


def _bulk_update_matches(conn: sa.Connection, updates: list[dict[str, Any]]) -> None:
    if conn.dialect.name != "postgresql":
        conn.execute(
            sa.update(LINES)
            .where(LINES.c.id == sa.bindparam("b_id"))
            .values({column: sa.bindparam(param) for column, (param, _) in _MATCH_COLUMNS.items()}),
            updates,
        )
        return
    arrays = ", ".join(f"CAST(:{param} AS {kind}[])" for param, kind in _MATCH_COLUMNS.values())
    assignments = ", ".join(f"{column} = v.{column}" for column in _MATCH_COLUMNS)
    statement = sa.text(
        f"UPDATE payout_lines AS pl SET {assignments} "
        f"FROM unnest(CAST(:b_id AS uuid[]), {arrays}) AS v(id, {', '.join(_MATCH_COLUMNS)}) "
        "WHERE pl.id = v.id"
    )
    params: dict[str, list[Any]] = {"b_id": [u["b_id"] for u in updates]}
    for param, _ in _MATCH_COLUMNS.values():
        params[param] = [u[param] for u in updates]
    conn.execute(statement, params)


def _match_class(kind: str, provider_type: str, source_id: str | None) -> str | None:
    """Which provider id the line is matched on."""
    if not source_id:
        return None
    if kind in (CHARGEBACK, LATE_FAILURE):
        return "gc_dispute"
    if kind == PAYOUT_FAILURE:
        return "stripe_payout"
    if source_id.startswith("RF") or (kind in (REFUND, REFUND_RETURNED) and source_id.startswith("PM")):
        # A refund item that names only its payment is still a refund: matched on a refund id or not at all,
        # never taken for the payment (a negative gift that would let the payout look reconciled).
        return "gc_refund"
    if source_id.startswith(("ch_", "py_", "PM")) and kind not in (CHARGE, PAYMENT, GIFT, ORDER, FEE):
        # Likewise any other line naming a charge or payment (a Stripe `charge_failure`, a refund or dispute line
        # that names only its charge, an item type we do not know): only a charge or payment paid out, and the fee
        # on it, settles the gift or order it names. The others stay unmatched for finance to look at.
        return None
    if source_id.startswith(("ch_", "py_")):
        return "stripe_charge"
    if source_id.startswith(("re_", "pyr_")):
        return "stripe_refund"
    if source_id.startswith(("dp_", "du_")):
        return "stripe_dispute"
    if source_id.startswith("PM"):
        return "gc_payment"
    return None


@dataclasses.dataclass
class _Found:
    gift_by_charge: dict[str, uuid.UUID]
    gift_by_intent: dict[str, uuid.UUID]
    gift_by_gc_payment: dict[str, uuid.UUID]
    order_by_charge: dict[str, uuid.UUID]
    order_by_intent: dict[str, uuid.UUID]
    gift_by_order: dict[uuid.UUID, uuid.UUID]
    refund_by_stripe: dict[str, tuple[uuid.UUID, uuid.UUID | None, uuid.UUID | None]]
    refund_by_gc: dict[str, tuple[uuid.UUID, uuid.UUID | None, uuid.UUID | None]]
    dispute_by_stripe: dict[str, tuple[uuid.UUID, uuid.UUID | None, uuid.UUID | None]]
    dispute_by_gc_payment: dict[str, tuple[uuid.UUID, uuid.UUID | None, uuid.UUID | None]]
    failed_payout_by_stripe: dict[str, uuid.UUID] = dataclasses.field(default_factory=dict)


# Provider ids never contain the ASCII unit separator.
KEY_SEPARATOR = "\x1f"


class _RowView:
    """Attribute access to a line dict, so new lines resolve exactly like stored ones."""

    def __init__(self, row: dict[str, Any]):
        self.__dict__.update(row)


def _keys(conn: sa.Connection, keys: Sequence[str]) -> Any:
    """The keys as a one-column table (`key`) bound as ONE parameter, whatever their number: `unnest` of an array
    on PostgreSQL, `json_each` of a JSON array on SQLite. No IN list, so no bound-parameter limit either."""
    if conn.dialect.name == "postgresql":
        # One text parameter split server-side: adapting a Python list of 40,000 strings costs more than the query.
        joined = KEY_SEPARATOR.join(keys)
        array = sa.func.string_to_array(sa.bindparam(None, joined, type_=sa.Text()), KEY_SEPARATOR)
        return sa.func.unnest(array).table_valued("key").render_derived(name="k")
    table = sa.func.json_each(sa.bindparam(None, json.dumps(list(keys)), type_=sa.String())).table_valued("value")
    return sa.select(table.c.value.label("key")).subquery("k")


def _lookup(conn: sa.Connection, provider: str, lines: Sequence[Any]) -> _Found:
    """Everything these lines may settle: one query per (table, provider id) the provider uses, each given all the
    lines' keys at once, so the number of statements does not grow with the payout."""

    if lines and isinstance(lines[0], dict):
        pairs_of_ids = {(line["source_id"], line["related_id"]) for line in lines}
    else:
        pairs_of_ids = {(line.source_id, line.related_id) for line in lines}
    sources = sorted({source for source, _ in pairs_of_ids if source})
    related = sorted({rel for _, rel in pairs_of_ids if rel})

    postgres = conn.dialect.name == "postgresql"

    def pairs(table: sa.Table, key: str, keys: list[str], *cols: str, only: Any = None) -> list[Any]:
        """(key, id, *cols) of the rows whose `key` is one of `keys` (and that meet `only`, if given)."""
        if not keys:
            return []
        k = _keys(conn, keys)
        columns = (table.c[key], table.c.id, *(table.c[c] for c in cols))
        extra = () if only is None else (only,)
        if postgres:
            # LATERAL: one unique-index probe per key. A plain join lets the planner, knowing the array's size,
            # hash the whole table (a sequential scan of a million gifts) instead.
            probe = sa.select(*columns).where(table.c[key] == k.c.key, *extra).limit(1).lateral("t")
            return list(conn.execute(sa.select(probe).select_from(k).join(probe, sa.true())).all())
        joined = k.join(table, table.c[key] == k.c.key)
        return list(conn.execute(sa.select(*columns).select_from(joined).where(*extra)).all())

    def ids(rows: list[Any]) -> dict[Any, Any]:
        return {r[0]: r[1] for r in rows}

    def triples(rows: list[Any]) -> dict[Any, Any]:
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    found = _Found({}, {}, {}, {}, {}, {}, {}, {}, {}, {})
    if provider == "gocardless":
        payments = [k for k in sources if k.startswith("PM")]
        found.gift_by_gc_payment = ids(pairs(GIFTS, "gocardless_payment_id", payments))
        found.refund_by_gc = triples(
            pairs(REFUNDS, "gocardless_refund_id", [k for k in sources if k.startswith("RF")], "gift_id", "order_id")
        )
        found.dispute_by_gc_payment = triples(pairs(DISPUTES, "gocardless_payment_id", payments, "gift_id", "order_id"))
        return found
    charges = [k for k in sources if k.startswith(("ch_", "py_"))]
    intents = [k for k in related if k.startswith("pi_")]
    found.gift_by_charge = ids(pairs(GIFTS, "stripe_charge_id", charges))
    # A payment intent is only looked up for charges not found by their own id (half the index probes).
    unresolved = sorted(
        {rel for source, rel in pairs_of_ids if rel and rel.startswith("pi_") and source not in found.gift_by_charge}
    )
    found.gift_by_intent = ids(pairs(GIFTS, "stripe_payment_intent_id", unresolved))
    found.order_by_charge = ids(pairs(ORDERS, "stripe_charge_id", charges))
    found.order_by_intent = ids(pairs(ORDERS, "stripe_payment_intent_id", intents))
    # A basket's donation line is a gift of that order.
    for keys, order_col in ((charges, "stripe_charge_id"), (intents, "stripe_payment_intent_id")):
        if not keys:
            continue
        k = _keys(conn, keys)
        if postgres:
            order = sa.select(ORDERS.c.id).where(ORDERS.c[order_col] == k.c.key).limit(1).lateral("o")
            gift = sa.select(GIFTS.c.order_id, GIFTS.c.id).where(GIFTS.c.order_id == order.c.id).lateral("g")
            statement = (
                sa.select(gift.c.order_id, gift.c.id)
                .select_from(k)
                .join(order, sa.true())
                .join(gift, sa.true())
                .order_by(gift.c.order_id, gift.c.id)
            )
        else:
            statement = (
                sa.select(GIFTS.c.order_id, GIFTS.c.id)
                .select_from(
                    k.join(ORDERS, ORDERS.c[order_col] == k.c.key).join(GIFTS, GIFTS.c.order_id == ORDERS.c.id)
                )
                .order_by(GIFTS.c.order_id, GIFTS.c.id)
            )
        for order_id, gift_id in conn.execute(statement).all():
            found.gift_by_order.setdefault(order_id, gift_id)
    found.refund_by_stripe = triples(
        pairs(REFUNDS, "stripe_refund_id", [k for k in sources if k.startswith(("re_", "pyr_"))], "gift_id", "order_id")
    )
    found.dispute_by_stripe = triples(
        pairs(
            DISPUTES, "stripe_dispute_id", [k for k in sources if k.startswith(("dp_", "du_"))], "gift_id", "order_id"
        )
    )
    # A payout_failure line settles a Stripe payout we recorded as failed, and nothing else.
    failed = sa.and_(PAYOUTS.c.provider == Provider.STRIPE.value, PAYOUTS.c.status == PayoutStatus.FAILED.value)
    found.failed_payout_by_stripe = ids(
        pairs(PAYOUTS, "provider_payout_id", [k for k in sources if k.startswith("po_")], only=failed)
    )
    return found


_Ids = tuple[str, uuid.UUID | None, uuid.UUID | None, uuid.UUID | None, uuid.UUID | None, bool]


def _resolve(line: Any, found: _Found) -> _Ids:
    """(kind, gift_id, order_id, refund_id, dispute_id, matched) for one line."""
    kind: str = line.kind
    is_fee = kind == FEE
    if kind == ACCOUNT_FEE:
        return kind, None, None, None, None, True
    match_class = _match_class(kind, line.provider_type, line.source_id)
    source, related = line.source_id, line.related_id
    gift = order = refund = dispute = None
    if match_class == "stripe_charge":
        order = found.order_by_charge.get(source) or (found.order_by_intent.get(related) if related else None)
        gift = found.gift_by_charge.get(source) or (found.gift_by_intent.get(related) if related else None)
        if gift is None and order is not None:
            gift = found.gift_by_order.get(order)
        if not is_fee:
            kind = ORDER if order else GIFT if gift else CHARGE
    elif match_class == "gc_payment":
        gift = found.gift_by_gc_payment.get(source)  # type: ignore[arg-type]
        if not is_fee:
            kind = GIFT if gift else PAYMENT
    elif match_class in ("stripe_refund", "gc_refund"):
        table = found.refund_by_stripe if match_class == "stripe_refund" else found.refund_by_gc
        hit = table.get(source)  # type: ignore[arg-type]
        if hit:
            refund, gift, order = hit
    elif match_class in ("stripe_dispute", "gc_dispute"):
        table = found.dispute_by_stripe if match_class == "stripe_dispute" else found.dispute_by_gc_payment
        hit = table.get(source)  # type: ignore[arg-type]
        if hit:
            dispute, gift, order = hit
        if match_class == "gc_dispute" and gift is None:
            gift = found.gift_by_gc_payment.get(source)  # type: ignore[arg-type]
    matched = any(x is not None for x in (gift, order, refund, dispute))
    if match_class in ("stripe_refund", "gc_refund"):
        matched = refund is not None
    elif match_class in ("stripe_dispute", "gc_dispute"):
        matched = dispute is not None
    elif match_class == "stripe_payout":
        # What it settles is our payout named by `source_id` (the JSON gives its id): no gift, order or refund.
        matched = source in found.failed_payout_by_stripe
    return kind, gift, order, refund, dispute, matched


def _settle_once(resolved: _Ids, source_id: str | None, settled: set[str]) -> _Ids:
    """A charge or Direct Debit payment is paid out once: a second line of the payout paying out the same one (a
    row repeated in an export) does not settle its gift or order again, but stays unmatched (`charge`/`payment`),
    so the payout is unreconciled and finance sees the repeated line. The first line, in the provider's order, wins.
    `settled` holds the sources already settled and is added to."""
    kind, _gift, _order, _refund, _dispute, matched = resolved
    if not matched or kind not in (GIFT, ORDER) or not source_id:
        return resolved
    if source_id in settled:
        return PAYMENT if source_id.startswith("PM") else CHARGE, None, None, None, None, False
    settled.add(source_id)
    return resolved


def match_payout(uow: UnitOfWork, payout_id: uuid.UUID) -> MatchResult:
    """Match every line of one payout and settle its status. Idempotent; constant SQL statements."""
    conn = uow.session.connection()
    payout = conn.execute(sa.select(PAYOUTS).where(PAYOUTS.c.id == payout_id)).one()
    lines = list(
        conn.execute(
            sa.select(
                LINES.c.id,
                LINES.c.kind,
                LINES.c.amount,
                LINES.c.source_id,
                LINES.c.related_id,
                LINES.c.provider_type,
                LINES.c.gift_id,
                LINES.c.order_id,
                LINES.c.refund_id,
                LINES.c.dispute_id,
                LINES.c.matched_at,
            )
            .where(LINES.c.payout_id == payout_id)
            .order_by(LINES.c.position, LINES.c.provider_line_id)
        ).all()
    )
    found = _lookup(conn, str(payout.provider), lines) if lines else None
    now = utc_now()
    updates: list[dict[str, Any]] = []
    unmatched = 0
    settled: set[str] = set()
    for line in lines:
        assert found is not None
        kind, gift, order, refund, dispute, matched = _settle_once(_resolve(line, found), line.source_id, settled)
        if not matched:
            unmatched += 1
            # An unmatched line names nothing, so finance sees exactly what is missing.
            gift = order = refund = dispute = None
        matched_at = (line.matched_at or now) if matched else None
        if (kind, gift, order, refund, dispute, matched_at) != (
            line.kind,
            line.gift_id,
            line.order_id,
            line.refund_id,
            line.dispute_id,
            line.matched_at,
        ):
            updates.append(
                {
                    "b_id": line.id,
                    "b_kind": kind,
                    "b_gift": gift,
                    "b_order": order,
                    "b_refund": refund,
                    "b_dispute": dispute,
                    "b_matched_at": matched_at,
                }
            )
    if updates:
        _bulk_update_matches(conn, updates)
    discrepancy = payout.amount - sum(line.amount for line in lines)
    state = reconciliation_state(payout.status, payout.lines_loaded_at is not None, unmatched, discrepancy)
    reconciled_at = (payout.reconciled_at or now) if state == Reconciliation.RECONCILED else None
    if (payout.reconciliation, payout.discrepancy, payout.reconciled_at) != (state, discrepancy, reconciled_at):
        conn.execute(
            sa.update(PAYOUTS)
            .where(PAYOUTS.c.id == payout_id)
            .values(reconciliation=state, discrepancy=discrepancy, reconciled_at=reconciled_at, updated_at=now)
        )
        for obj in uow.session.identity_map.values():
            if isinstance(obj, Payout) and obj.id == payout_id:
                uow.session.expire(obj)
    return MatchResult(payout_id, state, discrepancy, len(lines), unmatched, len(updates))


def reconciliation_state(status: str, lines_loaded: bool, unmatched: int, discrepancy: int) -> Reconciliation:
    if status == PayoutStatus.FAILED:
        # The money never reached the bank, however well its lines match.
        return Reconciliation.UNRECONCILED
    if not lines_loaded:
        return Reconciliation.PENDING
    if unmatched == 0 and discrepancy == 0:
        return Reconciliation.RECONCILED
    return Reconciliation.UNRECONCILED


def payouts_waiting_for(uow: UnitOfWork, source_ids: Sequence[str]) -> list[uuid.UUID]:
    """Payouts with a line that names one of these provider ids (as its source or its related id)."""
    wanted = sorted({s for s in source_ids if s})
    if not wanted:
        return []
    return sorted(uow.session.connection().execute(_PAYOUTS_NAMING, {"ids": wanted}).scalars(), key=str)


# Asked each time a gift is paid (the webhook worker's hot path): built once, the ids as a parameter.
_PAYOUTS_NAMING = (
    sa.select(LINES.c.payout_id)
    .where(
        sa.or_(
            LINES.c.source_id.in_(sa.bindparam("ids", expanding=True)),
            LINES.c.related_id.in_(sa.bindparam("ids", expanding=True)),
        )
    )
    .distinct()
)
