"""Staff pages over HTTP against `giving serve`, on the data set of bench/crm (PostgreSQL, 100,000 supporters and
1,000,000 timeline entries) plus gifts with declarations for the Gift Aid dashboard and reconciled payouts.

    .venv/bin/python bench/pages/run.py [--admin-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
                                        [--gifts 10000] [--payouts 200]

It reuses bench/crm's loader (database, COPY of supporters and history, the real `giving` commands), adds the
gifts and payouts, makes a finance user (TOTP) with `giving users add`, starts `giving serve` on a free port and
logs in through the login form like a browser. Then, one request at a time after a warm-up of 200, it times 1,000
requests to each page: supporter search, supporter page, history page, Gift Aid dashboard, payouts list, and
`/healthz` as the baseline of the same server and client. Every staff page view also writes its audit entry.
Prints p50/p95/p99 in milliseconds. Target: p95 under 100 ms for each page.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import random
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pyotp
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1].parent
sys.path.insert(0, str(ROOT))


def _crm_bench() -> Any:
    """bench/crm/run.py, loaded as a module (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_crm_run", ROOT / "bench" / "crm" / "run.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


crm_bench = _crm_bench()
WARMUP = 200
REQUESTS = 1_000
TARGET_P95_MS = 100.0


def add_money(url: str, supporters_with_gifts: int, gifts: int, payouts: int, target: uuid.UUID) -> None:
    """Gifts (with declarations, some held back for want of one), and Stripe payouts whose lines settle them."""
    from core.db import make_engine, make_sessionmaker
    from core.settings import DatabaseSettings
    from crm import service as crm_service
    from crm.models import DeclarationMethod, DeclarationScope, Supporter
    from crm.validation import DonorDetails
    from payments.models import Gift, GiftStatus, Method, Payout, PayoutLine, PayoutStatus, Provider, Reconciliation

    started = time.perf_counter()
    engine = make_engine(DatabaseSettings(url=url))
    sessions = make_sessionmaker(engine)
    rng = random.Random(7)
    today = dt.date(2026, 11, 1)
    with sessions() as session:
        owners = [target, *session.execute(sa.select(Supporter.id).limit(supporters_with_gifts - 1)).scalars()]
        session.commit()

    class Uow:  # the unit of work's surface crm_service uses (bench setup only)
        def __init__(self, session: Any) -> None:
            self.session = session

        def enqueue(self, *args: Any, **kwargs: Any) -> None:
            pass

    gift_rows: list[Gift] = []
    with sessions() as session:
        uow = Uow(session)
        for n, owner in enumerate(owners):
            if n % 10 != 0:  # one in ten gives without a declaration: held back
                crm_service.record_declaration(
                    uow,  # type: ignore[arg-type]
                    owner,
                    method=DeclarationMethod.ONLINE,
                    made_on=dt.date(2023, 1, 1),
                    scope=DeclarationScope.PAST_4_YEARS_AND_FUTURE,
                    donor=DonorDetails(
                        first_name=f"First{n}",
                        last_name=f"Last{n}",
                        address_line1=f"{n % 200 + 1} High Street",
                        postcode="CT16 1AA",
                    ).normalised(require_address=True),
                    source="donate_form",
                    wording_version="bench",
                    wording_text="I want to Gift Aid my donations.",
                )
        for n in range(gifts):
            received = today - dt.timedelta(days=rng.randrange(700))
            gift_rows.append(
                Gift(
                    supporter_id=owners[n % len(owners)],
                    amount=rng.choice([500, 1000, 2500, 5000, 10000]),
                    status=GiftStatus.PAID,
                    provider=Provider.STRIPE,
                    method=Method.CARD,
                    received_at=dt.datetime.combine(received, dt.time(12), tzinfo=dt.UTC),
                    received_on=received,
                    stripe_charge_id=f"ch_bench_{n:08d}",
                )
            )
        session.add_all(gift_rows)
        session.flush()
        per_payout = max(1, len(gift_rows) // max(payouts, 1))
        for p in range(payouts):
            chunk = gift_rows[p * per_payout : (p + 1) * per_payout]
            payout = Payout(
                provider=Provider.STRIPE,
                provider_payout_id=f"po_bench_{p:06d}",
                amount=sum(g.amount for g in chunk),
                status=PayoutStatus.PAID,
                reconciliation=Reconciliation.RECONCILED if p % 7 else Reconciliation.UNRECONCILED,
                arrival_date=today - dt.timedelta(days=p),
            )
            session.add(payout)
            session.flush()
            for position, gift in enumerate(chunk):
                matched = p % 7 or position % 3
                session.add(
                    PayoutLine(
                        payout_id=payout.id,
                        provider_line_id=f"txn_bench_{p:06d}_{position:04d}",
                        kind="gift",
                        amount=gift.amount,
                        net=gift.amount,
                        source_id=gift.stripe_charge_id,
                        gift_id=gift.id if matched else None,
                        matched_at=dt.datetime.now(dt.UTC) if matched else None,
                        position=position,
                    )
                )
        session.commit()
        session.execute(sa.text("ANALYZE"))
        session.commit()
    engine.dispose()
    took = time.perf_counter() - started
    print(f"added {len(owners):,} declarations, {gifts:,} gifts and {payouts:,} payouts in {took:.1f} s")


def log_in(client: httpx.Client, email: str, password: str, secret: str) -> None:
    form = client.get("/staff/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert csrf, "no CSRF field on the login form"
    answer = client.post(
        "/staff/login",
        data={"csrf_token": csrf.group(1), "email": email, "password": password, "totp": pyotp.TOTP(secret).now()},
    )
    if answer.status_code != 303:
        raise SystemExit(f"login failed: {answer.status_code} {answer.text[:300]}")


def timed(client: httpx.Client, path: str) -> list[float]:
    for _ in range(WARMUP):
        client.get(path).raise_for_status()
    samples = []
    for _ in range(REQUESTS):
        start = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    return samples


def third_page(client: httpx.Client, path: str) -> str:
    """The URL of the third page of a keyset-paged list: follow its "Older" link twice (a cursor, not a number)."""
    for _ in range(2):
        page = client.get(path)
        page.raise_for_status()
        older = re.search(r'href="([^"]*[?&]before=[^"]+)"', page.text)
        assert older, f"no older page after {path}"
        path = older.group(1).replace("&amp;", "&")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--database", default="giving_bench_pages")
    parser.add_argument("--gifts", type=int, default=10_000)
    parser.add_argument("--givers", type=int, default=2_000, help="supporters who gave the gifts")
    parser.add_argument("--payouts", type=int, default=200)
    args = parser.parse_args()

    url = crm_bench.create_database(args.admin_url, args.database)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIVING_")}
    env.update({"GIVING_DATABASE__URL": url, "GIVING_ENV": "production"})
    crm_bench.giving(env, "db", "upgrade")
    target, _email = crm_bench.load(url)
    add_money(url, args.givers, args.gifts, args.payouts, target)
    password = "a long benchmark password"
    uri = crm_bench.giving(env, "users", "add", "finance@example.org", "--role", "finance", stdin=password + "\n")
    secret = pyotp.parse_uri(uri.strip()).secret

    port = crm_bench.free_port()
    server = subprocess.Popen([*crm_bench.GIVING, "serve", "--port", str(port)], env=env, cwd=ROOT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for _ in range(200):
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            log_in(client, "finance@example.org", password, secret)
            search = client.get("/staff/supporters", params={"q": "Last1234"})
            assert search.status_code == 200 and "/staff/supporters/" in search.text, search.status_code
            results = {
                "GET /healthz (baseline)": timed(client, "/healthz"),
                "GET /staff/supporters?q=Last1234 (search)": timed(client, "/staff/supporters?q=Last1234"),
                "GET /staff/supporters/{id} (500 entries)": timed(client, f"/staff/supporters/{target}"),
                "GET /staff/supporters/{id}/history": timed(client, f"/staff/supporters/{target}/history"),
                "GET /staff/supporters/{id}/history?type=gift, third page": timed(
                    client, third_page(client, f"/staff/supporters/{target}/history?type=gift")
                ),
                f"GET /staff/finance/giftaid ({args.gifts:,} gifts)": timed(client, "/staff/finance/giftaid"),
                f"GET /staff/finance/payouts ({args.payouts} payouts)": timed(client, "/staff/finance/payouts"),
            }
    finally:
        server.terminate()
        server.wait(timeout=10)

    print(f"\n{REQUESTS} sequential requests each after {WARMUP} warm-up, one client, keep-alive, logged in (ms)")
    print(f"{'page':<58} {'p50':>7} {'p95':>7} {'p99':>7}")
    for name, samples in results.items():
        p50, p95, p99 = crm_bench.percentiles(samples)
        print(f"{name:<58} {p50:7.2f} {p95:7.2f} {p99:7.2f}")
    pages = {n: crm_bench.percentiles(s)[1] for n, s in results.items() if "baseline" not in n}
    worst = max(pages, key=lambda n: pages[n])
    verdict = "met" if pages[worst] < TARGET_P95_MS else "NOT met"
    print(f"\ntarget p95 < {TARGET_P95_MS:.0f} ms for each page: {verdict} (worst p95 {pages[worst]:.2f} ms, {worst})")


if __name__ == "__main__":
    main()
