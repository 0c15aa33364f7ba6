"""An email consent keeps the words the person agreed to (in `wordings`, as Gift Aid declarations do): the subscribe
page and its email quote them and the double opt-in keeps exactly those; staff may give the words they read out; the
consent JSON shows them as `wording_text` (null when none were kept)."""

from __future__ import annotations

import html
import re
import uuid
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.runtime import InlineWorker, Runtime
from crm import service
from crm.models import Consent, ConsentChannel, ConsentStatus, Supporter, Wording
from tests.crm.helpers import make_supporter, staff_token
from tests.crm.test_subscribe import first_url, mailbox, path_of, settings, site, text_of
from tests.fixtures.smtp import Mailbox

__all__ = ["mailbox", "settings", "site"]


@pytest.fixture
def staff(runtime: Runtime) -> dict[str, str]:
    return staff_token(runtime, "fundraiser")


def kept_words(runtime: Runtime) -> list[tuple[str, str | None]]:
    """(status, kept words) of every consent, oldest first."""
    with runtime.read_session() as session:
        rows = session.exec(select(Consent).order_by(Consent.at, Consent.id)).all()  # type: ignore[arg-type]
        texts = {w.id: w.text for w in session.exec(select(Wording)).all()}
        return [(r.status, texts.get(r.wording_id) if r.wording_id else None) for r in rows]


def quoted_on(page_html: str) -> str:
    found = re.search(r"<blockquote[^>]*>\s*<p>(.*?)</p>\s*</blockquote>", page_html, re.DOTALL)
    assert found is not None, page_html
    return html.unescape(found.group(1)).strip()


def test_the_double_opt_in_keeps_the_words_its_page_and_email_showed(
    runtime: Runtime, site: TestClient, worker: InlineWorker, mailbox: Mailbox, staff: dict[str, str]
) -> None:
    page = site.post("/subscribe", data={"email": "sam@example.org", "first_name": "Sam"})
    assert page.status_code == 200
    shown = quoted_on(page.text)
    assert runtime.settings.charity.name in shown
    assert kept_words(runtime) == [("pending", shown)]

    worker.join()
    [message] = mailbox.to("sam@example.org")
    assert shown in text_of(message)
    link = first_url(message)
    assert link.startswith("http://testserver/subscribe/confirm?token=")  # still the first URL (contract.md)
    assert site.get(path_of(link)).status_code == 200
    assert kept_words(runtime) == [("pending", shown), ("granted", shown)]

    with runtime.read_session() as session:
        supporter_id = session.exec(select(Supporter.id)).one()
    detail = site.get(f"/api/supporters/{supporter_id}", headers=staff).json()
    email = detail["consents"]["email"]
    assert (email["status"], email["wording_version"], email["wording_text"]) == (
        "granted",
        service.SUBSCRIBE_WORDING,
        shown,
    )


def test_a_subscription_started_before_words_were_kept_grants_with_the_words_its_link_now_stands_for(
    runtime: Runtime, site: TestClient, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """A pending consent from before this change has no words: its email (sent now) quotes the function's words,
    and the grant keeps those."""
    with runtime.unit_of_work() as uow:
        pending = service.start_subscription(uow, "old@example.org")  # no words given, as before
        assert pending is not None
    assert kept_words(runtime) == [("pending", None)]
    worker.join()
    [message] = mailbox.to("old@example.org")
    words = service.email_updates_wording(runtime.settings.charity.name)
    assert words in text_of(message)
    assert site.get(path_of(first_url(message))).status_code == 200
    assert kept_words(runtime) == [("pending", None), ("granted", words)]


def consent(client: TestClient, supporter_id: uuid.UUID, staff: dict[str, str], **fields: Any) -> Any:
    body = {"channel": "post", "status": "granted", **fields}
    return client.post(f"/api/supporters/{supporter_id}/consents", json=body, headers=staff)


def test_staff_may_give_the_words_and_the_json_shows_them_or_null(
    runtime: Runtime, client: TestClient, staff: dict[str, str]
) -> None:
    ada = make_supporter(runtime)
    words = "Can we post you our newsletter twice a year? You can tell us to stop at any time."
    given = consent(client, ada, staff, wording_version="phone-script-3", wording_text=f"  {words}\x00 ")
    assert given.status_code == 201
    assert (given.json()["wording_version"], given.json()["wording_text"]) == ("phone-script-3", words)
    # The same script named by its version only: its kept words.
    again = consent(client, ada, staff, channel="phone", wording_version="phone-script-3")
    assert again.status_code == 201 and again.json()["wording_text"] == words
    # No words and a version never kept, or nothing at all: null, as for consents recorded before words were kept.
    assert consent(client, ada, staff, wording_version="letter-1").json()["wording_text"] is None
    withdrawn = consent(client, ada, staff, channel="email", status="withdrawn")
    assert withdrawn.status_code == 201 and withdrawn.json()["wording_text"] is None
    detail = client.get(f"/api/supporters/{ada}", headers=staff).json()
    assert detail["consents"]["phone"]["wording_text"] == words
    assert detail["consents"]["post"]["wording_text"] is None
    assert detail["consents"]["email"]["wording_text"] is None
    with runtime.read_session() as session:
        assert [w.text for w in session.exec(select(Wording)).all()] == [words]


def test_record_consent_keeps_words_once_per_version_and_text(runtime: Runtime) -> None:
    ada = make_supporter(runtime)
    words = service.email_updates_wording("Test Charity")
    with runtime.unit_of_work() as uow:
        for _ in range(2):
            service.record_consent(
                uow,
                ada,
                channel=ConsentChannel.EMAIL,
                status=ConsentStatus.GRANTED,
                source="import",
                wording_version="v9",
                wording_text=words,
            )
    with runtime.read_session() as session:
        wordings = session.exec(select(Wording)).all()
        assert [(w.version, w.text) for w in wordings] == [("v9", words)]
        assert {c.wording_id for c in session.exec(select(Consent)).all()} == {wordings[0].id}


def test_a_subject_access_export_carries_the_words_they_agreed_to(runtime: Runtime) -> None:
    from giving.privacy import export_supporter

    ada = make_supporter(runtime)
    words = service.email_updates_wording(runtime.settings.charity.name)
    with runtime.unit_of_work() as uow:
        consent = service.record_consent(
            uow,
            ada,
            channel=ConsentChannel.EMAIL,
            status=ConsentStatus.GRANTED,
            source="donate_form",
            wording_version="email-updates-2026-01",
            wording_text=words,
        )
        wording_id = str(consent.wording_id)
    with runtime.read_session() as session:
        tables = export_supporter(session, ada)["tables"]
    assert [c["wording_id"] for c in tables["consents"]] == [wording_id]
    assert [(w["id"], w["text"]) for w in tables["wordings"]] == [(wording_id, words)]
