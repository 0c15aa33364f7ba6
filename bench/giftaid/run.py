"""Benchmark: a Gift Aid claim of 1,000,000 eligible gifts from 200,000 donors in PostgreSQL.

Prints the seconds to build the claim (set-based INSERT ... SELECT) and to write its Charities Online XML (streamed
through a server-side cursor, IRmark computed while writing), the peak memory of the process doing it, and, as the
baseline measured in the same run, the seconds PostgreSQL takes to COPY the same gift rows to a file.

    .venv/bin/python bench/giftaid/run.py [--gifts 1000000] [--donors 200000] [--keep]

Needs a PostgreSQL on 127.0.0.1:5432 (GIVING_BENCH_POSTGRES to change the admin URL). The database
`giving_bench_giftaid` is created and dropped (kept with --keep). The build and the XML run in a child process, so
its peak RSS (ru_maxrss) is theirs alone, not the loader's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

ADMIN_URL = os.environ.get("GIVING_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
DATABASE = "giving_bench_giftaid"
TODAY = dt.datetime.now(dt.UTC).date()
GIFT_COLUMNS = "id, supporter_id, amount, currency, status, received_on, returned_amount, benefit_amount, donor_type"


def database_url() -> str:
    return str(sa.make_url(ADMIN_URL).set(database=DATABASE).render_as_string(hide_password=False))


def libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def create_database() -> None:
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{DATABASE}"')
    admin.dispose()
    from core import migrate

    migrate.upgrade(database_url())


def drop_database() -> None:
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    admin.dispose()


def filler(conn: psycopg.Connection, table: str, given: list[str]) -> tuple[list[str], list[object]]:
    """The NOT NULL columns of `table` we do not set (other teams add columns), with a value for each."""
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = %s AND is_nullable = 'NO' AND column_default IS NULL",
        (table,),
    ).fetchall()
    now = dt.datetime.now(dt.UTC)
    names, values = [], []
    for name, kind in rows:
        if name in given:
            continue
        names.append(name)
        if kind in ("integer", "bigint", "smallint", "numeric"):
            values.append(0)
        elif kind == "boolean":
            values.append(False)
        elif kind in ("json", "jsonb"):
            values.append("{}")
        elif kind.startswith("timestamp"):
            values.append(now)
        elif kind == "date":
            values.append(TODAY)
        else:
            values.append("")
    return names, values


def load(gifts: int, donors: int) -> None:
    rng = random.Random(20251101)
    first_names = ["Ann", "Bob", "Chloé", "Dev", "Eve", "Femi", "Gus", "Hana", "Ivan", "Jo", "Kai", "Lou"]
    last_names = ["Smith", "Jones", "O'Brien", "Patel", "Nguyen", "Kowalski", "House Martin", "Evans", "Brown"]
    letters = "ABCDEFGHJKLMNOPRSTUVWXY"
    with psycopg.connect(libpq(database_url())) as conn:
        supporter_ids = [uuid.uuid4() for _ in range(donors)]
        extra, extra_values = filler(conn, "supporters", ["id", "first_name", "last_name"])
        started = time.perf_counter()
        with conn.cursor().copy(
            f"COPY supporters (id, first_name, last_name{''.join(', ' + c for c in extra)}) FROM STDIN"
        ) as copy:
            for sid in supporter_ids:
                copy.write_row((sid, rng.choice(first_names), rng.choice(last_names), *extra_values))
        made_on = TODAY - dt.timedelta(days=30)
        start = (
            made_on.replace(year=made_on.year - 4)
            if not (made_on.month == 2 and made_on.day == 29)
            else made_on.replace(year=made_on.year - 4, day=28)
        )
        given = ["id", "supporter_id", "method", "made_on", "scope", "start", "title", "first_name", "last_name",
                 "house", "postcode", "country", "non_uk", "address_line1"]  # fmt: skip
        extra, extra_values = filler(conn, "declarations", given)
        with conn.cursor().copy(
            f"COPY declarations ({', '.join(given)}{''.join(', ' + c for c in extra)}) FROM STDIN"
        ) as copy:
            for n, sid in enumerate(supporter_ids):
                overseas = n % 97 == 0
                house = str(rng.randint(1, 250))
                postcode = (
                    ""
                    if overseas
                    else f"{rng.choice(letters)}{rng.choice(letters)}{rng.randint(1, 9)} {rng.randint(1, 9)}{rng.choice(letters)}{rng.choice(letters)}"  # noqa: E501
                )
                copy.write_row((uuid.uuid4(), sid, "online", made_on, "past_4_years_and_future", start,
                                rng.choice(["Mr", "Mrs", "Ms", "Dr", None]), rng.choice(first_names),
                                rng.choice(last_names), house, postcode, "FR" if overseas else "GB", overseas,
                                f"{house} High Street", *extra_values))  # fmt: skip
        given = [c.strip() for c in GIFT_COLUMNS.split(",")] + ["provider", "method", "received_at", "donor"]
        extra, extra_values = filler(conn, "gifts", given)
        with conn.cursor().copy(
            f"COPY gifts ({', '.join(given)}{''.join(', ' + c for c in extra)}) FROM STDIN"
        ) as copy:
            for n in range(gifts):
                day = TODAY - dt.timedelta(days=1 + rng.randrange(3 * 365))
                at = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
                copy.write_row((uuid.uuid4(), supporter_ids[n % donors], rng.choice((500, 1000, 1500, 2500, 5000, 10000, 25000)),  # noqa: E501
                                "GBP", "paid", day, 0, 0, "individual", "gocardless", "direct_debit", at, "{}",
                                *extra_values))  # fmt: skip
        conn.commit()
        conn.execute("ANALYZE")
        print(
            f"loaded {donors:,} donors, {donors:,} declarations, {gifts:,} gifts in {time.perf_counter() - started:.1f} s",  # noqa: E501
            file=sys.stderr,
        )


def copy_baseline(out_dir: Path) -> float:
    """PostgreSQL COPYing the same gift rows to a file: the yardstick."""
    target = out_dir / "gifts.copy"
    with psycopg.connect(libpq(database_url())) as conn, target.open("wb") as sink:
        started = time.perf_counter()
        with conn.cursor().copy(f"COPY (SELECT {GIFT_COLUMNS} FROM gifts) TO STDOUT") as copy:
            for chunk in copy:
                sink.write(chunk)
        return time.perf_counter() - started


class _Undo(Exception):
    pass


def adjustments_after_claim(runtime: Any) -> dict[str, object]:
    """What every later build (and every voided declaration) does first, with the million gifts now claimed: look
    for claimed gifts with money returned or a declaration made void. Refunds on 1,000 of them and 100 declarations
    void, in a transaction rolled back afterwards."""
    from giftaid import service

    figures: dict[str, object] = {}
    try:
        with runtime.unit_of_work() as uow:
            uow.session.execute(
                sa.text(
                    "UPDATE gifts SET returned_amount = amount / 2 WHERE id IN "
                    "(SELECT gift_id FROM giftaid_claim_gifts ORDER BY gift_id LIMIT 1000)"
                )
            )
            uow.session.execute(
                sa.text("UPDATE declarations SET voided = true WHERE id IN (SELECT id FROM declarations LIMIT 100)")
            )
            started = time.perf_counter()
            figures["adjustments"] = len(service.detect_adjustments(uow, service.rules_from(runtime.settings)))
            figures["adjustments_seconds"] = time.perf_counter() - started
            raise _Undo
    except _Undo:
        pass
    return figures


def measured(out_dir: str) -> None:
    """Child process: build the claim, then write its XML; prints one JSON line."""
    from core.runtime import build_runtime
    from core.settings import load_settings
    from giftaid import service
    from giftaid import xml as claim_xml

    settings = load_settings(env="production", database={"url": database_url()}, broker={"url": ""})
    runtime = build_runtime(settings)
    figures: dict[str, object] = {}
    with runtime.unit_of_work() as uow:
        started = time.perf_counter()
        result = service.build_claim(uow, settings, through=TODAY, actor="bench")
        figures["build_seconds"] = time.perf_counter() - started
        figures["lines"], figures["gifts"], figures["held_back"] = result.lines, result.gifts, len(result.held_back)
    figures["rss_after_build_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with runtime.unit_of_work() as uow:
        claim = service.get_claim(uow.session, result.claim_id)  # type: ignore[arg-type]
        started = time.perf_counter()
        files = service.write_claim_files(uow.session, settings, claim, Path(out_dir), "xml", check=False)
        figures["xml_seconds"] = time.perf_counter() - started
        figures["xml_files"] = len(files)
        figures["xml_bytes"] = sum(f.stat().st_size for f in files)
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures.update(adjustments_after_claim(runtime))
    started = time.perf_counter()
    problems = sum(len(claim_xml.check_business_rules(f)) for f in files)
    figures["rules_check_seconds"] = time.perf_counter() - started
    figures["rules_problems"] = problems
    runtime.engine.dispose()
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gifts", type=int, default=1_000_000)
    parser.add_argument("--donors", type=int, default=200_000)
    parser.add_argument("--keep", action="store_true", help="Keep the database afterwards.")
    parser.add_argument("--reuse", action="store_true", help="Use the database a --keep run left (claims emptied).")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measured(args.measure)
        return
    if args.reuse:
        with psycopg.connect(libpq(database_url())) as conn:
            conn.execute(
                "TRUNCATE giftaid_held_back, giftaid_adjustments, giftaid_claim_events, giftaid_claim_gifts, "
                "giftaid_claim_donors, giftaid_messages, giftaid_claims"
            )
    else:
        create_database()
    try:
        if not args.reuse:
            load(args.gifts, args.donors)
        with tempfile.TemporaryDirectory(prefix="giftaid-bench-") as folder:
            # The machine is shared: COPY is timed three times before and twice after, and the median is the baseline.
            copies = [copy_baseline(Path(folder)) for _ in range(3)]
            child = subprocess.run(
                [sys.executable, __file__, "--measure", folder], check=True, capture_output=True, text=True, cwd=ROOT
            )
            copies += [copy_baseline(Path(folder)) for _ in range(2)]
        baseline = sorted(copies)[len(copies) // 2]
        figures = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        if not args.keep:
            drop_database()
    total = figures["build_seconds"] + figures["xml_seconds"]
    print(
        f"gifts claimed:               {figures['gifts']:,} on {figures['lines']:,} lines ({figures['held_back']} held back)"  # noqa: E501
    )
    print(f"build the claim:             {figures['build_seconds']:.2f} s")
    print(
        f"write the XML:               {figures['xml_seconds']:.2f} s ({figures['xml_files']} message(s), {figures['xml_bytes'] / 1e6:.0f} MB)"  # noqa: E501
    )
    print(f"build + XML:                 {total:.2f} s")
    print(f"baseline, COPY gifts to file: {baseline:.2f} s (median of {', '.join(f'{c:.2f}' for c in copies)})")
    print(f"ratio:                       {total / baseline:.1f}x the baseline (target <= 10x)")
    print(
        f"adjustments after the claim: {figures['adjustments']:,} recorded (1,000 claimed gifts refunded, 100 "
        f"declarations void) among {figures['gifts']:,} claimed gifts in {figures['adjustments_seconds']:.2f} s "
        "(every later build and every voided declaration looks first)"
    )
    print(f"load average (1, 5, 15 min): {', '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores")
    print(
        f"peak memory (ru_maxrss):     {figures['peak_rss_mb']:.0f} MB (after the build: {figures['rss_after_build_mb']:.0f} MB; target < 300 MB)"  # noqa: E501
    )
    print(
        f"HMRC business rules re-read: {figures['rules_check_seconds']:.2f} s, {figures['rules_problems']} problems (not in the figure above)"  # noqa: E501
    )


if __name__ == "__main__":
    main()
