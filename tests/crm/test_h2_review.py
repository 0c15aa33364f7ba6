"""Found in review (round 2): a withdrawal honoured against older confirmation links, and nothing more recorded on
an erased record through the JSON API."""

from __future__ import annotations

import re

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.clock import uk_today
from core.models import Job
from core.runtime import InlineWorker, Runtime
from crm import service
from crm.models import Consent, ConsentChannel, ConsentStatus, Declaration, HistoryEntry, Interest, Supporter
from giving.privacy import erase_supporter
from tests.crm.helpers import make_supporter, staff_token
from tests.crm.test_subscribe import first_url, mailbox, path_of, settings, site, text_of
from tests.fixtures.smtp import Mailbox

__all__ = ["mailbox", "settings", "site"]


def email_statuses(runtime: Runtime) -> list[tuple[str, str]]:
    with runtime.read_session() as session:
        rows = session.exec(select(Consent).order_by(Consent.at, Consent.id)).all()  # type: ignore[arg-type]
        return [(r.status, r.source) for r in rows if r.channel == ConsentChannel.EMAIL]


def granted(runtime: Runtime, email: str) -> bool:
    with runtime.read_session() as session:
        supporter = session.exec(select(Supporter).where(Supporter.email == email)).one()
        return service.has_granted(session, supporter.id, ConsentChannel.EMAIL)


def stop_link(message: object) -> str:
    found = re.search(r"http://testserver/unsubscribe\?token=\S+", text_of(message))  # type: ignore[arg-type]
    assert found is not None
    return path_of(found.group(0))


