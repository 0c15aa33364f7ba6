"""The pages a fundraiser uses every day, on records the rest of the system produces: a supporter known by email
only, an erased supporter, gifts refunded or disputed, a long run of receipts; and the Gift Aid dashboard's form
when its date is mistyped."""

from __future__ import annotations

import datetime as dt
import re
import uuid

from sqlmodel import col, func, select
from starlette.testclient import TestClient

from core.clock import uk_today
from core.runtime import Runtime
from crm import service as crm_service
from crm.models import Consent, Declaration, HistoryEntry
from tests.staff.conftest import add_gift, add_supporter
from tests.staff.test_notices_and_forms import _declaration_form, assert_attributes_are_known, field_attributes


def _rows(html: str, section: str) -> list[str]:
    """The text of each body row of the table in the section headed `id=section`, tags removed."""
    found = re.search(rf'aria-labelledby="{section}">(.*?)</section>', html, re.S)
    assert found, f"no section {section}"
    body = re.search(r"<tbody>(.*?)</tbody>", found.group(1), re.S)
    assert body, f"no table in {section}"
    return [" ".join(re.sub(r"<[^>]+>", " ", row).split()) for row in re.findall(r"<tr.*?</tr>", body.group(1), re.S)]


# --- a supporter known by email only --------------------------------------------------------------------------


def test_a_supporter_with_no_name_can_be_found_and_opened(client: TestClient, runtime: Runtime, logged_in) -> None:
    """A newsletter sign-up gives only an email: the search listed the record as an empty link (nothing to click,
    nothing for a screen reader to read) and its page had an empty heading and title."""
    with runtime.unit_of_work() as uow:
        crm_service.supporter_for_email(uow, "no.name@example.org", source="subscribe")
    logged_in("fundraiser")
    found = client.get("/staff/supporters?q=no.name@example.org")
    assert found.status_code == 200
    link = re.search(r'<a href="/staff/supporters/([0-9a-f-]{36})">([^<]*)</a>', found.text)
    assert link, found.text
    assert link.group(2).strip() == "No name given"
    page = client.get(f"/staff/supporters/{link.group(1)}")
    assert page.status_code == 200
    assert re.search(r"<h1>\s*No name given\s*</h1>", page.text), page.text
    assert "<title>No name given · Giving</title>" in page.text
    history = client.get(f"/staff/supporters/{link.group(1)}/history")
    assert "<h1>History of No name given</h1>" in history.text


def test_finance_gets_no_empty_more_section(client: TestClient, runtime: Runtime, logged_in) -> None:
    """Finance may neither merge nor erase: the page showed them a "More" heading over nothing."""
    supporter_id = add_supporter(runtime)
    logged_in("finance")
    page = client.get(f"/staff/supporters/{supporter_id}").text
    assert 'id="more"' not in page
    logged_in("fundraiser")
    assert 'id="more"' in client.get(f"/staff/supporters/{supporter_id}").text


# --- an erased supporter --------------------------------------------------------------------------------------


