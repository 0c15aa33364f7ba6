"""One run of `giving demo`: the whole system on the embedded default, end to end, then what it produced and where.

1. A fresh SQLite database under ./var/demo (migrations and the default shop catalogue, as `giving db upgrade`).
2. The real web application under uvicorn on a free loopback port, with the in-process worker (no broker), and a
   fake Stripe and GoCardless on loopback that the real SDKs talk to (giving/demo/world.py).
3. Eight donors through the real donate and shop forms; the demo then plays the providers (giving/demo/scenario.py)
   and POSTs their signed webhook deliveries to /webhooks/stripe and /webhooks/gocardless, shuffled, some twice,
   and two forged ones that must be refused.
4. It waits until every event and job is done (GET /readyz), renders the annual statements, builds a Gift Aid claim
   through today, reconciles the payouts, creates an admin with an API token and reads the supporters' totals back
   through the JSON API.
5. It prints what it recorded and produced (gifts, PDFs, emails, the claim's .ods and .xml, the reconciliation
   report) and checks it against the ledger the scenario worked out on its own. Exit 0 only if every check holds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import secrets
import shutil
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from sqlmodel import col, select

from core import migrate
from core.auth import add_staff_user, create_api_token
from core.clock import uk_today, utc_now
from core.logging import configure_logging
from core.money import format_pence
from core.runtime import Runtime, build_runtime, set_runtime
from core.settings import Settings, load_settings
from crm.models import Supporter
from giftaid import service as giftaid_service
from giving.demo.provider import FakeProvider
from giving.demo.scenario import (
    DONORS,
    FORMS,
    SHOP_BASKET,
    SHOP_DONATION,
    TRACKED_HISTORY,
    Delivery,
    DemoFailure,
    Expected,
    Form,
    Opened,
    Play,
)
from giving.demo.world import GoCardlessWorld, StripeWorld
from payments.models import Gift, Order, OrderStatus, RegularGift, RegularGiftStatus
from receipts import service as receipts_service
from receipts.documents import tax_year_of
from receipts.models import DocumentKind

log = logging.getLogger("giving.demo")

DEFAULT_DIRECTORY = Path("var") / "demo"
DATABASE_NAME = "giving.sqlite3"
DEMO_FOLDERS = ("receipts", "outbox", "claims", "reconciliation")
# In the directory a run made: the next run deletes what an earlier one left only where it finds this file.
MARKER = ".giving-demo"
# Secrets for the loopback fakes only: they open nothing anywhere else.
STRIPE_SECRET_KEY = "sk_test_demo_0000000000000000"
STRIPE_WEBHOOK_SECRET = "whsec_demo_0000000000000000"
GOCARDLESS_ACCESS_TOKEN = "sandbox_demo_0000000000000000"
GOCARDLESS_WEBHOOK_SECRET = "demo_gocardless_webhook_secret"
ADMIN_EMAIL = "admin@demo.example.org"
SEED = 20_260_406


@dataclass
class Options:
    directory: Path = DEFAULT_DIRECTORY
    database_url: str | None = None  # another (empty) database instead of the demo's own SQLite file
    seed: int = SEED
    timeout: float = 90.0  # seconds to wait for the workers at each step
    serve: bool = False  # keep the web application running afterwards, until Ctrl-C


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Outcome:
    checks: list[Check] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    _mark: float = field(default_factory=time.monotonic)

    def lap(self, step: str) -> None:
        """How long the step that just ended took (printed at the end)."""
        now = time.monotonic()
        self.timings[step] = now - self._mark
        self._mark = now

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name, ok, detail))
        return ok

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


# --- the set-up ---------------------------------------------------------------------------------------------------


def demo_settings(
    options: Options, *, database_url: str, stripe_url: str, gocardless_url: str, web_url: str
) -> Settings:
    directory = options.directory
    return load_settings(
        env="demo",
        database={"url": database_url},
        broker={"url": "", "inline_threads": 4},
        stripe={
            "secret_key": STRIPE_SECRET_KEY,
            "webhook_secret": STRIPE_WEBHOOK_SECRET,
            "api_base": stripe_url,
            "livemode": False,
        },
        gocardless={
            "access_token": GOCARDLESS_ACCESS_TOKEN,
            "webhook_secret": GOCARDLESS_WEBHOOK_SECRET,
            "environment": "sandbox",
            "base_url": gocardless_url,
        },
        receipts={"storage_dir": str(directory / "receipts")},
        email={"outbox_dir": str(directory / "outbox")},
        # Eight donors from one address in a minute is the demo, not card testing.
        web={"base_url": web_url, "form_rate_per_minute": 1000},
    )


def fresh_directory(options: Options) -> str:
    """Removes what an earlier run left (only the demo's own files) and returns the database URL to use."""
    directory = options.directory
    if options.database_url:
        refuse_unless_empty(options.database_url)
    claim_directory(directory)
    for name in DEMO_FOLDERS:
        shutil.rmtree(directory / name, ignore_errors=True)
    if options.database_url:
        return options.database_url
    for suffix in ("", "-wal", "-shm", "-journal"):
        (directory / f"{DATABASE_NAME}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{(directory / DATABASE_NAME).as_posix()}"


def claim_directory(directory: Path) -> None:
    """The demo deletes an earlier run's database and folders only in a directory it made (its marker file is
    there) or in one that has none of them: `--dir var` is where `giving serve` keeps the charity's own database and
    receipts by default (./var/giving.sqlite3, ./var/receipts), and the demo must not take them for its own. The
    default ./var/demo is the demo's by its name (a run before the marker left none there)."""
    marker = directory / MARKER
    if marker.is_file():
        return
    names = [f"{DATABASE_NAME}{suffix}" for suffix in ("", "-wal", "-shm", "-journal")]
    found = [name for name in (*names, *DEMO_FOLDERS) if (directory / name).exists()]
    if found and directory != DEFAULT_DIRECTORY:
        raise DemoFailure(
            f"{directory} holds {', '.join(found)}, which the demo did not make (there is no {MARKER} in it), so it "
            "will not delete them: give another --dir, or move them away first"
        )
    directory.mkdir(parents=True, exist_ok=True)
    marker.write_text(
        "Made by `giving demo`: each run deletes the database and the receipts, outbox, claims and reconciliation\n"
        "folders an earlier run left here, and nothing else.\n",
        encoding="utf-8",
    )


def refuse_unless_empty(url: str) -> None:
    """The demo writes donors and money: only into a database with nothing in it."""
    from core.db import normalise_url

    engine = sa.create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
    except sa.exc.SQLAlchemyError as exc:
        raise DemoFailure(f"cannot open {shown_url(url)}: {exc}") from exc
    finally:
        engine.dispose()
    if tables:
        raise DemoFailure(f"{shown_url(url)} is not empty ({len(tables)} tables); the demo needs an empty database")


def shown_url(url: str) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)


def loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def web_server(runtime: Runtime, sock: socket.socket) -> Iterator[None]:
    """The real application under uvicorn, in a thread; its lifespan starts the in-process worker."""
    import uvicorn

    from giving.app import create_app

    app = create_app(runtime=runtime)
    config = uvicorn.Config(app, log_level="warning", access_log=False, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="demo-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise DemoFailure("the web application did not start (see the log above)")
        time.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def web_client(web_url: str) -> httpx.Client:
    # TCP_NODELAY: a POST's headers and body are two writes, and the body would wait ~40 ms for a delayed ACK.
    transport = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    return httpx.Client(base_url=web_url, timeout=30, transport=transport)


# --- the donors -----------------------------------------------------------------------------------------------------


def checkout_ref(page: str) -> str:
    """The form's own id, as a browser would send it back (a resubmission reuses the checkout)."""
    found = re.search(r'name="checkout_ref" value="([0-9a-f-]{36})"', page)
    return found[1] if found else str(uuid.uuid4())


def shop_skus(page: str) -> list[str]:
    return re.findall(r'name="sku" value="([^"]+)"', page)


def form_fields(form: Form, page: str) -> dict[str, str | list[str]]:
    fields: dict[str, str | list[str]] = {**form.values, "checkout_ref": checkout_ref(page)}
    if form.path == "/shop/checkout":
        offered = set(shop_skus(page))
        skus, quantities = [], []
        for product, size, quantity in SHOP_BASKET:
            sku = f"{product}-{size}"
            if sku not in offered:
                raise DemoFailure(f"the shop page offers no {sku} (it offers {sorted(offered)})")
            skus.append(sku)
            quantities.append(str(quantity))
        fields.update({"sku": skus, "quantity": quantities, "donation": f"{SHOP_DONATION // 100}"})
    return fields


def submit_forms(client: httpx.Client, play: Play, outcome: Outcome) -> None:
    """Each donor fills in the real form and is sent (303) to the provider's hosted page."""
    stripe, gocardless = play.stripe, play.gocardless
    for form in FORMS:
        page = client.get("/shop" if form.path == "/shop/checkout" else "/donate")
        if page.status_code != 200:
            raise DemoFailure(f"GET {page.url.path} answered {page.status_code}")
        fields = form_fields(form, page.text)
        answer = client.post(form.path, data=fields)
        if answer.status_code != 303:
            raise DemoFailure(f"{form.donor.name}'s form ({form.path}) answered {answer.status_code}, not 303")
        location = answer.headers["location"]
        if form.method == "direct_debit":
            flow_id = parse_qs(urlsplit(location).query)["id"][0]
            request_id = gocardless.flows[flow_id]["links"]["billing_request"]
            checkout_id = gocardless.billing_request(request_id)["metadata"]["checkout_id"]
            play.opened[form.story] = Opened(form, request_id, checkout_id)
        else:
            session_id = urlsplit(location).path.rsplit("/", 1)[-1]
            checkout_id = stripe.session(session_id)["metadata"]["checkout_id"]
            play.opened[form.story] = Opened(form, session_id, checkout_id)
        if form.story == "card_once":
            # A double click: the same form again goes to the same hosted page, and no second checkout is made.
            again = client.post(form.path, data=fields)
            outcome.check(
                "a resubmitted form reuses its checkout",
                again.status_code == 303 and again.headers.get("location") == location,
                f"{again.status_code} {again.headers.get('location')}",
            )
    outcome.check(
        "each form opened one hosted page",
        len(stripe.sessions) == 6 and len(gocardless.billing_requests) == 2,
        f"{len(stripe.sessions)} Checkout Sessions, {len(gocardless.billing_requests)} Billing Requests",
    )


# --- the providers' deliveries --------------------------------------------------------------------------------------


@dataclass
class DeliveryStats:
    posts: int = 0
    events: set[str] = field(default_factory=set)
    repeated: int = 0
    refused: int = 0
    unexpected: list[str] = field(default_factory=list)


def signed(delivery: Delivery, *, now: int) -> tuple[str, bytes, dict[str, str]]:
    """The body and headers the provider sends: Stripe's `t=...,v1=...` over "t.body", GoCardless's hex HMAC."""
    body = json.dumps(delivery.body(), separators=(",", ":")).encode()
    if delivery.provider == "stripe":
        secret = "whsec_not_the_one" if delivery.forged else STRIPE_WEBHOOK_SECRET
        signature = hmac.new(secret.encode(), f"{now}.".encode() + body, hashlib.sha256).hexdigest()
        return "/webhooks/stripe", body, {"Stripe-Signature": f"t={now},v1={signature}"}
    secret = "not_the_secret" if delivery.forged else GOCARDLESS_WEBHOOK_SECRET
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return "/webhooks/gocardless", body, {"Webhook-Signature": signature}


def deliver(client: httpx.Client, deliveries: list[Delivery], stats: DeliveryStats) -> None:
    for delivery in deliveries:
        path, body, headers = signed(delivery, now=int(time.time()))
        answer = client.post(path, content=body, headers={**headers, "Content-Type": "application/json"})
        stats.posts += 1
        if delivery.forged:
            refused = answer.status_code == (400 if delivery.provider == "stripe" else 498)
            stats.refused += refused
            if not refused:
                stats.unexpected.append(f"a forged {delivery.provider} delivery answered {answer.status_code}")
            continue
        if not 200 <= answer.status_code < 300:
            stats.unexpected.append(f"{path} answered {answer.status_code}: {answer.text[:200]}")
            continue
        for event_id in delivery.event_ids:
            stats.repeated += event_id in stats.events
            stats.events.add(event_id)


def wait_until_done(client: httpx.Client, runtime: Runtime, timeout: float) -> str | None:
    """Until /readyz shows no pending event or job, twice in a row, and no event has failed; else what is left."""
    from webhooks import service as webhooks_service

    deadline = time.monotonic() + timeout
    quiet = 0
    left = "nothing"
    while time.monotonic() < deadline:
        ready = client.get("/readyz").json()
        with runtime.read_session() as session:
            failed = webhooks_service.status_counts(session).get("failed", 0)
        left = f"{ready['pending_events']} events pending, {ready['pending_jobs']} jobs pending, {failed} events failed"
        quiet = quiet + 1 if ready["pending_events"] == 0 and ready["pending_jobs"] == 0 and failed == 0 else 0
        if quiet >= 2:
            return None
        time.sleep(0.2)
    return left


# --- after the money ------------------------------------------------------------------------------------------------


def issue_statements(runtime: Runtime, tax_years: list[str]) -> int:
    """The annual statements (`giving receipts annual --everyone`): numbered here, rendered by the workers."""
    from giving.commands.receipts import number_statements

    # The demo's gifts are days old, so their tax year is still running: year-to-date statements.
    return sum(number_statements(runtime, year, everyone=True, year_to_date=True) for year in tax_years)


@dataclass
class ClaimOutcome:
    result: giftaid_service.ClaimResult
    files: list[Path]


def build_claim(runtime: Runtime, directory: Path) -> ClaimOutcome:
    """`giving giftaid claim --through TODAY --out ./var/demo/claims`."""
    with runtime.unit_of_work() as uow:
        result = giftaid_service.build_claim(uow, runtime.settings, through=uk_today(), actor="demo")
        files: list[Path] = []
        if result.claim_id is not None:
            claim = giftaid_service.get_claim(uow.session, result.claim_id)
            files = giftaid_service.write_claim_files(uow.session, runtime.settings, claim, directory / "claims")
    return ClaimOutcome(result, files)


def reconcile(runtime: Runtime) -> list[str]:
    """`giving reconcile`: match every payout again, then the report it prints."""
    from giving.commands.shop import reconcile_all, reconciliation_lines

    reconcile_all(runtime)
    with runtime.read_session() as session:
        return reconciliation_lines(session)


@dataclass
class Books:
    """The reconciliation report and the accounts journal, as files for finance."""

    files: list[Path]
    entries: int = 0
    unbalanced: dict[str, int] = field(default_factory=dict)
    bank: int = 0  # what the journal says reached the bank
    suspense: int = 0  # postings to a suspense account (something not matched or not adding up)


def write_books(runtime: Runtime, directory: Path, since: dt.date) -> Books:
    """`giving payouts show` of every payout (with its lines) into payouts.json, and `giving export journal` from
    `since` through today into journal.csv, under DIR/reconciliation."""
    from core.http import json_text
    from giving.commands.shop import giftaid_postings
    from payments import journal, payouts

    out = directory / "reconciliation"
    out.mkdir(parents=True, exist_ok=True)
    today = uk_today()
    with runtime.read_session() as session:
        items, _ = payouts.list_payouts(session)
        shown_payouts = [payouts.payout_json(session, payouts.find_payout(session, item["id"])) for item in items]
        postings = journal.payout_postings(session, since, today) + giftaid_postings(session, since, today)
    report = out / "payouts.json"
    report.write_text(json_text({"items": shown_payouts}) + "\n", encoding="utf-8")
    ledger = out / "journal.csv"
    with ledger.open("w", encoding="utf-8", newline="") as handle:
        journal.write_csv(postings, handle)
    balances = journal.balances(postings)
    return Books(
        files=[report, ledger],
        entries=len(balances),
        unbalanced={entry: total for entry, total in balances.items() if total},
        bank=sum(p.amount for p in postings if p.account.startswith(f"{journal.BANK}: ")),
        suspense=sum(1 for p in postings if p.account.startswith("Suspense")),
    )


@dataclass
class Staff:
    password: str
    otpauth_uri: str | None
    token: str


def create_staff(runtime: Runtime) -> Staff:
    password = secrets.token_urlsafe(12)
    with runtime.unit_of_work() as uow:
        user = add_staff_user(uow, ADMIN_EMAIL, "admin", password, issuer=runtime.settings.charity.name)
    with runtime.unit_of_work() as uow:
        token = create_api_token(uow, ADMIN_EMAIL, name="giving demo", lifetime=dt.timedelta(days=30))
    return Staff(password, user.otpauth_uri, token)


# --- what was recorded ----------------------------------------------------------------------------------------------


@dataclass
class GiftRow:
    gift: Gift
    supporter: Supporter
    kind: str


def recorded_gifts(runtime: Runtime) -> list[GiftRow]:
    """Every gift with its supporter, in the order the money arrived (a read for the report, nothing more)."""
    with runtime.read_session() as session:
        rows = session.exec(
            select(Gift, Supporter)
            .join(Supporter, col(Supporter.id) == col(Gift.supporter_id))
            .order_by(col(Gift.received_at), col(Gift.id))
        ).all()
        out = []
        for gift, supporter in rows:
            kind = "shop donation" if gift.order_id else "monthly" if gift.regular_gift_id else "one-off"
            out.append(GiftRow(gift, supporter, kind))
        session.expunge_all()
        return out


def documents(runtime: Runtime) -> dict[str, list[tuple[str, str]]]:
    with runtime.read_session() as session:
        return {
            kind.value: sorted(receipts_service.issued_paths(session, runtime.settings, kind=kind, limit=10_000))
            for kind in DocumentKind
        }


def shown(path: str | Path) -> str:
    """A path as short as it can be said from here (relative to the current directory when under it)."""
    absolute = Path(path).resolve()
    try:
        return str(Path(".") / absolute.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(absolute)


# --- the run --------------------------------------------------------------------------------------------------------


def run(options: Options, console: Console | None = None) -> int:
    console = console or Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 132  # a file or a pipe: wide enough for the gifts table
    configure_logging("WARNING")
    started = time.monotonic()
    outcome = Outcome()
    stripe_server = FakeProvider().start()
    gocardless_server = FakeProvider().start()
    sock = loopback_socket()
    web_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    runtime: Runtime | None = None
    try:
        database_url = fresh_directory(options)
        settings = demo_settings(
            options,
            database_url=database_url,
            stripe_url=stripe_server.url,
            gocardless_url=gocardless_server.url,
            web_url=web_url,
        )
        console.print(
            f"[bold]Giving demo[/] on {shown_url(database_url)}  (web {web_url}; Stripe and GoCardless fakes)"
        )
        migrate.upgrade(settings.database.url)
        outcome.lap("migrations")
        from giving.worker import import_tasks
        from payments import service as payments_service

        import_tasks()
        runtime = build_runtime(settings)
        with runtime.unit_of_work() as uow:
            payments_service.ensure_default_catalogue(uow)
        play = Play(StripeWorld(stripe_server), GoCardlessWorld(gocardless_server), now=utc_now(), seed=options.seed)
        with web_server(runtime, sock), web_client(web_url) as client:
            outcome.lap("start")
            report = drive(client, runtime, play, options, outcome)
            show(console, report, outcome, options, web_url, time.monotonic() - started)
            if options.serve:
                console.print(f"\nServing {web_url} until Ctrl-C (the staff pages are at {web_url}/staff/login).")
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(1)
    except DemoFailure as exc:
        outcome.check("the demo ran to the end", False, str(exc))
        show_checks(console, outcome)
    except Exception as exc:  # anything else: the traceback to the log (stderr), one line here, exit 1
        log.exception("the demo failed")
        outcome.check("the demo ran to the end", False, f"{type(exc).__name__}: {exc}")
        show_checks(console, outcome)
    finally:
        stripe_server.stop()
        gocardless_server.stop()
        sock.close()
        if runtime is not None:
            runtime.engine.dispose()
            set_runtime(None)
    return 0 if outcome.ok else 1


@dataclass
class Report:
    expected: Expected
    stats: DeliveryStats
    event_counts: dict[str, int]
    gifts: list[GiftRow]
    documents: dict[str, list[tuple[str, str]]]
    emails: list[Path]
    statements_numbered: int
    tax_years: list[str]
    claim: ClaimOutcome
    reconciliation: list[str]
    books: Books
    payouts: list[dict[str, Any]]
    staff: Staff
    supporters: dict[str, dict[str, Any]]
    orders_paid: int
    regular_running: int


def drive(client: httpx.Client, runtime: Runtime, play: Play, options: Options, outcome: Outcome) -> Report:
    from webhooks import service as webhooks_service

    submit_forms(client, play, outcome)
    outcome.lap("forms")
    stats = DeliveryStats()
    first = play.first_phase()
    deliver(client, first, stats)
    outcome.lap("deliveries")
    left = wait_until_done(client, runtime, options.timeout)
    if left is not None:
        raise DemoFailure(f"the workers did not finish the first deliveries in {options.timeout:.0f} s: {left}")
    outcome.lap("processing and receipts")
    second = play.second_phase()
    deliver(client, second, stats)
    left = wait_until_done(client, runtime, options.timeout)
    if left is not None:
        raise DemoFailure(f"the workers did not finish the second deliveries in {options.timeout:.0f} s: {left}")
    outcome.lap("direct debit collections")
    third = play.third_phase()
    deliver(client, third, stats)
    left = wait_until_done(client, runtime, options.timeout)
    if left is not None:
        raise DemoFailure(f"the workers did not finish the third deliveries in {options.timeout:.0f} s: {left}")
    outcome.lap("payouts")
    expected = play.expected
    tax_years = sorted({tax_year_of(g.received_on) for g in expected.gifts})
    numbered = issue_statements(runtime, tax_years)
    left = wait_until_done(client, runtime, options.timeout)
    if left is not None:
        raise DemoFailure(f"the statements were not rendered in {options.timeout:.0f} s: {left}")
    outcome.lap("statements")
    claim = build_claim(runtime, options.directory)
    outcome.lap("claim")
    lines = reconcile(runtime)
    books = write_books(runtime, options.directory, min(g.received_on for g in expected.gifts))
    staff = create_staff(runtime)
    headers = {"Authorization": f"Bearer {staff.token}"}
    payouts = client.get("/api/payouts", headers=headers)
    if payouts.status_code != 200:
        raise DemoFailure(f"GET /api/payouts with the new token answered {payouts.status_code}")
    supporters: dict[str, dict[str, Any]] = {}
    for donor in DONORS:
        found = client.get("/api/supporters", params={"email": donor.email}, headers=headers).json().get("items", [])
        if len(found) == 1:
            supporter = client.get(f"/api/supporters/{found[0]['id']}", headers=headers).json()
            history = client.get(f"/api/supporters/{found[0]['id']}/history", headers=headers).json()
            supporters[donor.email] = {**supporter, "history": history.get("items", [])}
    with runtime.read_session() as session:
        event_counts = webhooks_service.status_counts(session)
        orders_paid = len(session.exec(select(Order).where(Order.status == OrderStatus.PAID)).all())
        regular_running = len(
            session.exec(
                select(RegularGift).where(
                    col(RegularGift.status).in_([RegularGiftStatus.ACTIVE, RegularGiftStatus.IN_ARREARS])
                )
            ).all()
        )
    outbox = Path(runtime.settings.email.outbox_dir)
    report = Report(
        expected=expected,
        stats=stats,
        event_counts=event_counts,
        gifts=recorded_gifts(runtime),
        documents=documents(runtime),
        emails=sorted(outbox.glob("*.eml")) if outbox.is_dir() else [],
        statements_numbered=numbered,
        tax_years=tax_years,
        claim=claim,
        reconciliation=lines,
        books=books,
        payouts=payouts.json()["items"],
        staff=staff,
        supporters=supporters,
        orders_paid=orders_paid,
        regular_running=regular_running,
    )
    outcome.lap("reconciliation, staff and API")
    verify(report, outcome)
    return report


# --- the checks -----------------------------------------------------------------------------------------------------


def verify(report: Report, outcome: Outcome) -> None:
    check_deliveries(report, outcome)
    check_gifts(report, outcome)
    check_supporters(report, outcome)
    check_documents(report, outcome)
    check_claim(report, outcome)
    check_payouts(report, outcome)


def check_deliveries(report: Report, outcome: Outcome) -> None:
    stats = report.stats
    outcome.check(
        "every delivery answered as it should",
        not stats.unexpected and stats.refused == 2,
        "; ".join(stats.unexpected) or f"{stats.refused} forged deliveries refused",
    )
    stored = sum(report.event_counts.values())
    outcome.check(
        "each event stored once, duplicates and forgeries not at all",
        stored == len(stats.events),
        f"{stored} stored, {len(stats.events)} distinct events delivered",
    )
    outcome.check(
        "every event processed or ignored",
        set(report.event_counts) <= {"processed", "ignored"},
        json.dumps(report.event_counts, sort_keys=True),
    )


def check_gifts(report: Report, outcome: Outcome) -> None:
    """Each gift, found by the provider id it is keyed on, as the scenario says it must be."""
    expected = report.expected
    by_key = {key: row.gift for key, row in _keys(report)}
    wrong = []
    for planned in expected.gifts:
        gift = by_key.get(planned.key)
        if gift is None:
            wrong.append(f"no gift for {planned.key} ({planned.donor.name})")
            continue
        recorded = (
            str(gift.status),
            gift.amount,
            gift.returned_amount,
            gift.received_on,
            str(gift.method),
            gift.appeal or "",
        )
        wanted = (
            planned.status,
            planned.amount,
            planned.returned,
            planned.received_on,
            planned.method,
            planned.appeal,
        )
        if recorded != wanted:
            wrong.append(f"{planned.key} ({planned.donor.name}): {recorded}, expected {wanted}")
    outcome.check(
        "the gifts match the scenario (status, amount, returned, date received, method, appeal)",
        not wrong and len(report.gifts) == len(expected.gifts),
        "; ".join(wrong) or f"{len(report.gifts)} gifts",
    )
    outcome.check("the shop order was paid", report.orders_paid == expected.orders, f"{report.orders_paid} paid")
    outcome.check(
        "the monthly gifts are running",
        report.regular_running == sum(expected.regular_gifts.values()),
        f"{report.regular_running} active or in arrears",
    )


def check_supporters(report: Report, outcome: Outcome) -> None:
    """What the staff JSON API says of each supporter: totals, and the history of what happened."""
    expected = report.expected
    totals_wrong, stories_wrong = [], []
    for donor in DONORS:
        supporter = report.supporters.get(donor.email)
        if supporter is None:
            totals_wrong.append(f"{donor.email} not found through the API")
            continue
        totals = supporter["totals"]
        answered = tuple(totals[k]["amount"] for k in ("donated", "gift_aid_claimed", "gift_aid_claimable"))
        # Everything claimable went into the claim: nothing is left to claim.
        planned = (expected.donated(donor), expected.gift_aid_claimed(donor), 0)
        if answered != planned:
            totals_wrong.append(f"{donor.name}: donated, Gift Aid claimed, claimable {answered}, expected {planned}")
        told = Counter(item["type"] for item in supporter["history"] if item["type"] in TRACKED_HISTORY)
        story = Counter({k: n for k, n in expected.history[donor.email].items() if k in TRACKED_HISTORY and n})
        if told != story:
            stories_wrong.append(f"{donor.name}: {dict(told)}, expected {dict(story)}")
    outcome.check(
        "each supporter's totals through the API (donated, Gift Aid claimed and claimable)",
        not totals_wrong,
        "; ".join(totals_wrong) or f"{len(report.supporters)} supporters",
    )
    outcome.check(
        "each supporter's history through the API tells their story",
        not stories_wrong,
        "; ".join(stories_wrong) or ", ".join(TRACKED_HISTORY),
    )


def check_documents(report: Report, outcome: Outcome) -> None:
    receipts = report.documents.get(DocumentKind.GIFT_RECEIPT.value, [])
    paid = [g for g in report.gifts if g.gift.status == "paid"]
    outcome.check(
        "a PDF receipt for every paid gift",
        len(receipts) >= len(paid) and all(Path(path).is_file() for _, path in receipts),
        f"{len(receipts)} receipts for {len(paid)} paid gifts",
    )
    statements = report.documents.get(DocumentKind.ANNUAL_STATEMENT.value, [])
    wanted = len({(tax_year_of(g.received_on), g.donor.email) for g in report.expected.gifts})
    outcome.check(
        "a PDF statement for every supporter who gave, for each tax year",
        report.statements_numbered == wanted == len(statements) and all(Path(path).is_file() for _, path in statements),
        f"{len(statements)} statements ({wanted} expected) for {', '.join(report.tax_years)}",
    )
    every_pdf = [path for paths in report.documents.values() for _, path in paths]
    outcome.check(
        "every document emailed",
        len(report.emails) >= len(every_pdf),
        f"{len(report.emails)} emails for {len(every_pdf)} documents",
    )


def check_claim(report: Report, outcome: Outcome) -> None:
    expected, result = report.expected, report.claim.result
    outcome.check(
        "the Gift Aid claim",
        result.claim_id is not None
        and (result.total, result.gift_aid) == (expected.claim_total, expected.claim_gift_aid),
        f"donations {format_pence(result.total)} (expected {format_pence(expected.claim_total)}), Gift Aid "
        f"{format_pence(result.gift_aid)} (expected {format_pence(expected.claim_gift_aid)})",
    )
    key_of = {row.gift.id: key for key, row in _keys(report)}
    held = {key_of.get(h.gift_id, str(h.gift_id)): h.reason.split(":", 1)[0] for h in result.held_back}
    outcome.check(
        "gifts held back, and why",
        held == expected.held_back,
        f"{sorted(held.values())} (expected {sorted(expected.held_back.values())})",
    )
    files = report.claim.files
    outcome.check(
        "the claim's .ods and .xml written",
        {p.suffix for p in files} == {".ods", ".xml"} and all(p.is_file() and p.stat().st_size > 0 for p in files),
        ", ".join(shown(p) for p in files),
    )


def check_payouts(report: Report, outcome: Outcome) -> None:
    planned = {(p.provider, p.provider_payout_id, p.amount) for p in report.expected.payouts}
    recorded = {(p["provider"], p["provider_payout_id"], p["amount"]["amount"]) for p in report.payouts}
    unreconciled = [p["provider_payout_id"] for p in report.payouts if p["status"] != "reconciled"]
    outcome.check(
        "every payout recorded and reconciled to the penny",
        planned == recorded and not unreconciled,
        f"{len(recorded)} payouts" + (f", unreconciled: {', '.join(unreconciled)}" if unreconciled else ""),
    )
    books = report.books
    paid_in = sum(p.amount for p in report.expected.payouts)
    outcome.check(
        "the journal balances, with every payout in the bank and nothing in suspense",
        not books.unbalanced and books.bank == paid_in and books.suspense == 0,
        f"{books.entries} entries, bank {format_pence(books.bank)} (payouts {format_pence(paid_in)}), "
        f"{books.suspense} suspense postings" + (f", unbalanced: {books.unbalanced}" if books.unbalanced else ""),
    )


def _keys(report: Report) -> Iterator[tuple[str, GiftRow]]:
    """Each gift with the provider id it is keyed on: Direct Debit payment, invoice, or Checkout Session."""
    for row in report.gifts:
        for column in ("gocardless_payment_id", "stripe_invoice_id", "stripe_checkout_session_id"):
            key = getattr(row.gift, column)
            if key:
                yield key, row
                break


# --- the printout -------------------------------------------------------------------------------------------------


def show(console: Console, report: Report, outcome: Outcome, options: Options, web_url: str, seconds: float) -> None:
    stats = report.stats
    console.print()
    console.print(
        f"[bold]Webhook deliveries[/]: {stats.posts} POSTs to /webhooks/stripe and /webhooks/gocardless "
        f"({len(stats.events)} distinct events, shuffled with seed {options.seed}; {stats.repeated} delivered again; "
        f"{stats.refused} forged "
        f"and refused). Stored: {json.dumps(report.event_counts, sort_keys=True)}"
    )
    show_gifts(console, report)
    show_supporters(console, report)
    show_documents(console, report)
    show_claim(console, report)
    show_payouts(console, report)
    show_staff(console, report, options, web_url)
    show_checks(console, outcome)
    steps = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in outcome.timings.items())
    console.print(f"\n{'All checks passed' if outcome.ok else 'Some checks FAILED'} in {seconds:.1f} s ({steps}).")


def show_gifts(console: Console, report: Report) -> None:
    held = {h.gift_id: h.reason for h in report.claim.result.held_back}
    claimed_ids = set()
    if report.claim.result.claim_id is not None:
        claimed_ids = {row.gift.id for row in report.gifts if row.gift.id not in held and row.gift.status == "paid"}
    table = Table(title="Gifts recorded", title_justify="left", expand=False)
    for name in ("Received", "Supporter", "Amount", "Returned", "Method", "Kind", "Status", "Appeal", "Gift Aid"):
        table.add_column(name, justify="right" if name in ("Amount", "Returned") else "left")
    for row in report.gifts:
        gift = row.gift
        if gift.id in held:
            gift_aid = "held back: " + held[gift.id].split(":", 1)[0]
        elif gift.id in claimed_ids:
            gift_aid = "claimed"
        else:
            gift_aid = "-"
        table.add_row(
            gift.received_on.isoformat() if gift.received_on else "-",
            f"{row.supporter.first_name} {row.supporter.last_name}",
            format_pence(gift.amount, gift.currency),
            format_pence(gift.returned_amount, gift.currency) if gift.returned_amount else "",
            "Direct Debit" if gift.method == "direct_debit" else "card",
            row.kind,
            str(gift.status),
            gift.appeal or "",
            gift_aid,
        )
    console.print()
    console.print(table)


def show_supporters(console: Console, report: Report) -> None:
    """Each supporter as the staff JSON API answers now (after the claim)."""
    table = Table(title="Supporters (GET /api/supporters/{id})", title_justify="left")
    for name in ("Supporter", "Donated", "Purchases", "Gift Aid claimed", "Claimable", "Monthly gifts", "History"):
        table.add_column(name, justify="left" if name in ("Supporter", "History") else "right")
    for donor in DONORS:
        supporter = report.supporters.get(donor.email)
        if supporter is None:
            continue
        totals = supporter["totals"]
        kinds = Counter(item["type"] for item in supporter["history"])
        table.add_row(
            donor.name,
            format_pence(totals["donated"]["amount"]),
            format_pence(totals["purchases"]["amount"]),
            format_pence(totals["gift_aid_claimed"]["amount"]),
            format_pence(totals["gift_aid_claimable"]["amount"]),
            str(totals["regular_gifts"]),
            ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())),
        )
    console.print()
    console.print(table)


