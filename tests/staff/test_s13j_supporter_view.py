"""A fundraiser's view of a supporter's whole history, in real Chromium, checked against the JSON API.

The supporters are made through the real paths: the donate form against the fake Stripe and GoCardless servers,
signed webhook deliveries through the real endpoints processed by the real jobs, receipts rendered and emailed to a
loopback SMTP server, and crm's and giving's services for declarations, consents, notes, a merge and an erasure.
Then a fundraiser finds each one (by name, email and postcode) and reads their page and history in the browser."""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from core.clock import uk_today
from core.runtime import InlineWorker, Runtime
from core.settings import Settings
from crm import service as crm_service
from crm.models import ConsentChannel, ConsentStatus, DeclarationMethod, DeclarationScope
from crm.validation import DonorDetails
from giftaid import service as giftaid_service
from giving import merge, privacy
from payments import service as payments_service
from payments.models import Checkout
from receipts import service as receipts_service
from receipts.models import Delivery, DeliveryStatus
from tests.crm.helpers import staff_token
from tests.fakes.provider_server import FakeProvider
from tests.fakes.scenarios import Scenario, fixture, unique
from tests.fakes.stripe_checkout import StripeCheckoutSessions
from tests.fixtures.smtp import Mailbox
from tests.receipts.conftest import receipts_settings
from tests.staff.conftest import LiveServer, StaffAccount, add_supporter, browser_log_in
from tests.webhooks.support import deliver, install, stuck_events

pytestmark = [pytest.mark.browser, pytest.mark.slow]

UTC = dt.UTC


@pytest.fixture
def settings(
    database_url: str,
    tmp_path: Path,
    smtp_server: tuple[Mailbox, int],
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
) -> Settings:
    return receipts_settings(
        database_url,
        tmp_path,
        smtp_server[1],
        stripe={"api_base": fake_stripe.url},
        gocardless={"base_url": fake_gocardless.url},
    )


@pytest.fixture
def mailbox(smtp_server: tuple[Mailbox, int]) -> Mailbox:
    return smtp_server[0]


def drain(runtime: Runtime) -> None:
    """Until every queue is empty: an event sends jobs (receipts), a document its email (three rounds). The
    runtime's in-process worker (`worker` fixture) runs every queue."""
    for _ in range(3):
        for queue in ("webhooks", "default", "documents", "email"):
            runtime.broker.join(queue, timeout=60_000)  # type: ignore[attr-defined]
    assert stuck_events(runtime) == []


