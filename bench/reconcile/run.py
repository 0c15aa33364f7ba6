"""Payout reconciliation at scale: a Stripe payout of 20,000 balance transactions matched against 1,000,000 gifts in
PostgreSQL, the real Stripe SDK reading every page from a local server that answers like Stripe.

    .venv/bin/python bench/reconcile/run.py [--gifts 1000000] [--sizes 2000,20000] [--keep]

Prints, for each payout size: the seconds to list its balance transactions through the SDK, to store its lines, and
to match them (the matching alone), with the number of SQL statements each issued (counted with SQLAlchemy's
`before_cursor_execute` event). The baseline, measured in the same run, is matching the smaller payout line by line
(one lookup per line), the way it is usually first written. Target: matching 20,000 lines under 5 s, with a number of
statements that does not grow with the payout's size.

Needs PostgreSQL (GIVING_BENCH_POSTGRES, default postgresql+psycopg://postgres@127.0.0.1:5432/postgres); it creates and
drops its own database `giving_bench_reconcile`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402
from sqlalchemy import event  # noqa: E402
from sqlmodel import select  # noqa: E402

from core import migrate  # noqa: E402
from core.runtime import Runtime, build_runtime  # noqa: E402
from core.settings import load_settings  # noqa: E402
from payments.models import Gift, Payout, PayoutLine, PayoutStatus, Provider  # noqa: E402
from payments.payouts import stripe_lines, upsert_payout  # noqa: E402
from payments.providers.stripe import StripeGateway  # noqa: E402
from payments.reconcile import match_payout, store_lines  # noqa: E402

ADMIN_URL = os.environ.get("GIVING_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
DB_NAME = "giving_bench_reconcile"
SUPPORTERS = 10_000
REFUND_EVERY = 20  # one line in 20 is a refund of an earlier gift
INTENT_ONLY_EVERY = 10  # one charge in 10 is known to us only by its payment intent


class StripeLike:
    """`GET /v1/balance_transactions?payout=...`: Stripe's list pages, serialised once so the server is not what
    is measured."""

    def __init__(self, payouts: dict[str, list[dict[str, Any]]], page_size: int = 100):
        self.pages: dict[tuple[str, str], bytes] = {}
        for payout_id, rows in payouts.items():
            after = ""
            for start in range(0, len(rows), page_size):
                page = rows[start : start + page_size]
                body = {
                    "object": "list",
                    "url": "/v1/balance_transactions",
                    "has_more": start + page_size < len(rows),
                    "data": page,
                }
                self.pages[(payout_id, after)] = json.dumps(body).encode()
                after = page[-1]["id"]
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                key = (query.get("payout", [""])[0], query.get("starting_after", [""])[0])
                server.requests += 1
                data = server.pages.get(key, b'{"error": {"type": "invalid_request_error", "message": "no page"}}')
                self.send_response(200 if key in server.pages else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"


class StatementCounter:
    def __init__(self, engine: sa.Engine):
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, *args: Any) -> None:
        self.count += 1

    @contextmanager
    def measure(self) -> Iterator[dict[str, float]]:
        result: dict[str, float] = {}
        before, started = self.count, time.perf_counter()
        yield result
        result["seconds"] = time.perf_counter() - started
        result["statements"] = self.count - before


def create_database() -> str:
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{DB_NAME}"')
    admin.dispose()
    url = sa.make_url(ADMIN_URL).set(database=DB_NAME).render_as_string(hide_password=False)
    migrate.upgrade(url)
    return url


def drop_database() -> None:
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    admin.dispose()


def charge_id(n: int) -> str:
    return f"ch_bench{n:08d}"


def intent_id(n: int) -> str:
    return f"pi_bench{n:08d}"


def load_gifts(engine: sa.Engine, gifts: int) -> None:
    """COPY supporters and gifts; every gift has a charge and a payment intent id."""
    now = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    supporter_ids = [uuid.uuid4() for _ in range(SUPPORTERS)]
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        supporter_columns = "id, email, first_name, last_name, statement_preference, created_at, updated_at"
        with cursor.copy(f"COPY supporters ({supporter_columns}) FROM STDIN") as copy:  # type: ignore[attr-defined]
            for n, supporter in enumerate(supporter_ids):
                copy.write_row((supporter, f"bench{n}@example.org", "Bench", f"Donor{n}", "per_gift", now, now))
        columns = (
            "id, supporter_id, amount, currency, status, provider, method, donor_type, received_at, received_on, donor,"
            " returned_amount, benefit_amount, benefit_description, failure_reason, stripe_charge_id,"
            " stripe_payment_intent_id, created_at, updated_at"
        )
        with cursor.copy(f"COPY gifts ({columns}) FROM STDIN") as copy:  # type: ignore[attr-defined]
            for n in range(gifts):
                copy.write_row(
                    (
                        uuid.uuid4(),
                        supporter_ids[n % SUPPORTERS],
                        1000 + n % 5000,
                        "GBP",
                        "paid",
                        "stripe",
                        "card",
                        "individual",
                        now,
                        now.date(),
                        "{}",
                        0,
                        0,
                        "",
                        "",
                        # Gifts known by their payment intent only have no charge id (matched through the intent).
                        None if n % INTENT_ONLY_EVERY == 0 else charge_id(n),
                        intent_id(n),
                        now,
                        now,
                    )
                )
        raw.commit()
        cursor.execute("ANALYZE supporters")
        cursor.execute("ANALYZE gifts")
        raw.commit()
    finally:
        raw.close()


def make_refunds(runtime: Runtime, payout_no: int, size: int, gifts: int) -> None:
    """Refund rows for the payout's refund lines (the refunded gifts are earlier gifts)."""
    with runtime.unit_of_work() as uow:
        conn = uow.session.connection()
        gift_rows = conn.execute(
            sa.select(Gift.__table__.c.id, Gift.__table__.c.supporter_id).where(  # type: ignore[attr-defined]
                Gift.__table__.c.stripe_payment_intent_id.in_(  # type: ignore[attr-defined]
                    [intent_id(refund_gift(payout_no, i, gifts)) for i in range(0, size, REFUND_EVERY)]
                )
            )
        ).all()
        by_gift = {row.id: row.supporter_id for row in gift_rows}
        intents = {
            intent_id(refund_gift(payout_no, i, gifts)): f"re_bench{payout_no}_{i:06d}"
            for i in range(0, size, REFUND_EVERY)
        }
        pi_to_gift = dict(
            conn.execute(
                sa.select(Gift.__table__.c.stripe_payment_intent_id, Gift.__table__.c.id).where(  # type: ignore[attr-defined]
                    Gift.__table__.c.stripe_payment_intent_id.in_(list(intents))  # type: ignore[attr-defined]
                )
            ).all()
        )
        now = dt.datetime.now(dt.UTC)
        rows = [
            {
                "id": uuid.uuid4(),
                "supporter_id": by_gift[pi_to_gift[pi]],
                "gift_id": pi_to_gift[pi],
                "amount": 500,
                "gift_amount": 500,
                "order_amount": 0,
                "currency": "GBP",
                "status": "succeeded",
                "provider": "stripe",
                "reason": "",
                "allocated_by": "rule",
                "stripe_refund_id": refund,
                "created_at": now,
                "updated_at": now,
            }
            for pi, refund in intents.items()
        ]
        from payments.models import Refund

        conn.execute(sa.insert(Refund.__table__), rows)  # type: ignore[attr-defined]