def show_documents(console: Console, report: Report) -> None:
    console.print()
    labels = {
        "gift_receipt": "Gift receipts",
        "sale_receipt": "Sale receipts",
        "correction": "Corrected receipts",
        "annual_statement": f"Annual statements ({', '.join(report.tax_years)})",
        "oral_confirmation": "Oral declaration confirmations",
    }
    for kind, paths in report.documents.items():
        if not paths:
            continue
        console.print(f"[bold]{labels.get(kind, kind)}[/] ({len(paths)} PDF{'s' if len(paths) > 1 else ''}):")
        for reference, path in paths:
            console.print(f"  {reference}  {shown(path)}")
    if report.emails:
        console.print(
            f"[bold]Emails[/]: {len(report.emails)} messages with their PDFs, written as .eml files into "
            f"{shown(report.emails[0].parent)}"
        )


def show_claim(console: Console, report: Report) -> None:
    result = report.claim.result
    console.print()
    if result.claim_id is None:
        console.print("[bold]Gift Aid claim[/]: nothing to claim")
        return
    console.print(
        f"[bold]Gift Aid claim[/] {result.claim_id} through {uk_today().isoformat()}: {result.lines} lines "
        f"({result.gifts} gifts), donations {format_pence(result.total)}, Gift Aid {format_pence(result.gift_aid)}, "
        f"adjustment {format_pence(result.adjustment)}"
    )
    for path in report.claim.files:
        console.print(f"  {shown(path)}")
    names = {row.gift.id: f"{row.supporter.first_name} {row.supporter.last_name}" for row in report.gifts}
    if result.held_back:
        console.print(f"  held back ({len(result.held_back)}):")
        for held in result.held_back:
            console.print(f"    {names.get(held.gift_id, held.gift_id)}: {held.reason}")