def at(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


@dataclass
class World:
    amina: uuid.UUID  # the supporter with everything
    erased: uuid.UUID
    duplicate: uuid.UUID  # merged into amina
    failed_receipt: str  # the reference of the receipt whose copy could not be emailed


def donate_form(client: TestClient, donor: dict[str, str], **fields: str) -> uuid.UUID:
    ref = str(uuid.uuid4())
    form = {**donor, "frequency": "once", "method": "card", "checkout_ref": ref, **fields}
    response = client.post("/donate", data=form, follow_redirects=False, headers={"accept": "text/html"})
    assert response.status_code == 303, response.text
    return uuid.UUID(ref)


def checkout_row(runtime: Runtime, checkout_id: uuid.UUID) -> Checkout:
    with runtime.read_session() as session:
        checkout = session.get(Checkout, checkout_id)
        assert checkout is not None
        session.expunge(checkout)
        return checkout


AMINA = {
    "first_name": "Amina",
    "last_name": "Okafor",
    "email": "amina.okafor@example.org",
    "address_line1": "7 Marine Parade",
    "town": "Dover",
    "postcode": "CT16 1LW",
    "country": "GB",
}
EILEEN = {
    "first_name": "Eileen",
    "last_name": "Forgotten",
    "email": "eileen.forgotten@example.org",
    "address_line1": "3 Castle Street",
    "town": "Dover",
    "postcode": "CT16 1PT",
    "country": "GB",
}


def build_world(
    runtime: Runtime,
    client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
    mailbox: Mailbox,
) -> World:
    StripeCheckoutSessions(fake_stripe)
    with runtime.unit_of_work() as uow:
        payments_service.ensure_default_catalogue(uow)
    scenario = Scenario(runtime)

    # A card gift of £1,234.50 through the donate form, paid at 23:30 UTC on 31 March 2026 (BST: 1 April), then
    # £234.50 of it refunded.
    first = donate_form(client, AMINA, amount="1234.50")
    amina = checkout_row(runtime, first).supporter_id
    scenario.clock = at("2026-03-31T23:29:00")
    scenario.one_off_card_gift(
        amina,
        123450,
        refunds=(23450,),
        checkout_id=first,
        session_id=checkout_row(runtime, first).stripe_checkout_session_id,
    )
    # A £50 gift whose dispute was lost.
    second = donate_form(client, AMINA, amount="50")
    scenario.clock = at("2026-04-10T09:00:00")
    scenario.one_off_card_gift(
        amina,
        5000,
        dispute="lost",
        checkout_id=second,
        session_id=checkout_row(runtime, second).stripe_checkout_session_id,
    )
    # A basket: two shirts and a £10 donation.
    scenario.clock = at("2026-04-12T12:00:00")
    scenario.shop_basket(amina, quantity=2, donation=1000)
    # A monthly Direct Debit of £20: the first instalment paid, the second charged back by her bank, the third
    # failed, then retried by GoCardless and paid.
    scenario.clock = at("2026-04-01T08:00:00")
    subscription_id = scenario.gocardless_monthly(amina, 2000, payments=("paid_out", "charged_back"))
    install(scenario, fake_stripe, fake_gocardless)
    deliver(client, scenario.deliveries)
    drain(runtime)

    mandate_id = scenario.gocardless.subscriptions[subscription_id]["links"]["mandate"]
    payment_id = unique("PM")
    payment = copy.deepcopy(fixture("gocardless/payments.gocardless-pro-python.json")["get"]["body"]["payments"])
    payment.update(
        {
            "id": payment_id,
            "amount": 2000,
            "currency": "GBP",
            "status": "failed",
            "charge_date": "2026-05-05",
            "links": {"mandate": mandate_id, "subscription": subscription_id},
        }
    )
    scenario.gocardless.payments[payment_id] = payment
    mark = len(scenario.deliveries)
    scenario.clock = at("2026-05-05T09:00:00")
    links = {"payment": payment_id, "subscription": subscription_id, "mandate": mandate_id}
    scenario._gocardless("subscriptions", "payment_created", links)
    scenario._gocardless("payments", "created", {"payment": payment_id})
    scenario._gocardless(
        "payments",
        "failed",
        {"payment": payment_id},
        origin="bank",
        cause="insufficient_funds",
        reason_code="ARUDD-0",
        description="The customer's account had insufficient funds.",
        will_attempt_retry=True,
    )
    deliver(client, scenario.deliveries[mark:])
    drain(runtime)
    mark = len(scenario.deliveries)
    payment.update({"status": "paid_out", "charge_date": "2026-05-12"})
    scenario.clock = at("2026-05-12T09:00:00")
    scenario._gocardless("payments", "resubmission_requested", {"payment": payment_id})
    scenario._gocardless("payments", "confirmed", {"payment": payment_id})
    scenario._gocardless("payments", "paid_out", {"payment": payment_id, "payout": unique("PO")})
    deliver(client, scenario.deliveries[mark:])
    drain(runtime)

    # A declaration cancelled; the email consent withdrawn; notes by two staff.
    with runtime.unit_of_work() as uow:
        declaration = crm_service.record_declaration(
            uow,
            amina,
            method=DeclarationMethod.WRITTEN,
            made_on=dt.date(2026, 4, 2),
            scope=DeclarationScope.PAST_4_YEARS_AND_FUTURE,
            donor=DonorDetails(
                first_name="Amina", last_name="Okafor", address_line1="7 Marine Parade", postcode="CT16 1LW"
            ).normalised(require_address=True),
            source="staff",
            wording_version="v1",
            wording_text=crm_service.enduring_declaration_wording(runtime.settings.charity.name),
            recorded_by="fundraiser@example.org",
        )
    with runtime.unit_of_work() as uow:
        crm_service.cancel_declaration(
            uow,
            declaration.id,
            effective_on=dt.date(2026, 5, 1),
            reason="no longer a taxpayer",
            by="fundraiser@example.org",
        )
    with runtime.unit_of_work() as uow:
        crm_service.record_consent(
            uow,
            amina,
            channel=ConsentChannel.EMAIL,
            status=ConsentStatus.GRANTED,
            source="donate_form",
            wording_version="v1",
        )
    with runtime.unit_of_work() as uow:
        crm_service.record_consent(
            uow,
            amina,
            channel=ConsentChannel.EMAIL,
            status=ConsentStatus.WITHDRAWN,
            source="staff",
            wording_version="v1",
        )
    with runtime.unit_of_work() as uow:
        crm_service.add_note(uow, amina, "Prefers a call in the evening.", author="fundraiser@example.org")
    with runtime.unit_of_work() as uow:
        crm_service.add_note(uow, amina, "Asked about volunteering in Calais.", author="finance@example.org")

    # A duplicate record (another email) merged into hers.
    third = donate_form(client, {**AMINA, "email": "a.okafor@example.net"}, amount="15")
    duplicate = checkout_row(runtime, third).supporter_id
    assert duplicate != amina
    dup = Scenario(runtime)
    dup.clock = at("2026-04-20T10:00:00")
    dup.one_off_card_gift(
        duplicate, 1500, checkout_id=third, session_id=checkout_row(runtime, third).stripe_checkout_session_id
    )
    install(dup, fake_stripe, fake_gocardless)
    deliver(client, dup.deliveries)
    drain(runtime)
    with runtime.unit_of_work() as uow:
        merge.merge_supporters(uow, duplicate, amina, by="fundraiser@example.org")

    # One receipt's email failed: a copy sent again, refused by the mail server to its last try.
    with runtime.read_session() as session:
        [document, *_] = list(receipts_service.documents_of(session, amina))
        reference = document.reference
    mailbox.refuse = True
    with runtime.unit_of_work() as uow:
        copy_delivery = receipts_service.resend(uow, document.id, requested_by="fundraiser@example.org").id
    with runtime.unit_of_work() as uow:
        outcome = receipts_service.send_delivery(uow, runtime.settings, copy_delivery, attempt=13, final=True)
        assert outcome == DeliveryStatus.FAILED
    drain(runtime)
    mailbox.refuse = False

    # Eileen gave £25 with Gift Aid, which was claimed; then she asked to be erased (what HMRC needs is kept).
    fourth = donate_form(client, EILEEN, amount="25", gift_aid="yes")
    eileen = checkout_row(runtime, fourth).supporter_id
    gone = Scenario(runtime)
    gone.clock = at("2026-04-15T10:00:00")
    gone.one_off_card_gift(
        eileen, 2500, checkout_id=fourth, session_id=checkout_row(runtime, fourth).stripe_checkout_session_id
    )
    install(gone, fake_stripe, fake_gocardless)
    deliver(client, gone.deliveries)
    drain(runtime)
    with runtime.unit_of_work() as uow:
        built = giftaid_service.build_claim(uow, runtime.settings, through=uk_today(), actor="finance@example.org")
        assert built is not None
    with runtime.unit_of_work() as uow:
        privacy.erase_supporter(uow, runtime.settings, eileen)
    drain(runtime)
    return World(amina=amina, erased=eileen, duplicate=duplicate, failed_receipt=reference)


def api(client: TestClient, runtime: Runtime, path: str) -> Any:
    response = client.get(
        path, headers=staff_token(runtime, "fundraiser", email=f"api-{uuid.uuid4().hex[:8]}@example.org")
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def world(
    runtime: Runtime,
    worker: InlineWorker,
    client: TestClient,
    fake_stripe: FakeProvider,
    fake_gocardless: FakeProvider,
    mailbox: Mailbox,
) -> World:
    return build_world(runtime, client, fake_stripe, fake_gocardless, mailbox)


def pounds(pence: int) -> str:
    return f"{'-' if pence < 0 else ''}£{abs(pence) / 100:,.2f}"


def rows_of(page: Any, heading: str) -> list[str]:
    """The body rows of the table under a section's heading, each as its cells' text joined by " | "."""
    section = page.locator("section", has=page.get_by_role("heading", name=heading, exact=True))
    return [
        " | ".join(cell.strip() for cell in row.locator("td, th").all_inner_texts())
        for row in section.locator("tbody tr").all()
    ]


def facts(page: Any, heading: str) -> dict[str, str]:
    section = page.locator("section", has=page.get_by_role("heading", name=heading, exact=True))
    terms = section.locator("dt").all_inner_texts()
    values = section.locator("dd").all_inner_texts()
    return dict(zip(terms, values, strict=True))


def search(page: Any, text: str) -> list[str]:
    page.goto("/staff/supporters")
    page.get_by_label("Find a supporter by name, email or postcode").fill(text)
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r".*\?q=.*"))
    return [link.inner_text() for link in page.locator("table a").all()]


