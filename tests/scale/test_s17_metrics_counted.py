"""The counters `/metrics` declares are counted where their events happen: events processed by a worker (by
outcome, once per run of the handler: a redelivery of an event already done counts nothing) and emails the SMTP
server accepted or refused (by kind). Each was declared and exported but never counted, so an alert on it could
never fire."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from core import mailer
from core.runtime import InlineWorker
from core.settings import EmailSettings
from tests.fakes.signing import stripe_headers
from tests.fixtures.smtp import Mailbox
from tests.scale.test_metrics import scrape

IGNORED = {
    "id": "evt_metrics_counted_1",
    "object": "event",
    "type": "customer.created",
    "created": 1767225600,
    "livemode": False,
    "data": {"object": {"id": "cus_metrics", "object": "customer"}},
}


def test_a_processed_event_is_counted_once_by_its_outcome(client: TestClient, worker: InlineWorker) -> None:
    ignored = 'giving_events_processed_total{outcome="ignored",provider="stripe"}'
    before = scrape(client)
    body = json.dumps(IGNORED).encode()
    for _ in range(2):  # the provider's retry of a delivery: stored once, run once
        assert client.post("/webhooks/stripe", content=body, headers=stripe_headers(body)).status_code == 200
        worker.join()
    after = scrape(client)
    assert after.get(ignored, 0) - before.get(ignored, 0) == 1


def test_emails_are_counted_sent_or_failed_by_kind(smtp_server: tuple[Mailbox, int]) -> None:
    _, port = smtp_server
    sent = mailer_value("emails_sent", kind="password_reset")
    failed = mailer_value("emails_failed", kind="password_reset")
    email = mailer.Email(to="ada@example.org", subject="Reset", text="...", kind="password_reset")
    mailer.send_email(email, EmailSettings(smtp_host="127.0.0.1", smtp_port=port, from_email="giving@example.org"))
    assert mailer_value("emails_sent", kind="password_reset") == sent + 1
    nowhere = EmailSettings(smtp_host="127.0.0.1", smtp_port=1, from_email="giving@example.org", timeout=2)
    with pytest.raises(mailer.MailError):
        mailer.send_email(email, nowhere)
    assert mailer_value("emails_failed", kind="password_reset") == failed + 1


def mailer_value(name: str, **labels: str) -> float:
    from core import metrics

    return metrics.value(name, **labels)
