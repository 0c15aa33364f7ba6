"""Faults with real processes: the broker stopped while webhooks arrive, the database stopped, and a worker killed
with SIGKILL in the middle of a batch of receipts. Outages are a TCP proxy we stop in front of the machine's
services (never the services themselves, which other test runs share)."""

from __future__ import annotations

import signal
import time
from email.message import EmailMessage

import sqlalchemy as sa

from tests.fakes.provider_server import FakeProvider
from tests.fixtures.smtp import Mailbox
from tests.scale.conftest import SystemFactory
from tests.scale.flows import Phases, assert_ledger, count, donate_all, post_each, prefer_yearly_statements, settled
from tests.scale.harness import PostgresDatabase, RabbitVhost, TcpProxy, run_sweeps, wait_until
from tests.scale.scenario import Scenario

FORMS_UNLIMITED = {"GIVING_WEB__FORM_RATE_PER_MINUTE": "1000000"}


def test_webhooks_are_stored_while_the_broker_is_down_and_processed_once_it_is_back(
    system: SystemFactory, scale_db: PostgresDatabase, vhost: RabbitVhost, proxies, fake_stripe: FakeProvider
) -> None:
    broker: TcpProxy = proxies(vhost.port)
    broker_url = vhost.url(broker.port)
    scenario = Scenario.plan(11, checkouts=40, donors=15)
    stripe = scenario.serve_stripe(fake_stripe)
    giving = system(broker_url=broker_url, stripe_api=fake_stripe.url, extra=FORMS_UNLIMITED)
    web = giving.serve()
    giving.worker(threads=4)
    donate_all(scenario, stripe, [web])
    engine = scale_db.engine()
    try:
        prefer_yearly_statements(engine)
        broker.stop()
        events = scenario.events()
        answered = post_each(events, [web])
        # Stored, and answered 2xx: the broker is not needed to accept a delivery.
        assert set(answered.values()) == {200}, answered
        assert count(engine, "SELECT count(*) FROM inbound_events") == len(events)
        assert count(engine, "SELECT count(*) FROM gifts") == 0  # nothing could be processed meanwhile
        assert count(engine, "SELECT count(*) FROM inbound_events WHERE status = 'pending'") == len(events)

        broker.start()
        # The sweeps send again what is stored but not processed (they run every minute; here, now).
        swept, _ = run_sweeps(scale_db.url, broker_url)
        assert swept == len(events)
        wait_until(lambda: settled(engine), timeout=90, interval=0.5, what="the stored events processed")
        assert_ledger(engine, scenario)
    finally:
        engine.dispose()