def test_the_supporter_page_shows_the_whole_history_as_the_api_has_it(
    world: World,
    client: TestClient,
    runtime: Runtime,
    browser_page: Any,
    live_server: LiveServer,
    staff_accounts: dict[str, StaffAccount],
) -> None:
    page = browser_page
    detail = api(client, runtime, f"/api/supporters/{world.amina}")
    items = api(client, runtime, f"/api/supporters/{world.amina}/history?limit=200")["items"]
    browser_log_in(page, staff_accounts["fundraiser"])

    # Found by name, by email (hers and the merged duplicate's), by postcode with or without its space.
    for text in ("okafor", "Amina Okafor", "amina.okafor@example.org", "a.okafor@example.net", "CT16 1LW", "ct161lw"):
        assert search(page, text) == ["Amina Okafor"], text

    page.goto(f"/staff/supporters/{world.duplicate}")  # the merged record's old address leads to hers
    page.wait_for_url(f"**/staff/supporters/{world.amina}")
    live_server.screenshot(page, "s13j-supporter")
    assert page.get_by_text("1 other record merged into this one.").is_visible()

    # Totals as the API has them: donated = successful gifts less refunds and lost disputes; purchases apart.
    totals = facts(page, "Totals")
    api_totals = detail["totals"]
    assert totals["Donated"] == pounds(api_totals["donated"]["amount"]) == "£1,065.00"
    assert totals["Shop purchases"] == pounds(api_totals["purchases"]["amount"]) == "£30.00"
    assert totals["Gift Aid claimable"] == pounds(api_totals["gift_aid_claimable"]["amount"])
    assert totals["Regular gifts"] == f"{api_totals['regular_gifts']} running"

    # Gifts newest first, in UK dates (23:30 UTC on 31 March is 1 April in BST), with what happened to the money.
    assert rows_of(page, "Recent gifts") == [
        "12/05/2026 | £20.00 | direct debit | paid",  # the instalment that failed, retried and paid
        "20/04/2026 | £15.00 | card | paid",  # the merged duplicate's gift
        "12/04/2026 | £10.00 | card, with a shop order | paid",  # the donation of the basket
        "10/04/2026 | £50.00 (£50.00 returned) | card | all returned",  # the dispute lost
        "01/04/2026 | £1,234.50 (£234.50 returned) | card | paid, part returned",
        "05/02/2026 | £20.00 | direct debit | reversed",  # charged back
        "05/01/2026 | £20.00 | direct debit | paid",
    ]
    assert rows_of(page, "Regular gifts")[0].startswith("£20.00 monthly | direct debit (GoCardless) | active")
    assert rows_of(page, "Gift Aid declarations") == [
        "02/04/2026 | paper | past 4 years and future from 02/04/2022 | Amina Okafor, 7, CT16 1LW"
        " | cancelled from 01/05/2026"
    ]
    email_consent = rows_of(page, "Consents")[0]
    assert email_consent.startswith("email | withdrawn |"), email_consent

    # The history: the same items as the API, in the same order (newest first), times in UK time.
    page.goto(f"/staff/supporters/{world.amina}/history")
    shown = page.locator(".timeline-item")
    assert shown.count() == len(items)
    summaries = [text.strip() for text in shown.locator(".what").all_inner_texts()]
    for item, text in zip(items, summaries, strict=True):
        assert item["summary"] in text, (item, text)
        if "amount" in item:
            assert pounds(item["amount"]["amount"]) in text, (item, text)
    times = shown.locator("time").all_inner_texts()
    gift = next(i for i in items if i["summary"].startswith("Gift of £1,234.50"))
    assert gift["at"] == "2026-03-31T23:30:00Z"
    assert times[items.index(gift)] == "01/04/2026 00:30"
    failed = next(i for i in items if i["type"] == "payment_failed")
    assert "GoCardless will retry" in summaries[items.index(failed)]