def test_a_confirmation_link_sent_before_an_unsubscribe_does_not_subscribe_them_again(
    runtime: Runtime, site: TestClient, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """Subscribe pressed twice sends two links; the first is confirmed, later they unsubscribe. The other email's
    link, opened afterwards (a mail scanner re-checking it, or the old email found again), must not undo what they
    asked last (PECR: a withdrawal is honoured). It used to grant the consent again."""
    for _ in range(2):
        assert site.post("/subscribe", data={"email": "sam@example.org"}).status_code == 200
    worker.join()
    first, second = mailbox.to("sam@example.org")
    assert site.get(path_of(first_url(first))).status_code == 200
    assert site.post(stop_link(first)).status_code == 200
    assert not granted(runtime, "sam@example.org")

    late = site.get(path_of(first_url(second)))
    assert late.status_code == 400
    assert not granted(runtime, "sam@example.org")
    assert email_statuses(runtime)[-1] == ("withdrawn", "unsubscribe_link")
    with runtime.read_session() as session:
        grants = [h for h in session.exec(select(HistoryEntry)).all() if h.data.get("status") == "granted"]
    assert len(grants) == 1


def test_stop_pressed_in_the_confirmation_email_outlasts_its_confirm_link(
    runtime: Runtime, site: TestClient, worker: InlineWorker, mailbox: Mailbox
) -> None:
    """Someone subscribed an address that did not want it; its owner presses "Stop emails from us" in the
    confirmation email. A later GET of the confirmation link (a scanner) must not subscribe them."""
    site.post("/subscribe", data={"email": "kim@example.org"})
    worker.join()
    [message] = mailbox.to("kim@example.org")
    assert site.post(stop_link(message)).status_code == 200
    assert site.get(path_of(first_url(message))).status_code == 400
    assert not granted(runtime, "kim@example.org")
    assert email_statuses(runtime) == [("pending", "subscribe"), ("withdrawn", "unsubscribe_link")]

    # Asking again after the withdrawal is a new request: its own link grants.
    site.post("/subscribe", data={"email": "kim@example.org"})
    worker.join()
    newest = mailbox.to("kim@example.org")[-1]
    assert site.get(path_of(first_url(newest))).status_code == 200
    assert granted(runtime, "kim@example.org")


@pytest.fixture
def staff(runtime: Runtime) -> dict[str, str]:
    return staff_token(runtime, "fundraiser")


def test_nothing_more_is_recorded_on_an_erased_record_through_the_api(
    runtime: Runtime, client: TestClient, staff: dict[str, str]
) -> None:
    """An erased record must hold no personal data. Through the JSON API, staff could still add an interest whose
    note is kept word for word, a consent with staff's note, or a declaration with a name and address (an oral one
    even queued a confirmation letter): 409, and nothing is written."""
    ada = make_supporter(runtime)
    with runtime.unit_of_work() as uow:
        erase_supporter(uow, runtime.settings, ada)
    with runtime.read_session() as session:
        consents_before = len(session.exec(select(Consent)).all())
        history_before = len(session.exec(select(HistoryEntry)).all())
    base = f"/api/supporters/{ada}"
    answers = [
        client.post(f"{base}/interests", json={"kind": "volunteering", "note": "Ada, 07700 900123"}, headers=staff),
        client.post(f"{base}/notes", json={"text": "Ada rang from 07700 900123"}, headers=staff),
        client.post(
            f"{base}/consents",
            json={"channel": "phone", "status": "granted", "note": "Ada Lovelace on 07700 900123"},
            headers=staff,
        ),
        client.post(
            f"{base}/declarations",
            json={
                "method": "oral",
                "made_on": uk_today().isoformat(),
                "scope": "future",
                "address": {
                    "first_name": "Ada",
                    "last_name": "Lovelace",
                    "address_line1": "12 Acacia Avenue",
                    "postcode": "CT16 1AA",
                },
            },
            headers=staff,
        ),
    ]
    assert [a.status_code for a in answers] == [409] * 4, [a.text for a in answers]
    assert {a.json()["error"] for a in answers} == {"SupporterErased"}
    with runtime.read_session() as session:
        assert session.exec(select(Interest)).all() == []
        assert session.exec(select(Declaration)).all() == []
        assert len(session.exec(select(Consent)).all()) == consents_before
        assert len(session.exec(select(HistoryEntry)).all()) == history_before
        jobs = [j.actor_name for j in session.exec(select(Job)).all()]
    assert "receipts.issue_oral_confirmation" not in jobs


def test_a_receipt_stored_while_the_erasure_ran_leaves_no_file(runtime: Runtime) -> None:
    """The render job stores a receipt's PDF before it records it as issued (no transaction is open while it
    renders). An erasure between the two withdrew the document but kept only the files of documents already issued:
    the PDF, with the donor's name and address, stayed on disk for good (the job then found the document withdrawn
    and recorded nothing)."""
    from receipts import service as receipts_service
    from tests.receipts import factories

    erased = factories.supporter(runtime, email="gone@example.org")
    gift = factories.gift(runtime, erased)
    with runtime.unit_of_work() as uow:
        document = receipts_service.allocate_gift_receipt(uow, runtime.settings, gift)
        assert document is not None
        job = receipts_service.render_job_of(document)
    assert job is not None
    digest, size = receipts_service.render_and_store(runtime.settings, job)
    stored = receipts_service.store_for(runtime.settings).path(job.storage_key)
    assert stored.exists()

    with runtime.unit_of_work() as uow:
        erase_supporter(uow, runtime.settings, erased)
    with runtime.unit_of_work() as uow:
        key = job.storage_key
        assert receipts_service.record_rendered(uow, job.document_id, storage_key=key, digest=digest, size=size) is None
    assert not stored.exists()


def test_erasure_takes_their_email_out_of_stored_webhook_errors(runtime: Runtime) -> None:
    """An event whose processing failed keeps the error's text, and a database error names the row it tripped on
    ("Key (email)=(ada@example.org) already exists"). The erasure took the address out of failed deliveries' and
    jobs' error texts, not out of the webhook events': the address stayed there."""
    import json

    from webhooks.models import EventStatus, InboundEvent

    ada = make_supporter(runtime, email="ada@example.org")
    error = (
        'duplicate key value violates unique constraint "uq_supporters_email"\n'
        "DETAIL:  Key (email)=(ada@example.org) already exists."
    )
    with runtime.unit_of_work() as uow:
        uow.session.add(
            InboundEvent(
                provider="stripe",
                external_id="evt_failed_1",
                event_type="checkout.session.completed",
                body=json.dumps({"id": "evt_failed_1", "data": {"object": {"id": "cs_1"}}}),
                status=EventStatus.FAILED,
                last_error=error,
            )
        )
    with runtime.unit_of_work() as uow:
        erase_supporter(uow, runtime.settings, ada)
    with runtime.read_session() as session:
        event = session.exec(select(InboundEvent)).one()
    assert event.last_error is not None
    assert "ada@example.org" not in event.last_error and "[erased]" in event.last_error


def test_an_unconfirmed_subscription_merged_in_does_not_hide_the_consent_given(
    runtime: Runtime, client: TestClient, staff: dict[str, str]
) -> None:
    """A pending row is a request, not a change of consent. Merging in a record whose subscription was never
    confirmed put that newer pending row "in force": the survivor, who had granted email consent on the donate
    form, showed as pending and `has_granted` said no; confirming the old link then granted a second time."""
    ada = make_supporter(runtime, email="ada@example.org")
    with runtime.unit_of_work() as uow:
        service.record_consent(
            uow, ada, channel=ConsentChannel.EMAIL, status=ConsentStatus.GRANTED, source="donate_form"
        )
    with runtime.unit_of_work() as uow:
        pending = service.start_subscription(uow, "ada.lovelace@example.org")
        assert pending is not None
        pending_id, other = pending.id, pending.supporter_id
    merged = client.post(f"/api/supporters/{other}/merge", json={"into": str(ada)}, headers=staff)
    assert merged.status_code == 200, merged.text

    detail = client.get(f"/api/supporters/{ada}", headers=staff).json()
    assert (detail["consents"]["email"]["status"], detail["consents"]["email"]["source"]) == ("granted", "donate_form")
    with runtime.read_session() as session:
        assert service.has_granted(session, ada, ConsentChannel.EMAIL)
    with runtime.unit_of_work() as uow:
        assert service.confirm_subscription(uow, pending_id) is False
    assert [s for s, _ in email_statuses(runtime)].count("granted") == 1


def test_a_subscription_waiting_for_its_link_shows_as_pending_until_anything_is_decided(runtime: Runtime) -> None:
    with runtime.unit_of_work() as uow:
        pending = service.start_subscription(uow, "new@example.org")
        assert pending is not None
        supporter_id = pending.supporter_id
    with runtime.read_session() as session:
        view = service.get_supporter(session, supporter_id)
        assert view.consents[ConsentChannel.EMAIL].status == ConsentStatus.PENDING
        assert not service.has_granted(session, supporter_id, ConsentChannel.EMAIL)


def test_a_receipt_stored_after_the_erasure_committed_leaves_no_file(runtime: Runtime) -> None:
    """The other order: the erasure commits while the job renders, so there is nothing on disk for it to delete; the
    job then stores the PDF, finds the document withdrawn and records nothing. What it stored must go too."""
    from receipts import service as receipts_service
    from receipts import tasks as receipts_tasks
    from tests.receipts import factories

    erased = factories.supporter(runtime, email="later@example.org")
    gift = factories.gift(runtime, erased)
    with runtime.unit_of_work() as uow:
        document = receipts_service.allocate_gift_receipt(uow, runtime.settings, gift)
        assert document is not None
        job = receipts_service.render_job_of(document)
    assert job is not None
    with runtime.unit_of_work() as uow:
        erase_supporter(uow, runtime.settings, erased)

    receipts_tasks._render_and_record(runtime, job, runtime.sessions)

    assert not receipts_service.store_for(runtime.settings).path(job.storage_key).exists()
    with runtime.read_session() as session:
        assert receipts_service.withdrawn(session, job.document_id)