def show_payouts(console: Console, report: Report) -> None:
    console.print()
    console.print("[bold]Reconciliation[/] (giving reconcile):")
    for line in report.reconciliation:
        console.print(f"  {line}")
    kinds: Counter[str] = Counter()
    for payout in report.payouts:
        kinds[payout["status"]] += 1
    console.print(f"  {len(report.payouts)} payouts: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
    report_file, journal_file = report.books.files
    console.print(f"  every payout with its lines (giving payouts show): {shown(report_file)}")
    console.print(f"  the accounts journal (giving export journal): {shown(journal_file)}")


def show_staff(console: Console, report: Report, options: Options, web_url: str) -> None:
    staff = report.staff
    console.print()
    console.print(f"[bold]Staff[/]: admin {ADMIN_EMAIL}, password {staff.password}")
    if staff.otpauth_uri:
        console.print(f"  two-factor code: add this to an authenticator app: {staff.otpauth_uri}")
    console.print(f"  API token: {staff.token}")
    if options.serve:
        console.print(f'    curl -H "Authorization: Bearer {staff.token}" {web_url}/api/payouts')
        return
    database = (
        shown_url(options.database_url)
        if options.database_url
        else (f"sqlite:///{(options.directory / DATABASE_NAME).as_posix()}")
    )
    console.print("  To look around, serve the demo's database (or run `giving demo --serve`):")
    # Its PDFs are under DIR/receipts, not the default storage dir; and `giving` is the command this run was, which
    # after scripts/demo.sh is .venv/bin/giving (not on the PATH).
    receipts = shown(options.directory / "receipts")
    settings = f"GIVING_DATABASE__URL={database} GIVING_RECEIPTS__STORAGE_DIR={receipts}"
    console.print(f"    {settings} {giving_command()} serve --port 8000")
    console.print(f'    curl -H "Authorization: Bearer {staff.token}" http://127.0.0.1:8000/api/payouts')
    console.print("    then http://127.0.0.1:8000/staff/login")


def giving_command() -> str:
    """How to run `giving` again from here: the script this run was started as, if it was one."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is None or script.name != "giving" or not script.is_file():
        return "giving"
    on_path = shutil.which("giving")
    if on_path and Path(on_path).resolve() == script.resolve():
        return "giving"
    return shown(script)


def show_checks(console: Console, outcome: Outcome) -> None:
    console.print()
    console.print("[bold]Checks[/]:")
    for check in outcome.checks:
        mark = "[green]ok[/]  " if check.ok else "[red]FAIL[/]"
        console.print(f"  {mark} {check.name}" + (f": {check.detail}" if check.detail else ""))