def test_an_erased_supporter_takes_no_more_notes_declarations_or_consents(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    """The page still offered every form. A note was "added" with its words stripped (crm keeps none for an erased
    record), so what the fundraiser typed was lost; a declaration put a name and address back on the record (and
    an oral one queued a letter to nobody); a consent kept the words staff typed. The blanked address read ", "."""
    from giving.privacy import erase_supporter

    supporter_id = add_supporter(runtime, declaration=True)
    with runtime.unit_of_work() as uow:
        erase_supporter(uow, runtime.settings, supporter_id)
    with runtime.read_session() as session:
        declarations = session.exec(select(func.count()).select_from(Declaration)).one()
        consents = session.exec(select(func.count()).select_from(Consent)).one()
        notes = session.exec(select(func.count()).select_from(HistoryEntry).where(HistoryEntry.type == "note")).one()
    csrf = logged_in("fundraiser")
    page = client.get(f"/staff/supporters/{supporter_id}")
    assert page.status_code == 200 and "Erased on" in page.text
    assert "<dt>Address</dt><dd>—</dd>" in page.text  # blanked: not ", "
    for form in ("/notes", "/consents", "/declarations", "/merge"):
        assert f'action="/staff/supporters/{supporter_id}{form}"' not in page.text, form
    assert "/cancel" not in page.text

    answers = [
        client.post(f"/staff/supporters/{supporter_id}/notes", data={"csrf_token": csrf, "note_text": "Rang today"}),
        client.post(
            f"/staff/supporters/{supporter_id}/consents",
            data={"csrf_token": csrf, "channel": "post", "status": "granted", "note": "phone call with Ann Smith"},
        ),
        client.post(f"/staff/supporters/{supporter_id}/declarations", data=_declaration_form(csrf, method="oral")),
    ]
    for answer in answers:
        assert answer.status_code == 409, answer.text[:300]
        assert "was erased" in answer.text
    with runtime.read_session() as session:
        assert session.exec(select(func.count()).select_from(Declaration)).one() == declarations
        assert session.exec(select(func.count()).select_from(Consent)).one() == consents
        assert (
            session.exec(select(func.count()).select_from(HistoryEntry).where(HistoryEntry.type == "note")).one()
            == notes
        )
        assert not session.exec(select(Declaration).where(col(Declaration.first_name) == "Ann")).all()


def test_a_declaration_of_an_erased_supporter_cannot_be_cancelled_from_the_page(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    """The cancel form of a declaration HMRC's records keep is not offered, and a cancel sent anyway is refused
    (its reason would be words about the person written back on the record)."""
    from giving.privacy import erase_supporter

    supporter_id = add_supporter(runtime, declaration=True)
    with runtime.read_session() as session:
        declaration_id = session.exec(select(Declaration.id)).one()
    with runtime.unit_of_work() as uow:
        erase_supporter(uow, runtime.settings, supporter_id)
    csrf = logged_in("fundraiser")
    answer = client.post(
        f"/staff/supporters/{supporter_id}/declarations/{declaration_id}/cancel",
        data={"csrf_token": csrf, "effective_on": uk_today().strftime("%d/%m/%Y"), "reason": "moved abroad"},
    )
    assert answer.status_code == 409 and "was erased" in answer.text
    with runtime.read_session() as session:
        declaration = session.get(Declaration, declaration_id)
        assert declaration is not None and declaration.cancelled_at is None


# --- gifts refunded or disputed -------------------------------------------------------------------------------


def test_refunded_and_disputed_gifts_are_not_shown_as_paid(client: TestClient, runtime: Runtime, logged_in) -> None:
    """Payments keeps a refunded gift, or one whose card dispute is open or lost, `paid` (and counts what was
    returned): the page showed each as a green "paid". A dispute that Stripe prevented takes nothing back."""
    from payments.models import Dispute, DisputeStatus, Gift, Provider

    supporter_id = add_supporter(runtime)
    day = dt.date(2025, 6, 1)
    refunded = add_gift(runtime, supporter_id, 1000, day)
    part = add_gift(runtime, supporter_id, 2000, day + dt.timedelta(days=1))
    disputed = add_gift(runtime, supporter_id, 3000, day + dt.timedelta(days=2))
    prevented = add_gift(runtime, supporter_id, 4000, day + dt.timedelta(days=3))
    with runtime.unit_of_work() as uow:
        for gift_id, returned in ((refunded, 1000), (part, 500)):
            gift = uow.session.get(Gift, gift_id)
            assert gift is not None
            gift.returned_amount = returned
            uow.session.add(gift)
        for gift_id, status in ((disputed, DisputeStatus.OPEN), (prevented, DisputeStatus.PREVENTED)):
            uow.session.add(
                Dispute(
                    supporter_id=supporter_id,
                    gift_id=gift_id,
                    amount=3000,
                    status=status,
                    provider=Provider.STRIPE,
                    reason="fraudulent",
                    stripe_dispute_id=f"du_{uuid.uuid4().hex[:16]}",
                )
            )
    logged_in("fundraiser")
    page = client.get(f"/staff/supporters/{supporter_id}")
    assert page.status_code == 200
    rows = _rows(page.text, "gifts")
    assert rows == [
        "04/06/2025 £40.00 card paid",
        "03/06/2025 £30.00 card paid, disputed",
        "02/06/2025 £20.00 (£5.00 returned) card paid, part returned",
        "01/06/2025 £10.00 (£10.00 returned) card all returned",
    ], rows
    # Offered for a one-gift declaration, each says so too.
    options = dict(re.findall(r'<option value="([0-9a-f-]{36})"\s*>([^<]*)</option>', page.text))
    assert options[str(refunded)] == "01/06/2025 £10.00 (all returned)"
    assert options[str(disputed)] == "03/06/2025 £30.00 (paid, disputed)"
    assert options[str(prevented)] == "04/06/2025 £40.00"


# --- a long run of receipts -----------------------------------------------------------------------------------


def test_every_receipt_can_be_reached_to_send_again(client: TestClient, runtime: Runtime, logged_in) -> None:
    """A monthly donor has a receipt a month: only the 20 newest were listed, with no way to the older ones, so
    last year's receipt could not be sent again from the page. A withdrawn one is listed, never offered again."""
    from receipts.models import Document, DocumentKind, DocumentStatus

    supporter_id = add_supporter(runtime)
    base = dt.datetime(2024, 1, 15, 12, tzinfo=dt.UTC)
    with runtime.unit_of_work() as uow:
        for i in range(25):
            issued = base + dt.timedelta(days=30 * i)
            uow.session.add(
                Document(
                    kind=DocumentKind.GIFT_RECEIPT,
                    number=900_000 + i,
                    reference=f"GR-{900_000 + i}",
                    subject_key=f"gift:test-{i}",
                    supporter_id=supporter_id,
                    status=DocumentStatus.WITHDRAWN if i == 1 else DocumentStatus.ISSUED,
                    content={},
                    issued_at=issued,
                    issued_on=issued.date(),
                )
            )
    logged_in("fundraiser")
    page = client.get(f"/staff/supporters/{supporter_id}").text
    assert "GR-900024" in page and "GR-900000" not in page
    assert f'href="/staff/supporters/{supporter_id}?documents=all#documents"' in page
    assert "All 25 receipts and letters" in page
    everything = client.get(f"/staff/supporters/{supporter_id}?documents=all")
    assert everything.status_code == 200
    rows = _rows(everything.text, "documents")
    assert len(rows) == 25
    assert rows[-1].startswith("15/01/2024 GR-900000 gift receipt issued Resend"), rows[-1]
    assert rows[-2].endswith("withdrawn"), rows[-2]
    assert "GR-900001</span></button>" not in everything.text


# --- forms keep what was typed and say what is wrong ----------------------------------------------------------


def test_a_note_left_empty_is_told_to_a_screen_reader(client: TestClient, runtime: Runtime, logged_in) -> None:
    supporter_id = add_supporter(runtime)
    csrf = logged_in("fundraiser")
    answer = client.post(f"/staff/supporters/{supporter_id}/notes", data={"csrf_token": csrf, "note_text": "   "})
    assert answer.status_code == 400
    note = field_attributes(answer.text, "f-note_text")
    assert note.get("aria-invalid") == "true" and note.get("aria-describedby") == "f-note_text-error"


def test_a_mistyped_claim_date_keeps_the_dashboard_and_what_was_typed(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    """The date was checked only after the page was gone: a bare error page, without the form or the date typed."""
    from giftaid.models import Claim

    declared = add_supporter(runtime, declaration=True)
    add_gift(runtime, declared, 123450, uk_today() - dt.timedelta(days=20))
    csrf = logged_in("finance")
    answer = client.post("/staff/finance/giftaid/claims", data={"csrf_token": csrf, "through": "31/13/2025"})
    assert answer.status_code == 400
    assert "Claimable now" in answer.text and "£1,234.50" in answer.text
    through = field_attributes(answer.text, "f-through")
    assert through.get("value") == "31/13/2025"
    assert through.get("aria-invalid") == "true"
    assert through.get("aria-describedby") == "f-through-hint f-through-error"
    assert 'href="#f-through"' in answer.text and "Enter a real date" in answer.text
    assert_attributes_are_known(answer.text, "dashboard with an error")
    with runtime.read_session() as session:
        assert session.exec(select(Claim)).first() is None
    dashboard = client.get("/staff/finance/giftaid")
    assert field_attributes(dashboard.text, "f-through").get("value") == uk_today().strftime("%d/%m/%Y")


# --- a record merged away -------------------------------------------------------------------------------------


def test_a_form_sent_from_a_merged_records_page_still_says_what_it_did(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    """A page open on a duplicate merged meanwhile: resending its receipt works (the receipt moved with the merge),
    but the old address then led to the survivor's page without the notice, so nothing said a copy was on its way."""
    from giving import merge
    from receipts.models import Delivery, Document, DocumentKind, DocumentStatus

    duplicate = add_supporter(runtime, email="ann.old@example.org")
    survivor = add_supporter(runtime)
    issued = dt.datetime(2025, 5, 1, 12, tzinfo=dt.UTC)
    with runtime.unit_of_work() as uow:
        document = Document(
            kind=DocumentKind.GIFT_RECEIPT,
            number=910_000,
            reference="GR-910000",
            subject_key="gift:test-merged",
            supporter_id=duplicate,
            status=DocumentStatus.ISSUED,
            content={},
            issued_at=issued,
            issued_on=issued.date(),
        )
        uow.session.add(document)
        uow.session.flush()
        document_id = document.id
        merge.merge_supporters(uow, duplicate, survivor, by="test")
    csrf = logged_in("fundraiser")
    answer = client.post(f"/staff/supporters/{duplicate}/documents/{document_id}/resend", data={"csrf_token": csrf})
    assert answer.status_code == 200, answer.text[:300]
    assert str(answer.url).split("?")[0].endswith(f"/staff/supporters/{survivor}")
    assert "A copy of GR-910000 is on its way (email)." in answer.text
    with runtime.read_session() as session:
        assert session.exec(select(func.count()).select_from(Delivery)).one() == 1


def test_each_held_back_gifts_link_says_whose_page_it_opens(client: TestClient, runtime: Runtime, logged_in) -> None:
    """A hundred links all named "Open": a screen reader's list of links could not tell one from another."""
    first = add_supporter(runtime, "Bob", "Jones", "bob@example.org", "N1 9GU")
    second = add_supporter(runtime, "Cy", "Hart", "cy@example.org", "N1 9GU")
    add_gift(runtime, first, 2000, uk_today() - dt.timedelta(days=20))
    add_gift(runtime, second, 3000, uk_today() - dt.timedelta(days=21))
    logged_in("finance")
    page = client.get("/staff/finance/giftaid").text
    names = [
        " ".join(re.sub(r"<[^>]+>", " ", name).split())
        for name in re.findall(r'<a href="/staff/supporters/[0-9a-f-]{36}">(.*?)</a>', page, re.S)
    ]
    assert len(names) == 2 and len(set(names)) == 2, names
    assert names[0] == f"Open the supporter of the £20.00 gift received {(uk_today() - dt.timedelta(days=20)):%d/%m/%Y}"


# --- search -----------------------------------------------------------------------------------------------------


def test_exactly_fifty_matches_are_not_said_to_be_more(client: TestClient, runtime: Runtime, logged_in) -> None:
    """The search shows 50 and said "50+" as soon as it had 50, so exactly 50 Smiths read as "some are missing";
    with more than 50, it says that only the first 50 are shown and how to narrow it."""
    for i in range(50):
        add_supporter(runtime, f"Ann{i:02d}", "Smith", f"ann{i}@example.org")
    logged_in("fundraiser")
    page = client.get("/staff/supporters?q=smith").text
    assert "50 matches for “smith”" in page and "50+" not in page and "more than" not in page
    add_supporter(runtime, "Zoe", "Smith", "zoe@example.org")
    page = client.get("/staff/supporters?q=smith").text
    assert "The first 50 of more than 50 matches for “smith”" in page
    assert len(re.findall(r'<a href="/staff/supporters/[0-9a-f-]{36}">', page)) == 50


# --- regular gifts --------------------------------------------------------------------------------------------


def test_a_cancelled_monthly_gift_shows_no_next_payment(client: TestClient, runtime: Runtime, logged_in) -> None:
    """Payments keeps `next_due_on` when a regular gift ends: the page still said the next payment was due on that
    day, for a gift that will take no more payments."""
    from payments.models import Method, Provider, RegularGift, RegularGiftStatus

    supporter_id = add_supporter(runtime)
    with runtime.unit_of_work() as uow:
        for status, ended in (
            (RegularGiftStatus.CANCELLED, dt.datetime(2026, 3, 31, 23, 30, tzinfo=dt.UTC)),
            (RegularGiftStatus.ACTIVE, None),
        ):
            uow.session.add(
                RegularGift(
                    supporter_id=supporter_id,
                    amount=1250,
                    provider=Provider.GOCARDLESS,
                    method=Method.DIRECT_DEBIT,
                    status=status,
                    started_at=dt.datetime(2025, 1, 10, 12, tzinfo=dt.UTC),
                    ended_at=ended,
                    next_due_on=dt.date(2026, 4, 10),
                    last_paid_on=dt.date(2026, 3, 10),
                    gocardless_subscription_id=f"SB{uuid.uuid4().hex[:10].upper()}",
                    created_at=dt.datetime(2025, 1, 10, 12, tzinfo=dt.UTC) + dt.timedelta(days=1 if ended else 0),
                )
            )
    logged_in("finance")
    rows = _rows(client.get(f"/staff/supporters/{supporter_id}").text, "regular")
    cancelled = next(row for row in rows if "cancelled" in row)
    active = next(row for row in rows if "active" in row)
    assert "10/04/2026" not in cancelled and "ended 01/04/2026" in cancelled, cancelled  # UK date of 23:30 UTC
    assert "(GoCardless)" in cancelled
    assert "10/04/2026" in active, active


def test_the_supporter_page_shows_the_words_a_consent_was_given_on(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    """A consent keeps the words the person agreed to (docs/crm.md): a fundraiser asked "what did they sign up to?"
    reads them on the page, under the version."""
    from crm.models import ConsentChannel, ConsentStatus

    supporter_id = add_supporter(runtime)
    words = "Yes, you may phone me about the winter appeal"
    with runtime.unit_of_work() as uow:
        crm_service.change_consent_by_staff(
            uow,
            supporter_id,
            channel=ConsentChannel.PHONE,
            status=ConsentStatus.GRANTED,
            by="f@example.org",
            wording_version="phone-2026",
            wording_text=words,
        )
    logged_in("fundraiser")
    page = client.get(f"/staff/supporters/{supporter_id}").text
    [row] = [r for r in _rows(page, "consents") if r.startswith("phone")]
    assert "phone-2026" in row and words in row, row
