"""`POST /subscribe`: double opt-in over a real SMTP server, signed expiring links, unsubscribe, rate limits."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import time_machine
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import InlineWorker, Runtime
from core.settings import Settings
from crm.models import Consent, ConsentStatus, HistoryEntry, PendingSubscription, Supporter
from tests.fixtures.app import make_settings
from tests.fixtures.smtp import Mailbox


@pytest.fixture
def mailbox(smtp_server: tuple[Mailbox, int]) -> Mailbox:
    return smtp_server[0]


@pytest.fixture
def settings(database_url: str, tmp_path: Path, smtp_server: tuple[Mailbox, int]) -> Settings:
    return make_settings(database_url, tmp_path, email={"smtp_port": smtp_server[1]})


@pytest.fixture
def site(client: TestClient, worker: InlineWorker) -> Iterator[TestClient]:
    yield client


def text_of(message: EmailMessage) -> str:
    return message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def first_url(message: EmailMessage) -> str:
    return re.search(r"https?://\S+", text_of(message)).group(0)  # type: ignore[union-attr]


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def consents(runtime: Runtime) -> list[tuple[str, str]]:
    with runtime.read_session() as session:
        rows = session.exec(select(Consent).order_by(Consent.at)).all()  # type: ignore[arg-type]
        return [(r.status, r.source) for r in rows]


def test_double_opt_in_over_smtp(runtime: Runtime, site: TestClient, worker: InlineWorker, mailbox: Mailbox) -> None:
    response = site.post("/subscribe", data={"email": "  Sam@Example.ORG ", "first_name": "Sam", "last_name": "Ng"})
    assert response.status_code == 200 and "email" in response.text
    assert consents(runtime) == [("pending", "subscribe")]
    worker.join()
    [message] = mailbox.to("sam@example.org")
    link = first_url(message)
    assert link.startswith("http://testserver/subscribe/confirm?token=")
    assert "/unsubscribe?token=" in text_of(message)
    assert message["List-Unsubscribe"].startswith("<http://testserver/unsubscribe?token=")

    confirmed = site.get(path_of(link))
    assert confirmed.status_code == 200 and "subscribed" in confirmed.text
    assert consents(runtime) == [("pending", "subscribe"), ("granted", "subscribe")]
    again = site.get(path_of(link))
    assert again.status_code == 200 and "already" in again.text
    assert len(consents(runtime)) == 2
    with runtime.read_session() as session:
        supporter = session.exec(select(Supporter)).one()
        assert (supporter.email, supporter.first_name, supporter.last_name) == ("sam@example.org", "Sam", "Ng")
        items = session.exec(select(HistoryEntry).where(HistoryEntry.type == "consent")).all()
        assert len(items) == 1 and items[0].data["status"] == "granted"
        granted = session.exec(select(Consent).where(Consent.status == ConsentStatus.GRANTED)).one()
        assert granted.wording_version and granted.evidence["double_opt_in"] is True

    # Subscribing again once granted sends nothing more.
    site.post("/subscribe", data={"email": "sam@example.org"})
    worker.join()
    assert len(mailbox.to("sam@example.org")) == 1

    unsubscribe = re.search(r"http://testserver/unsubscribe\?token=\S+", text_of(message)).group(0)  # type: ignore[union-attr]
    # Opening the link (as a mail scanner does) only shows the button; pressing it withdraws the consent.
    shown = site.get(path_of(unsubscribe))
    assert shown.status_code == 200 and consents(runtime)[-1] == ("granted", "subscribe")
    action = re.search(r'<form method="post" action="([^"]+)"', shown.text).group(1)  # type: ignore[union-attr]
    assert site.post(html.unescape(action)).status_code == 200
    assert consents(runtime)[-1] == ("withdrawn", "unsubscribe_link")
    # One-click unsubscribe from a mail client (POST) on an already withdrawn consent changes nothing.
    assert site.post(path_of(unsubscribe)).status_code == 200
    assert len(consents(runtime)) == 3


def test_a_second_link_after_the_first_granted_changes_nothing(
    runtime: Runtime, site: TestClient, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """contract.md: a GET of the link grants the consent (again: no change). Found in review: Subscribe pressed
    twice sends two links, and clicking both granted the consent twice, with two history items."""
    for _ in range(2):
        assert site.post("/subscribe", data={"email": "sam@example.org"}).status_code == 200
    worker.join()
    first, second = mailbox.to("sam@example.org")
    assert site.get(path_of(first_url(first))).status_code == 200
    assert site.get(path_of(first_url(second))).status_code == 200
    assert [status for status, _ in consents(runtime)].count("granted") == 1
    with runtime.read_session() as session:
        items = session.exec(select(HistoryEntry).where(HistoryEntry.type == "consent")).all()
    assert len(items) == 1, [item.summary for item in items]


def test_a_malformed_email_is_400_and_nothing_is_recorded_or_sent(
    runtime: Runtime, site: TestClient, worker: InlineWorker, mailbox: Mailbox
) -> None:
    for bad in ("not-an-email", "", "a@@example.org", "sam@example"):
        response = site.post("/subscribe", data={"email": bad})
        assert response.status_code == 400, bad
    worker.join()
    assert mailbox.messages == []
    with runtime.read_session() as session:
        assert session.exec(select(Supporter)).all() == []


def test_a_tampered_or_expired_link_grants_nothing(
    runtime: Runtime, site: TestClient, worker: InlineWorker, mailbox: Mailbox
) -> None:
    site.post("/subscribe", data={"email": "sam@example.org"})
    worker.join()
    link = path_of(first_url(mailbox.messages[0]))
    assert site.get(link[:-3] + "abc").status_code == 400
    assert site.get("/subscribe/confirm").status_code == 400
    with time_machine.travel(dt.datetime.now(dt.UTC) + dt.timedelta(days=4)):
        expired = site.get(link)
        assert expired.status_code == 400 and "expired" in expired.text
    assert consents(runtime) == [("pending", "subscribe")]
    with runtime.read_session() as session:
        assert session.exec(select(PendingSubscription)).one().confirmed_at is None
    assert site.get("/unsubscribe?token=forged").status_code == 400


def test_one_address_gets_at_most_three_emails_an_hour(
    runtime: Runtime, site: TestClient, worker: InlineWorker, mailbox: Mailbox
) -> None:
    start = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)
    statuses = []
    for n in range(5):
        # Minutes apart, so the per-client limit never bites: the per-address one does.
        with time_machine.travel(start + dt.timedelta(minutes=n * 2), tick=False):
            statuses.append(site.post("/subscribe", data={"email": "victim@example.org"}).status_code)
    worker.join()
    assert statuses == [200, 200, 200, 429, 429]
    assert len(mailbox.to("victim@example.org")) == 3


def test_one_client_is_limited_per_minute(runtime: Runtime, site: TestClient, worker: InlineWorker) -> None:
    limit = runtime.settings.web.form_rate_per_minute
    start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    with time_machine.travel(start, tick=False):
        statuses = [site.post("/subscribe", data={"email": f"p{n}@example.org"}).status_code for n in range(limit + 2)]
        refused = site.post("/subscribe", data={"email": "late@example.org"})
    assert statuses.count(200) == limit and statuses[-2:] == [429, 429]
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    worker.join()


def test_volunteer_form_records_an_interest_with_its_source(runtime: Runtime, site: TestClient) -> None:
    response = site.post(
        "/volunteer", data={"email": "vol@example.org", "first_name": "Val", "last_name": "Oak", "note": "Saturdays"}
    )
    assert response.status_code == 200
    with runtime.read_session() as session:
        [item] = session.exec(select(HistoryEntry).where(HistoryEntry.type == "interest")).all()
        assert item.data["kind"] == "volunteering" and item.data["source"] == "volunteer_form"
        assert "Saturdays" in item.summary
    assert site.post("/volunteer", data={"email": "nope"}).status_code == 400