def test_the_database_down_answers_503_writes_nothing_and_the_retries_are_processed(
    system: SystemFactory, scale_db: PostgresDatabase, proxies, fake_stripe: FakeProvider
) -> None:
    database: TcpProxy = proxies(scale_db.port)
    scenario = Scenario.plan(12, checkouts=40, donors=15)
    stripe = scenario.serve_stripe(fake_stripe)
    giving = system(database_url=scale_db.url_through(database.port), stripe_api=fake_stripe.url, extra=FORMS_UNLIMITED)
    webs = giving.serve_many("web-a", "web-b")
    giving.worker(threads=4)
    donate_all(scenario, stripe, webs)
    engine = scale_db.engine()  # the test's own view, not through the proxy
    try:
        prefer_yearly_statements(engine)
        events = scenario.events()
        before, during = events[: len(events) // 2], events[len(events) // 2 :]
        assert set(post_each(before, webs).values()) == {200}

        database.stop()
        refused = post_each(during, webs)
        # The provider is told to retry; nothing of these deliveries reached the database.
        assert set(refused.values()) == {503}, refused
        stored = count(engine, "SELECT count(*) FROM inbound_events")
        assert stored == len(before)
        assert (
            count(
                engine,
                "SELECT count(*) FROM inbound_events WHERE external_id IN ({})".format(
                    ",".join(f"'{e['id']}'" for e in during)
                ),
            )
            == 0
        )

        database.start()

        # The provider retries (Stripe: for three days, backing off); the web processes reconnect by themselves.
        def retry() -> bool:
            return set(post_each(during, webs).values()) == {200}

        wait_until(retry, timeout=30, interval=1, what="the retried deliveries accepted")
        wait_until(lambda: settled(engine), timeout=90, interval=0.5, what="every event processed")
        assert count(engine, "SELECT count(*) FROM inbound_events") == len(events)
        assert_ledger(engine, scenario)
    finally:
        engine.dispose()


def test_a_worker_killed_in_a_receipt_batch_leaves_every_receipt_issued_and_sent_once(
    system: SystemFactory,
    scale_db: PostgresDatabase,
    vhost: RabbitVhost,
    fake_stripe: FakeProvider,
    smtp_server: tuple[Mailbox, int],
) -> None:
    mailbox, smtp_port = smtp_server
    gifts = 40
    phases = Phases()
    scenario = Scenario.plan(13, checkouts=gifts, donors=gifts, paid_share=1.0, refund_share=0.0)
    stripe = scenario.serve_stripe(fake_stripe)
    giving = system(stripe_api=fake_stripe.url, smtp_port=smtp_port, extra=FORMS_UNLIMITED)
    web = giving.serve()
    donate_all(scenario, stripe, [web])
    phases.done("start and donate")
    engine = scale_db.engine()
    try:
        first = giving.worker("worker-first", processes=1, threads=2)
        assert set(post_each(scenario.events(), [web]).values()) == {200}
        wait_until(lambda: len(mailbox.messages) >= 3, timeout=120, interval=0.05, what="the batch under way")
        # SMTP can never be exactly-once across a crash: a kill after the server accepted a message and before
        # the commit that records it sends that message again after the restart (at-least-once, by design: a
        # lost receipt is worse than a duplicate). So the mail server refuses for a moment before the kill,
        # which then lands mid-render, mid-commit or mid-retry, but never inside that window.
        mailbox.refuse = True
        time.sleep(2)
        first.kill(signal.SIGKILL)  # the supervisor and its worker process
        first.popen.wait(10)
        sent_when_killed = len(mailbox.messages)
        issued_when_killed = count(engine, "SELECT count(*) FROM documents WHERE status = 'issued'")
        phases.done(f"killed after {issued_when_killed} issued, {sent_when_killed} sent")
        # On a quiet machine every PDF may be rendered by now; the batch is still mid-way through its sending.
        assert sent_when_killed < gifts, "the batch finished before the kill: make it bigger"

        mailbox.refuse = False
        giving.worker("worker-restarted", processes=1, threads=2)
        # Messages the killed worker had taken come back from RabbitMQ (never acknowledged). Jobs it had committed
        # but not yet sent are in the `jobs` table: the sweep sends them (every minute, for jobs pending two
        # minutes; here, now). Sending a job twice is harmless: the second run finds it done.
        run_sweeps(scale_db.url, vhost.url())
        wait_until(lambda: len(mailbox.messages) >= gifts, timeout=180, interval=0.2, what="every receipt sent")
        phases.done("all sent")
        # Anything sent twice would arrive in the next moments, from a redelivered message.
        wait_until(
            lambda: count(engine, "SELECT count(*) FROM jobs WHERE status = 'pending'") == 0,
            timeout=60,
            interval=0.5,
            what="no job left pending",
        )
        time.sleep(2)
        phases.done("settled")
        print(phases)

        with engine.connect() as conn:
            documents = conn.execute(
                sa.text("SELECT kind, number, reference, status FROM documents ORDER BY number")
            ).all()
            deliveries = conn.execute(
                sa.text("SELECT document_id, status FROM document_deliveries WHERE channel = 'email'")
            ).all()
        receipts = [d for d in documents if d.kind == "gift_receipt"]
        assert len(receipts) == gifts  # one per gift
        assert [d.number for d in receipts] == list(range(receipts[0].number, receipts[0].number + gifts))  # gapless
        assert {d.status for d in receipts} == {"issued"}
        assert len(deliveries) == gifts and {d.status for d in deliveries} == {"sent"}
        references = [_reference_in(message, [d.reference for d in receipts]) for message in mailbox.messages]
        assert sorted(references) == sorted(d.reference for d in receipts)  # each emailed exactly once
    finally:
        engine.dispose()


def _reference_in(message: EmailMessage, references: list[str]) -> str:
    text = str(message["Subject"]) + "".join(part.get_filename() or "" for part in message.iter_attachments())
    body = message.get_body(("plain",))
    if body is not None:
        text += body.get_content()
    found = [reference for reference in references if reference in text]
    assert len(found) == 1, (message["Subject"], found)
    return found[0]