def test_an_erased_supporter_shows_nothing_personal(
    world: World, browser_page: Any, live_server: LiveServer, staff_accounts: dict[str, StaffAccount]
) -> None:
    """Eileen's Gift Aid was claimed before she was erased, so her declaration keeps her name and house for HMRC
    until `purge_after`: kept is not shown. Her pages keep amounts and dates only, and she is not found."""
    page = browser_page
    browser_log_in(page, staff_accounts["fundraiser"])
    for text in ("Eileen", "Forgotten", "eileen.forgotten@example.org", "CT16 1PT"):
        assert search(page, text) == [], text
    for url in (f"/staff/supporters/{world.erased}", f"/staff/supporters/{world.erased}/history"):
        page.goto(url)
        text = page.locator("main").inner_text()
        for personal in ("Eileen", "Forgotten", "eileen.forgotten", "Castle Street", "CT16 1PT"):
            assert personal not in text, (url, personal)
    page.goto(f"/staff/supporters/{world.erased}")
    live_server.screenshot(page, "s13j-erased")
    assert rows_of(page, "Recent gifts") == ["15/04/2026 | £25.00 | card | paid"]
    [declaration] = rows_of(page, "Gift Aid declarations")
    assert declaration.startswith(f"{uk_today():%d/%m/%Y} | online | past 4 years and future"), declaration
    assert facts(page, "Totals")["Donated"] == "£25.00"


