"""The one-line notices after a form (only the pages' own, never text from the address), error summaries whose
links lead to a field on the page, choosing any of a supporter's gifts for a one-gift declaration, and forms that
meet a record changed since they were loaded."""

from __future__ import annotations

import datetime as dt
import html.parser
import re
import urllib.parse
import uuid

from sqlmodel import select
from starlette.testclient import TestClient

from core.clock import uk_today
from core.models import ApiToken, StaffUser
from core.runtime import Runtime
from crm.models import Declaration
from tests.staff.conftest import add_gift, add_supporter, csrf_of

FORGED = "Your account was suspended: call 0800 000 000"


def _date(day: dt.date) -> str:
    return day.strftime("%d/%m/%Y")


def notice_of(html: str) -> str | None:
    match = re.search(r'<p class="notice" role="status">(.*?)</p>', html, re.S)
    return match.group(1) if match else None


def assert_summary_links_lead_to_fields(html: str) -> list[str]:
    """Every link of the error summary names an element of the page; returns the summary's messages."""
    summary = re.search(r'<div class="error-summary".*?</div>', html, re.S)
    assert summary, "the page has no error summary"
    for target in re.findall(r'href="#([^"]+)"', summary.group(0)):
        assert f'id="{target}"' in html, f"the error summary links to #{target}, which is not on the page"
    return re.findall(r"<li>(.*?)</li>", summary.group(0), re.S)


def _declaration_form(csrf: str, **changes: str) -> dict[str, str]:
    return {
        "csrf_token": csrf,
        "method": "written",
        "made_on": _date(uk_today()),
        "scope": "past_4_years_and_future",
        "first_name": "Ann",
        "last_name": "Smith",
        "address_line1": "12 Dock Road",
        "postcode": "CT16 1AA",
        "country": "GB",
        **changes,
    }


# --- 1. notices ---------------------------------------------------------------------------------------------


def test_a_notice_written_into_the_address_is_not_shown(client: TestClient, runtime: Runtime, logged_in) -> None:
    supporter_id = add_supporter(runtime)
    logged_in("fundraiser")
    for path in (f"/staff/supporters/{supporter_id}", "/staff/", "/staff/supporters"):
        page = client.get(path, params={"done": FORGED})
        assert page.status_code == 200
        assert notice_of(page.text) is None and "suspended" not in page.text, path
    client.cookies.clear()
    login = client.get("/staff/login", params={"done": FORGED})
    assert notice_of(login.text) is None and "suspended" not in login.text