def refund_gift(payout_no: int, i: int, gifts: int) -> int:
    return (payout_no * 7_919 + i * 37) % gifts


def balance_transactions(payout_no: int, payout_id: str, size: int, gifts: int) -> tuple[list[dict[str, Any]], int]:
    rows = []
    total = 0
    for i in range(size):
        if i % REFUND_EVERY == 0:
            n = refund_gift(payout_no, i, gifts)
            source: dict[str, Any] = {"id": f"re_bench{payout_no}_{i:06d}", "object": "refund", "charge": charge_id(n)}
            amount, fee, category = -500, 0, "refund"
        else:
            n = (payout_no * 104_729 + i * 13) % gifts
            source = {"id": charge_id(n), "object": "charge", "payment_intent": intent_id(n), "amount": 1000}
            amount, fee, category = 1000 + n % 5000, 20 + n % 50, "charge"
        total += amount - fee
        rows.append(
            {
                "id": f"txn_bench{payout_no}_{i:06d}",
                "object": "balance_transaction",
                "amount": amount,
                "fee": fee,
                "net": amount - fee,
                "currency": "gbp",
                "type": category,
                "reporting_category": category,
                "source": source,
                "status": "available",
                "description": None,
                "fee_details": [],
                "available_on": 1767225600,
                "created": 1767225600,
            }
        )
    rows.append(
        {
            "id": f"txn_bench{payout_no}_payout",
            "object": "balance_transaction",
            "amount": -total,
            "fee": 0,
            "net": -total,
            "currency": "gbp",
            "type": "payout",
            "reporting_category": "payout",
            "source": {"id": payout_id, "object": "payout"},
            "status": "available",
            "description": "STRIPE PAYOUT",
            "fee_details": [],
        }
    )
    return rows, total


