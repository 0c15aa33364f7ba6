"""What adding, cancelling or confirming a Gift Aid declaration on a supporter's page changed: the page the form
leads to lists the gifts that became claimable or stopped being so (date, amount) and says whether a claim needs an
adjustment, from crm's report (the same `changed` and `adjusted_gift_ids` the JSON API gives)."""

from __future__ import annotations

import datetime as dt
import re
import uuid

from sqlmodel import select
from starlette.testclient import TestClient

from core.clock import uk_today
from core.runtime import Runtime
from crm.models import Declaration
from giftaid import service as giftaid_service
from tests.staff.conftest import add_gift, add_supporter


def _date(day: dt.date) -> str:
    return day.strftime("%d/%m/%Y")


def _declaration_form(csrf: str, method: str, made_on: dt.date) -> dict[str, str]:
    return {
        "csrf_token": csrf,
        "method": method,
        "made_on": _date(made_on),
        "scope": "past_4_years_and_future",
        "first_name": "Ann",
        "last_name": "Smith",
        "address_line1": "12 Dock Road",
        "postcode": "CT16 1AA",
        "country": "GB",
    }


def _change_panel(html: str) -> str:
    match = re.search(r'<section class="panel attention" aria-labelledby="what-changed">(.*?)</section>', html, re.S)
    assert match, "the page does not say what the change did"
    return match.group(1)


def _only_declaration(runtime: Runtime) -> Declaration:
    with runtime.read_session() as session:
        return session.exec(select(Declaration)).one()