def test_a_notice_after_a_form_is_shown_only_to_whoever_sent_it(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    supporter_id = add_supporter(runtime)
    csrf = logged_in("fundraiser")
    answer = client.post(
        f"/staff/supporters/{supporter_id}/notes",
        data={"csrf_token": csrf, "note_text": "Rang to say thanks"},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    location = answer.headers["location"]
    assert "Note" not in urllib.parse.unquote_plus(location)  # a sealed token, not the words
    assert notice_of(client.get(location).text) == "Note added."
    # Altered, or made for another page's words: nothing.
    token = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)["done"][0]
    assert notice_of(client.get(f"/staff/supporters/{supporter_id}?done={token[:-2]}xx").text) is None
    # The same address opened by someone else (a link passed on) shows no notice either.
    logged_in("finance")
    assert notice_of(client.get(location).text) is None


def test_the_notice_of_logging_out_shows_on_the_login_page(client: TestClient, logged_in) -> None:
    csrf = logged_in("fundraiser")
    page = client.post("/staff/logout", data={"csrf_token": csrf})
    assert page.status_code == 200 and notice_of(page.text) == "You have logged out."


def test_a_notice_with_words_from_a_record_is_the_records_own(client: TestClient, runtime: Runtime, logged_in) -> None:
    """The revoked token's name comes from the database, not from the address."""
    csrf = logged_in("admin")
    client.post(
        "/staff/admin/tokens",
        data={"csrf_token": csrf, "email": "finance@example.org", "name": "accounts export", "days": "30"},
    )
    with runtime.read_session() as session:
        token_id = session.exec(select(ApiToken)).one().id
    page = client.post(f"/staff/admin/tokens/{token_id}/revoke", data={"csrf_token": csrf})
    assert notice_of(page.text) == "Revoked the token “accounts export”."


# --- 2. error summaries -------------------------------------------------------------------------------------


def test_the_declaration_forms_method_error_links_to_a_field(client: TestClient, runtime: Runtime, logged_in) -> None:
    supporter_id = add_supporter(runtime)
    csrf = logged_in("fundraiser")
    answer = client.post(f"/staff/supporters/{supporter_id}/declarations", data=_declaration_form(csrf, method=""))
    assert answer.status_code == 400
    assert any("Choose spoken or on paper" in m for m in assert_summary_links_lead_to_fields(answer.text))


def test_a_one_gift_declaration_without_gifts_links_to_a_field(client: TestClient, runtime: Runtime, logged_in) -> None:
    supporter_id = add_supporter(runtime)
    csrf = logged_in("fundraiser")
    answer = client.post(
        f"/staff/supporters/{supporter_id}/declarations", data=_declaration_form(csrf, scope="this_gift")
    )
    assert answer.status_code == 400
    assert any("names the gift" in m for m in assert_summary_links_lead_to_fields(answer.text))


def test_cancelling_a_cancelled_declaration_or_confirming_a_paper_one_links_to_no_missing_field(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    supporter_id = add_supporter(runtime, declaration=True)
    with runtime.read_session() as session:
        declaration_id = session.exec(select(Declaration)).one().id
    csrf = logged_in("fundraiser")
    cancel = f"/staff/supporters/{supporter_id}/declarations/{declaration_id}/cancel"
    confirm = f"/staff/supporters/{supporter_id}/declarations/{declaration_id}/confirm"
    not_oral = client.post(confirm, data={"csrf_token": csrf, "confirmation_sent_on": _date(uk_today())})
    assert not_oral.status_code == 400
    assert any("oral declaration" in m for m in assert_summary_links_lead_to_fields(not_oral.text))
    assert client.post(cancel, data={"csrf_token": csrf, "effective_on": _date(uk_today())}).status_code == 200
    again = client.post(cancel, data={"csrf_token": csrf, "effective_on": _date(uk_today())})
    assert again.status_code == 400
    assert any("already cancelled" in m for m in assert_summary_links_lead_to_fields(again.text))


# --- 3. any gift for a one-gift declaration -----------------------------------------------------------------


def test_an_older_gift_can_be_chosen_by_the_day_it_was_received(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    supporter_id = add_supporter(runtime)
    oldest_day = uk_today() - dt.timedelta(days=400)
    oldest = add_gift(runtime, supporter_id, 4321, oldest_day)
    for i in range(25):
        add_gift(runtime, supporter_id, 1000 + i, uk_today() - dt.timedelta(days=30 + i))
    csrf = logged_in("fundraiser")
    page = client.get(f"/staff/supporters/{supporter_id}")
    assert f'value="{oldest}"' not in page.text  # not among the newest offered in the list
    assert 'id="f-gift_received_on"' in page.text
    answer = client.post(
        f"/staff/supporters/{supporter_id}/declarations",
        data=_declaration_form(csrf, scope="this_gift", gift_received_on=_date(oldest_day)),
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    with runtime.read_session() as session:
        assert session.exec(select(Declaration)).one().gift_id == oldest


def test_two_gifts_on_the_day_given_are_offered_to_choose_from(client: TestClient, runtime: Runtime, logged_in) -> None:
    supporter_id = add_supporter(runtime)
    day = uk_today() - dt.timedelta(days=500)
    first, second = add_gift(runtime, supporter_id, 500, day), add_gift(runtime, supporter_id, 750, day)
    for i in range(21):
        add_gift(runtime, supporter_id, 1000, uk_today() - dt.timedelta(days=10 + i))
    csrf = logged_in("fundraiser")
    path = f"/staff/supporters/{supporter_id}/declarations"
    nothing = client.post(
        path, data=_declaration_form(csrf, scope="this_gift", gift_received_on=_date(day - dt.timedelta(days=1)))
    )
    assert nothing.status_code == 400
    assert any("No gift of theirs" in m for m in assert_summary_links_lead_to_fields(nothing.text))
    both = client.post(path, data=_declaration_form(csrf, scope="this_gift", gift_received_on=_date(day)))
    assert both.status_code == 400
    assert any("2 gifts" in m for m in assert_summary_links_lead_to_fields(both.text))
    assert f'value="{first}"' in both.text and f'value="{second}"' in both.text
    assert f"{_date(day)} £7.50" in both.text
    chosen = client.post(
        path,
        data=_declaration_form(csrf, scope="this_gift", gift_received_on=_date(day), gift_id=str(second)),
        follow_redirects=False,
    )
    assert chosen.status_code == 303, chosen.text
    with runtime.read_session() as session:
        assert session.exec(select(Declaration)).one().gift_id == second


def test_another_supporters_gift_cannot_be_named(client: TestClient, runtime: Runtime, logged_in) -> None:
    supporter_id = add_supporter(runtime)
    other = add_supporter(runtime, "Bob", "Jones", "bob@example.org", "N1 9GU")
    day = uk_today() - dt.timedelta(days=40)
    add_gift(runtime, other, 500, day)
    theirs = add_gift(runtime, other, 600, day - dt.timedelta(days=1))
    csrf = logged_in("fundraiser")
    path = f"/staff/supporters/{supporter_id}/declarations"
    by_day = client.post(path, data=_declaration_form(csrf, scope="this_gift", gift_received_on=_date(day)))
    assert by_day.status_code == 400 and "No gift of theirs" in by_day.text
    by_id = client.post(path, data=_declaration_form(csrf, scope="this_gift", gift_id=str(theirs)))
    assert by_id.status_code == 400
    assert_summary_links_lead_to_fields(by_id.text)
    with runtime.read_session() as session:
        assert session.exec(select(Declaration)).first() is None


# --- 4. a token for a user deactivated since the form was loaded --------------------------------------------


def test_a_token_for_a_user_deactivated_meanwhile_is_a_form_error(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    csrf = logged_in("admin")
    form = client.get("/staff/admin/tokens")
    assert 'value="finance@example.org"' in form.text
    with runtime.unit_of_work() as uow:
        user = uow.session.exec(select(StaffUser).where(StaffUser.email == "finance@example.org")).one()
        user.active = False
        uow.session.add(user)
    answer = client.post(
        "/staff/admin/tokens",
        data={"csrf_token": csrf_of(form.text), "email": "finance@example.org", "name": "export", "days": "30"},
    )
    assert answer.status_code == 400, answer.status_code
    messages = assert_summary_links_lead_to_fields(answer.text)
    assert any("not an active user" in m for m in messages), messages
    assert 'value="export"' in answer.text  # what was typed is kept
    with runtime.read_session() as session:
        assert session.exec(select(ApiToken)).first() is None
    assert csrf


def test_an_unknown_user_id_in_a_token_form_is_a_form_error(client: TestClient, logged_in) -> None:
    csrf = logged_in("admin")
    answer = client.post(
        "/staff/admin/tokens",
        data={"csrf_token": csrf, "email": f"{uuid.uuid4().hex}@example.org", "name": "export", "days": "30"},
    )
    assert answer.status_code == 400
    assert_summary_links_lead_to_fields(answer.text)


# --- markup the browser reads as written --------------------------------------------------------------------

KNOWN_ATTRIBUTES = {
    "accept-charset",
    "action",
    "aria-current",
    "aria-describedby",
    "aria-hidden",
    "aria-invalid",
    "aria-label",
    "aria-labelledby",
    "autocomplete",
    "charset",
    "checked",
    "class",
    "colspan",
    "content",
    "for",
    "href",
    "id",
    "inputmode",
    "lang",
    "maxlength",
    "method",
    "name",
    "open",
    "pattern",
    "rel",
    "required",
    "role",
    "rows",
    "scope",
    "selected",
    "tabindex",
    "type",
    "value",
    "download",
    "title",
    "datetime",
    "min",
    "max",
    "step",
    "novalidate",
}


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags_of(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(page)
    return parser.tags


def field_attributes(page: str, element_id: str) -> dict[str, str | None]:
    return next(attrs for _, attrs in tags_of(page) if attrs.get("id") == element_id)


def assert_attributes_are_known(page: str, where: str) -> None:
    """No attributes run together, no id twice (a label `for` it would name the first only)."""
    ids: list[str] = []
    for tag, attrs in tags_of(page):
        unknown = set(attrs) - KNOWN_ATTRIBUTES
        assert not unknown, f"{where}: <{tag}> has attributes a browser does not know: {unknown} ({attrs})"
        ids += [str(attrs["id"])] if attrs.get("id") else []
    assert len(ids) == len(set(ids)), f"{where}: ids used twice: {sorted({i for i in ids if ids.count(i) > 1})}"
    for _, attrs in tags_of(page):
        if attrs.get("for"):
            assert attrs["for"] in ids, f"{where}: a label for #{attrs['for']}, which is not on the page"


def test_form_fields_keep_required_autocomplete_and_pattern(client: TestClient) -> None:
    """Attributes ran together (`requiredautocomplete="username"`) and quoted ones were escaped (`pattern=&#34;…`):
    a browser then read neither `required` nor `autocomplete`, and the code's pattern demanded quote marks."""
    page = client.get("/staff/login").text
    email = field_attributes(page, "f-email")
    assert "required" in email and email.get("autocomplete") == "username"
    password = field_attributes(page, "f-password")
    assert "required" in password and password.get("autocomplete") == "current-password"
    totp = field_attributes(page, "f-totp")
    assert totp.get("pattern") == "[0-9]{6}" and totp.get("maxlength") == "6"
    assert totp.get("inputmode") == "numeric" and totp.get("aria-describedby") == "f-totp-hint"
    assert_attributes_are_known(page, "login")


def test_every_field_and_select_with_an_error_says_so_to_a_screen_reader(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    supporter_id = add_supporter(runtime, declaration=True)
    add_gift(runtime, supporter_id, 1000, uk_today() - dt.timedelta(days=3))
    csrf = logged_in("admin")
    answer = client.post(
        f"/staff/supporters/{supporter_id}/consents", data={"csrf_token": csrf, "channel": "fax", "status": "maybe"}
    )
    assert answer.status_code == 400
    channel = field_attributes(answer.text, "f-channel")
    assert "required" in channel and channel.get("aria-describedby") == "f-channel-error"
    bad = client.post(
        f"/staff/supporters/{supporter_id}/declarations", data=_declaration_form(csrf, made_on="", scope="x")
    )
    made_on = field_attributes(bad.text, "f-made_on")
    assert "required" in made_on and made_on.get("aria-invalid") == "true"
    assert made_on.get("aria-describedby") == "f-made_on-hint f-made_on-error"
    for path in (
        f"/staff/supporters/{supporter_id}",
        f"/staff/supporters/{supporter_id}/history",
        "/staff/admin/users",
        "/staff/admin/tokens",
        "/staff/admin/audit",
        "/staff/supporters?q=smith",
        f"/staff/supporters/{supporter_id}/erase",
        "/staff/finance/giftaid",
        "/staff/finance/payouts",
        "/staff/finance/instalments",
        "/staff/finance/shop",
        "/staff/forgot-password",
    ):
        assert_attributes_are_known(client.get(path).text, path)
    assert_attributes_are_known(answer.text, "consent errors")
    assert_attributes_are_known(bad.text, "declaration errors")


def test_a_submitted_claims_two_forms_have_their_own_fields(client: TestClient, runtime: Runtime, logged_in) -> None:
    """Accepted and rejected both have a reason field: both had the id f-reason, so the label "Why HMRC rejected
    it" named the other form's field."""
    from giftaid.models import Claim

    declared = add_supporter(runtime, declaration=True)
    add_gift(runtime, declared, 123450, uk_today() - dt.timedelta(days=20))
    csrf = logged_in("finance")
    client.post("/staff/finance/giftaid/claims", data={"csrf_token": csrf, "through": _date(uk_today())})
    with runtime.read_session() as session:
        claim_id = session.exec(select(Claim)).one().id
    client.post(f"/staff/finance/giftaid/claims/{claim_id}/status", data={"csrf_token": csrf, "status": "submitted"})
    page = client.get(f"/staff/finance/giftaid/claims/{claim_id}")
    assert "Mark as rejected by HMRC" in page.text and "Mark as accepted by HMRC" in page.text
    assert_attributes_are_known(page.text, "submitted claim")