def test_the_donation_of_a_basket_says_it_came_with_the_shop_order(
    world: World, browser_page: Any, staff_accounts: dict[str, StaffAccount]
) -> None:
    """Two shirts and £10 in one basket: the £10 read as one more card gift, nothing saying it was given with an
    order (the shirts show only in the purchases total and the history)."""
    page = browser_page
    browser_log_in(page, staff_accounts["fundraiser"])
    page.goto(f"/staff/supporters/{world.amina}")
    basket = [row for row in rows_of(page, "Recent gifts") if row.startswith("12/04/2026")]
    assert basket == ["12/04/2026 | £10.00 | card, with a shop order | paid"]
    others = [row for row in rows_of(page, "Recent gifts") if not row.startswith("12/04/2026")]
    assert not any("shop order" in row for row in others)
    assert facts(page, "Totals")["Shop purchases"] == "£30.00"


def test_each_note_says_which_staff_member_wrote_it(
    world: World, client: TestClient, runtime: Runtime, browser_page: Any, staff_accounts: dict[str, StaffAccount]
) -> None:
    """Two colleagues' notes: the page and the history say whose each is, as the API does (`author`)."""
    page = browser_page
    notes = [i for i in api(client, runtime, f"/api/supporters/{world.amina}/history")["items"] if i["type"] == "note"]
    assert [n["author"] for n in notes] == ["finance@example.org", "fundraiser@example.org"]
    browser_log_in(page, staff_accounts["fundraiser"])
    for url in (f"/staff/supporters/{world.amina}", f"/staff/supporters/{world.amina}/history?type=note"):
        page.goto(url)
        shown = page.locator(".timeline-item.type-note .what").all_inner_texts()
        assert len(shown) == 2, url
        for note, text in zip(notes, shown, strict=True):
            assert note["summary"] in text and f"by {note['author']}" in text, (url, text)