def naive_matching(runtime: Runtime, counter: StatementCounter, payout_pk: uuid.UUID) -> dict[str, float]:
    """The baseline: look each line's source up on its own (reads only)."""
    from payments.models import PayoutLine, Refund

    with runtime.unit_of_work() as uow, counter.measure() as figures:
        session = uow.session
        lines = session.exec(select(PayoutLine).where(PayoutLine.payout_id == payout_pk)).all()
        matched = 0
        for line in lines:
            if line.source_id and line.source_id.startswith("ch_"):
                gift = session.exec(select(Gift.id).where(Gift.stripe_charge_id == line.source_id)).first()
                if gift is None and line.related_id:
                    gift = session.exec(select(Gift.id).where(Gift.stripe_payment_intent_id == line.related_id)).first()
                matched += gift is not None
            elif line.source_id and line.source_id.startswith("re_"):
                refund = session.exec(select(Refund.id).where(Refund.stripe_refund_id == line.source_id)).first()
                matched += refund is not None
        figures["matched"] = matched
        figures["lines"] = len(lines)
        uow.session.rollback()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gifts", type=int, default=1_000_000)
    parser.add_argument("--sizes", default="2000,20000", help="payout sizes (balance transactions), comma-separated")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    started = time.perf_counter()
    url = create_database()
    settings = load_settings(env="test", database={"url": url}, broker={"url": ""})
    runtime = build_runtime(settings)
    load_gifts(runtime.engine, args.gifts)
    print(f"loaded {args.gifts:,} gifts with COPY in {time.perf_counter() - started:.1f} s", flush=True)

    payouts: dict[str, list[dict[str, Any]]] = {}
    totals: dict[str, int] = {}
    for payout_no, size in enumerate(sizes, start=1):
        payout_id = f"po_bench{payout_no}_{size}"
        payouts[payout_id], totals[payout_id] = balance_transactions(payout_no, payout_id, size, args.gifts)
        make_refunds(runtime, payout_no, size, args.gifts)
    server = StripeLike(payouts)
    settings = load_settings(
        env="test",
        database={"url": url},
        broker={"url": ""},
        stripe={"secret_key": "sk_test_bench", "webhook_secret": "whsec_bench", "api_base": server.url},
    )
    runtime.engine.dispose()
    runtime = build_runtime(settings)
    counter = StatementCounter(runtime.engine)
    gateway = StripeGateway(settings.stripe)

    results = []
    for payout_id, transactions in payouts.items():
        size = len(transactions) - 1
        requests_before = server.requests
        fetch_started = time.perf_counter()
        lines = stripe_lines(gateway.iter_payout_balance_transactions(payout_id), payout_id)
        fetch_seconds = time.perf_counter() - fetch_started
        pages = server.requests - requests_before
        with runtime.unit_of_work() as uow:
            payout = upsert_payout(
                uow, Provider.STRIPE, payout_id, amount=totals[payout_id], currency="gbp", status=PayoutStatus.PAID
            )
            payout_pk = payout.id
        # 1. A new payout: its lines are stored, each matched as it is inserted.
        with runtime.unit_of_work() as uow, counter.measure() as store:
            store_lines(uow, uow.session.get(Payout, payout_pk), lines)  # type: ignore[arg-type]
        # 2. The matching pass (`giving reconcile`, a repeated event): every line resolved again against the gifts,
        #    compared, and the payout settled; nothing to write.
        with runtime.unit_of_work() as uow, counter.measure() as match:
            outcome = match_payout(uow, payout_pk)
        # 3. The worst case: every line arrived before its gift (matches cleared outside the timing), so the
        #    matching pass resolves and writes every line.
        with runtime.unit_of_work() as uow:
            uow.session.connection().execute(
                sa.update(PayoutLine.__table__)  # type: ignore[attr-defined]
                .where(PayoutLine.__table__.c.payout_id == payout_pk)  # type: ignore[attr-defined]
                .values(gift_id=None, order_id=None, refund_id=None, dispute_id=None, matched_at=None, kind="charge")
            )
        with runtime.unit_of_work() as uow, counter.measure() as late:
            late_outcome = match_payout(uow, payout_pk)
        results.append((payout_id, size, len(lines), pages, fetch_seconds, store, match, outcome, late, late_outcome))

    smallest = min(results, key=lambda r: r[1])
    baseline = naive_matching(runtime, counter, _payout_pk(runtime, smallest[0]))

    print()
    print(
        f"{'balance txns':>12} {'lines':>7} {'pages':>5} {'SDK list s':>10} "
        f"{'store+match s':>13} {'stmts':>5} {'MATCH s':>8} {'stmts':>5} {'late MATCH s':>12} {'stmts':>5}  result"
    )
    for _pid, size, nlines, pages, fetch_s, store, match, outcome, late, late_outcome in results:
        print(
            f"{size:>12,} {nlines:>7,} {pages:>5} {fetch_s:>10.2f} "
            f"{store['seconds']:>13.2f} {store['statements']:>5.0f} "
            f"{match['seconds']:>8.2f} {match['statements']:>5.0f} "
            f"{late['seconds']:>12.2f} {late['statements']:>5.0f}"
            f"  {outcome.reconciliation}, {outcome.unmatched} unmatched, discrepancy {outcome.discrepancy};"
            f" late pass wrote {late_outcome.changed_lines} lines, {late_outcome.reconciliation}"
        )
    print(
        f"\nbaseline (same run): line-by-line lookups for the {smallest[1]:,}-transaction payout "
        f"({baseline['lines']:.0f} lines, {baseline['matched']:.0f} found): {baseline['seconds']:.2f} s, "
        f"{baseline['statements']:.0f} statements"
    )
    biggest = max(results, key=lambda r: r[1])
    match_statements = [f"{r[6]['statements']:.0f}/{r[8]['statements']:.0f}" for r in results]
    print(
        f"target: matching {biggest[1]:,} balance transactions against {args.gifts:,} gifts in < 5 s: "
        f"{'met' if biggest[6]['seconds'] < 5 else 'NOT met'} ({biggest[6]['seconds']:.2f} s; "
        f"late pass writing every line {biggest[8]['seconds']:.2f} s); statements (pass/late) "
        f"{'constant' if len({(r[6]['statements'], r[8]['statements']) for r in results}) == 1 else 'vary'} "
        "across sizes "
        f"({', '.join(match_statements)})"
    )
    runtime.engine.dispose()
    server.httpd.shutdown()
    if not args.keep:
        drop_database()


def _payout_pk(runtime: Runtime, provider_payout_id: str) -> uuid.UUID:
    from payments.models import Payout

    with runtime.read_session() as session:
        return session.exec(select(Payout.id).where(Payout.provider_payout_id == provider_payout_id)).one()


if __name__ == "__main__":
    main()
