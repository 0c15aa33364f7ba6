"""The steps the scale and fault tests share: donors through /donate, deliveries planned and sent, waiting for
the workers, and the ledger check."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa

from tests.scale.harness import Process, stripe_delivery, web_client
from tests.scale.scenario import Scenario, StripeFromPlan


def donate_all(scenario: Scenario, stripe: StripeFromPlan, webs: list[Process], threads: int = 8) -> None:
    """Every planned donor fills in the form, on the web processes in turn; each gets its own Checkout Session."""
    with ThreadPoolExecutor(threads) as pool, web_client(timeout=30) as client:

        def donate(index: int) -> None:
            checkout = scenario.checkouts[index]
            response = client.post(
                webs[index % len(webs)].url + "/donate", data=checkout.form(), follow_redirects=False
            )
            assert response.status_code == 303, response.text[:500]
            stripe.learn(checkout, response.headers["location"])

        list(pool.map(donate, range(len(scenario.checkouts))))


def prefer_yearly_statements(engine: sa.Engine) -> None:
    """The donors chose a yearly statement rather than a PDF per gift, for tests about deliveries (PDFs have
    bench/receipts and the SIGKILL test). `[receipts] default_preference = "annual"` should do this on its own."""
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE supporters SET statement_preference = 'annual'"))


class Phases:
    """How long each phase took (printed with a failure, to see where the time went)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.taken: list[str] = []

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.taken.append(f"{name}: {now - self.started:.1f}s")
        self.started = now

    def __str__(self) -> str:
        return ", ".join(self.taken)


Task = list[tuple[dict[str, Any], int]]


def plan_deliveries(events: list[dict[str, Any]], rng: random.Random) -> tuple[list[Task], int]:
    """Each event 1-3 times to either web process, shuffled; a fifth of the repeated ones as a burst of copies
    sent at the same moment to both."""
    tasks: list[Task] = []
    deliveries = 0
    for event in events:
        copies = rng.randint(1, 3)
        deliveries += copies
        if copies > 1 and rng.random() < 0.2:
            tasks.append([(event, index % 2) for index in range(copies)])
        else:
            tasks.extend([(event, rng.randrange(2))] for _ in range(copies))
    rng.shuffle(tasks)
    return tasks, deliveries


def deliver(tasks: list[Task], webs: list[Process], clients: int = 16) -> Counter[tuple[str, int]]:
    answered: Counter[tuple[str, int]] = Counter()
    lock = threading.Lock()
    with web_client(timeout=30, max_connections=64) as client:

        def post(event: dict[str, Any], web: Process) -> None:
            path, body, headers = stripe_delivery(event)
            status = client.post(web.url + path, content=body, headers=headers).status_code
            with lock:
                answered[(web.name, status)] += 1

        def deliver(task: Task) -> None:
            if len(task) == 1:
                post(task[0][0], webs[task[0][1]])
                return
            barrier = threading.Barrier(len(task))

            def copy(event: dict[str, Any], web: Process) -> None:
                barrier.wait()
                post(event, web)

            threads = [threading.Thread(target=copy, args=(event, webs[index])) for event, index in task]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(deliver, tasks))
    return answered


def settled(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        unfinished = conn.execute(
            sa.text("SELECT count(*) FROM inbound_events WHERE status NOT IN ('processed', 'ignored')")
        ).scalar_one()
        total = conn.execute(sa.text("SELECT count(*) FROM inbound_events")).scalar_one()
    return total > 0 and unfinished == 0


def assert_ledger(engine: sa.Engine, scenario: Scenario, *, api_url: str | None = None, sample: int = 30) -> None:
    """Gifts, refunds and what each supporter gave equal the plan; the staff API agrees for a sample of them."""
    expected = scenario.expected()
    with engine.connect() as conn:
        gifts = conn.execute(sa.text("SELECT count(*), coalesce(sum(amount), 0) FROM gifts")).one()
        paid = conn.execute(sa.text("SELECT count(*) FROM gifts WHERE status = 'paid'")).scalar_one()
        per_session = conn.execute(
            sa.text("SELECT count(*) FROM gifts GROUP BY stripe_checkout_session_id HAVING count(*) > 1")
        ).all()
        refunds = conn.execute(
            sa.text("SELECT count(*), coalesce(sum(amount), 0) FROM refunds WHERE status = 'succeeded'")
        ).one()
    assert per_session == []
    assert (gifts[0], gifts[1]) == (expected.gifts, expected.gift_total)
    assert paid == expected.gifts
    assert (refunds[0], refunds[1]) == (expected.refunds, expected.refund_total)

    # What each supporter gave, by email: the database, then the staff API for a sample of them.
    with engine.connect() as conn:
        given = dict(
            conn.execute(
                sa.text(
                    "SELECT s.email, coalesce(sum(g.amount), 0) - coalesce(("
                    "  SELECT sum(r.amount) FROM refunds r JOIN gifts rg ON rg.id = r.gift_id"
                    "  WHERE rg.supporter_id = s.id AND r.status = 'succeeded'), 0)"
                    " FROM supporters s LEFT JOIN gifts g ON g.supporter_id = s.id AND g.status = 'paid'"
                    " GROUP BY s.id, s.email"
                )
            ).all()
        )
    assert given == expected.donated_by_email
    if api_url is None:
        return
    token = api_token(engine)
    emails = random.Random(scenario.seed).sample(sorted(expected.donated_by_email), min(sample, len(given)))
    headers = {"Authorization": f"Bearer {token}"}
    with web_client(base_url=api_url, headers=headers, timeout=30) as client:
        for email in emails:
            found = client.get("/api/supporters", params={"email": email})
            assert found.status_code == 200, found.text
            [supporter] = found.json()["items"]
            detail = client.get(f"/api/supporters/{supporter['id']}").json()
            assert detail["totals"]["donated"] == {"amount": expected.donated_by_email[email], "currency": "GBP"}


def api_token(engine: sa.Engine, role: str = "admin") -> str:
    """A staff user and API token written straight into the database (what `giving users add` and
    `giving tokens create` do, without starting two more processes)."""
    from core import auth
    from core.db import make_sessionmaker, unit_of_work

    email = f"scale-{role}-{uuid.uuid4().hex[:6]}@example.org"
    with unit_of_work(make_sessionmaker(engine), lambda jobs: None) as uow:
        auth.add_staff_user(uow, email, role, "a long and careful passphrase", issuer="Giving")
    with unit_of_work(make_sessionmaker(engine), lambda jobs: None) as uow:
        return auth.create_api_token(uow, email)


def post_each(events: list[dict[str, Any]], webs: list[Process], threads: int = 8) -> dict[str, int]:
    """Deliver each event once (alternating web processes); the status each got, by event id."""
    answered: dict[str, int] = {}
    lock = threading.Lock()
    with web_client(timeout=30) as client, ThreadPoolExecutor(threads) as pool:

        def post(index: int) -> None:
            event = events[index]
            path, body, headers = stripe_delivery(event)
            status = client.post(webs[index % len(webs)].url + path, content=body, headers=headers).status_code
            with lock:
                answered[event["id"]] = status

        list(pool.map(post, range(len(events))))
    return answered


def count(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())