def test_a_declaration_recorded_says_which_gifts_became_claimable(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    supporter_id = add_supporter(runtime)
    received = uk_today() - dt.timedelta(days=20)
    add_gift(runtime, supporter_id, 123450, received)
    csrf = logged_in("fundraiser")
    answer = client.post(
        f"/staff/supporters/{supporter_id}/declarations",
        data=_declaration_form(csrf, "written", uk_today()),
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"].startswith(f"/staff/supporters/{supporter_id}?change=")
    page = client.get(answer.headers["location"])
    assert page.status_code == 200
    assert "Declaration recorded." in page.text
    panel = _change_panel(page.text)
    assert panel.count('class="gift-change"') == 1
    assert _date(received) in panel and "£1,234.50" in panel and "now claimable" in panel
    assert "No adjustment to a claim is needed." in panel
    # Reloading the supporter's page later shows it no more.
    assert "what-changed" not in client.get(f"/staff/supporters/{supporter_id}").text


def test_cancelling_says_which_gifts_are_no_longer_claimable(client: TestClient, runtime: Runtime, logged_in) -> None:
    supporter_id = add_supporter(runtime, declaration=True)
    received = uk_today() - dt.timedelta(days=20)
    add_gift(runtime, supporter_id, 2500, received)
    declaration = _only_declaration(runtime)
    csrf = logged_in("fundraiser")
    page = client.get(f"/staff/supporters/{supporter_id}")
    assert f"/staff/supporters/{supporter_id}/declarations/{declaration.id}/cancel" in page.text
    answer = client.post(
        f"/staff/supporters/{supporter_id}/declarations/{declaration.id}/cancel",
        data={"csrf_token": csrf, "effective_on": _date(received - dt.timedelta(days=10)), "reason": "rang us"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    page = client.get(answer.headers["location"])
    assert "Declaration cancelled from" in page.text
    panel = _change_panel(page.text)
    assert _date(received) in panel and "£25.00" in panel
    assert "no longer claimable" in panel and "declaration cancelled" in panel
    assert "No adjustment to a claim is needed." in panel
    cancelled = _only_declaration(runtime)
    assert cancelled.cancellation_effective_on == received - dt.timedelta(days=10)
    assert cancelled.cancellation_reason == "rang us"
    # A cancelled declaration offers no cancel form any more.
    assert f"/declarations/{declaration.id}/cancel" not in page.text


def test_an_oral_declaration_confirmed_then_voided_after_a_claim_needs_an_adjustment(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    supporter_id = add_supporter(runtime)
    received = uk_today() - dt.timedelta(days=50)
    add_gift(runtime, supporter_id, 123450, received)
    csrf = logged_in("fundraiser")
    recorded = client.post(
        f"/staff/supporters/{supporter_id}/declarations",
        data=_declaration_form(csrf, "oral", uk_today() - dt.timedelta(days=60)),
    )
    panel = _change_panel(recorded.text)
    assert "still not claimable" in panel and "oral unconfirmed" in panel
    declaration = _only_declaration(runtime)

    # The written confirmation went 40 days ago: its 30 days are over, so the gift can be claimed.
    confirmed = client.post(
        f"/staff/supporters/{supporter_id}/declarations/{declaration.id}/confirm",
        data={"csrf_token": csrf, "confirmation_sent_on": _date(uk_today() - dt.timedelta(days=40))},
    )
    assert confirmed.status_code == 200, confirmed.text
    assert "its confirmation was sent on" in confirmed.text
    panel = _change_panel(confirmed.text)
    assert _date(received) in panel and "£1,234.50" in panel and "now claimable" in panel

    with runtime.unit_of_work() as uow:
        built = giftaid_service.build_claim(uow, runtime.settings, through=uk_today(), actor="finance@example.org")
        assert built.lines == 1

    # Cancelled with effect within 30 days of the confirmation: void, and the claimed gift needs an adjustment.
    voided = client.post(
        f"/staff/supporters/{supporter_id}/declarations/{declaration.id}/cancel",
        data={"csrf_token": csrf, "effective_on": _date(uk_today() - dt.timedelta(days=20))},
    )
    assert voided.status_code == 200, voided.text
    assert "It is void" in voided.text
    panel = _change_panel(voided.text)
    assert "An adjustment to a claim is needed." in panel
    assert re.search(r'class="gift-adjusted"><td>' + re.escape(_date(received)), panel)
    assert "£1,234.50" in panel and "£308.63" in panel  # the gift, and the Gift Aid the next claim takes back
    assert "No adjustment" not in panel


def test_the_report_is_shown_only_to_whoever_made_the_change(client: TestClient, runtime: Runtime, logged_in) -> None:
    supporter_id = add_supporter(runtime)
    add_gift(runtime, supporter_id, 1000, uk_today() - dt.timedelta(days=5))
    csrf = logged_in("fundraiser")
    answer = client.post(
        f"/staff/supporters/{supporter_id}/declarations",
        data=_declaration_form(csrf, "written", uk_today()),
        follow_redirects=False,
    )
    location = answer.headers["location"]
    tampered = location.replace("change=", "change=x")
    assert "what-changed" not in client.get(tampered).text
    other = add_supporter(runtime, "Bob", "Jones", "bob@example.org", "N1 9GU")
    assert "what-changed" not in client.get(location.replace(str(supporter_id), str(other))).text
    logged_in("finance")
    page = client.get(location)
    assert page.status_code == 200 and "what-changed" not in page.text


def test_cancel_and_confirm_refuse_bad_input_and_change_nothing(
    client: TestClient, runtime: Runtime, logged_in
) -> None:
    supporter_id = add_supporter(runtime, declaration=True)
    other_id = add_supporter(runtime, "Bob", "Jones", "bob@example.org", "N1 9GU")
    declaration = _only_declaration(runtime)
    csrf = logged_in("fundraiser")
    cancel = f"/staff/supporters/{supporter_id}/declarations/{declaration.id}/cancel"
    assert client.post(cancel, data={"csrf_token": "forged", "effective_on": _date(uk_today())}).status_code == 403
    bad_date = client.post(cancel, data={"csrf_token": csrf, "effective_on": "31/02/2025"})
    assert bad_date.status_code == 400 and "There is a problem" in bad_date.text and "real date" in bad_date.text
    assert 'id="f-effective_on"' in bad_date.text  # the error summary's link leads to the field
    too_early = client.post(cancel, data={"csrf_token": csrf, "effective_on": "01/01/2024"})
    assert too_early.status_code == 400 and "On or after the day the declaration was made" in too_early.text
    # Someone else's declaration through this supporter's address.
    elsewhere = client.post(
        f"/staff/supporters/{other_id}/declarations/{declaration.id}/cancel",
        data={"csrf_token": csrf, "effective_on": _date(uk_today())},
    )
    assert elsewhere.status_code == 404
    missing = client.post(
        f"/staff/supporters/{supporter_id}/declarations/{uuid.uuid4()}/cancel",
        data={"csrf_token": csrf, "effective_on": _date(uk_today())},
    )
    assert missing.status_code == 404
    # Only a spoken declaration waits for a confirmation letter.
    not_oral = client.post(
        f"/staff/supporters/{supporter_id}/declarations/{declaration.id}/confirm",
        data={"csrf_token": csrf, "confirmation_sent_on": _date(uk_today())},
    )
    assert not_oral.status_code == 400 and "oral declaration" in not_oral.text
    unchanged = _only_declaration(runtime)
    assert unchanged.cancelled_at is None and unchanged.confirmation_sent_on is None
    # Cancelling twice: the second is refused on the form.
    assert client.post(cancel, data={"csrf_token": csrf, "effective_on": _date(uk_today())}).status_code == 200
    again = client.post(cancel, data={"csrf_token": csrf, "effective_on": _date(uk_today())})
    assert again.status_code == 400 and "already cancelled" in again.text