def test_a_receipt_whose_email_failed_says_so(
    world: World, runtime: Runtime, browser_page: Any, staff_accounts: dict[str, StaffAccount]
) -> None:
    """The copy of a receipt the mail server refused to its last try: the receipts table says the email failed
    (else every receipt reads "issued" and nobody knows to send it again or post it)."""
    page = browser_page
    with runtime.read_session() as session:
        deliveries = session.exec(select(Delivery).where(Delivery.supporter_id == world.amina)).all()
        assert sorted(str(d.status) for d in deliveries).count("failed") == 1
    browser_log_in(page, staff_accounts["fundraiser"])
    page.goto(f"/staff/supporters/{world.amina}")
    rows = rows_of(page, "Receipts and letters")
    failed = [row for row in rows if world.failed_receipt in row]
    assert len(failed) == 1 and "email failed" in failed[0], failed
    others = [row for row in rows if world.failed_receipt not in row]
    assert others and all("emailed" in row and "failed" not in row for row in others), others


def test_each_page_has_one_heading_labelled_fields_and_works_from_the_keyboard(
    world: World, runtime: Runtime, browser_page: Any, live_server: LiveServer, staff_accounts: dict[str, StaffAccount]
) -> None:
    page = browser_page
    browser_log_in(page, staff_accounts["fundraiser"])
    unlabelled = """() => [...document.querySelectorAll('input, select, textarea, button')]
        .filter(e => e.type !== 'hidden')
        .filter(e => e.tagName === 'BUTTON' ? !e.textContent.trim() && !e.getAttribute('aria-label')
                                           : e.labels.length === 0 && !e.getAttribute('aria-label'))
        .map(e => e.outerHTML)"""
    pages = [
        "/staff/supporters?q=okafor",
        f"/staff/supporters/{world.amina}",
        f"/staff/supporters/{world.amina}?documents=all",
        f"/staff/supporters/{world.amina}/history",
        f"/staff/supporters/{world.amina}/history?type=gift",
        f"/staff/supporters/{world.amina}/merge?other=nobody%40example.org",
        f"/staff/supporters/{world.erased}",
        f"/staff/supporters/{world.erased}/history",
    ]
    for url in pages:
        page.goto(url)
        assert page.locator("h1").count() == 1, url
        assert page.evaluate(unlabelled) == [], url
        levels = [int(tag[1]) for tag in page.eval_on_selector_all("h1, h2, h3, h4", "els => els.map(e => e.tagName)")]
        assert all(b - a <= 1 for a, b in itertools.pairwise(levels)), (url, levels)  # no level skipped

    # Keyboard only: from the search box to her page, open "Add a note", write it and send it.
    page.goto("/staff/supporters")
    page.get_by_label("Find a supporter by name, email or postcode").focus()
    page.keyboard.type("CT16 1LW")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*\?q=CT16.*"))
    link = page.get_by_role("link", name="Amina Okafor")
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Amina Okafor":
            break
    else:
        pytest.fail("the result link is not reached with Tab")
    assert link.evaluate("e => e === document.activeElement")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/staff/supporters/{world.amina}")
    for _ in range(200):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.trim()") == "Add a note":
            break
    else:
        pytest.fail("'Add a note' is not reached with Tab")
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
    page.keyboard.press("Enter")  # opens the <details>
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "f-note_text"
    page.keyboard.type("Rang back by keyboard.")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Add note"
    before = page.url
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: url != before and "done=" in url)
    assert "Rang back by keyboard." in page.locator(".timeline").first.inner_text()


def test_a_name_typed_last_name_first_with_a_comma_is_found(
    runtime: Runtime, browser_page: Any, staff_accounts: dict[str, StaffAccount]
) -> None:
    """ "Okafor, Amina", as lists and letters write names: the comma is no part of the name (it found nobody)."""
    add_supporter(runtime, "Amina", "Okafor", "amina.okafor@example.org", "CT16 1LW")
    add_supporter(runtime, "Amina", "Bello", "amina.bello@example.org", "N1 9GU")
    page = browser_page
    browser_log_in(page, staff_accounts["fundraiser"])
    for text in ("Okafor, Amina", "Okafor,Amina", "okafor,", "Okafor, CT16 1LW"):
        assert search(page, text) == ["Amina Okafor"], text
    assert search(page, "Amina,") == ["Amina Bello", "Amina Okafor"]
