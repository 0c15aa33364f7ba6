"""End to end in headless Chromium against a live uvicorn server: each role logs in (with its TOTP code where
required), a fundraiser finds a supporter, opens the history, records a declaration and is refused the Gift Aid
claim; finance builds and downloads a claim; admin sees users, tokens and the audit log; the pages work on a
phone-sized screen and from the keyboard. Screenshots go to tests/artifacts/screenshots/ (gitignored)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from sqlmodel import select

from core.clock import uk_today
from crm.models import Declaration
from giftaid.models import Claim
from tests.staff.conftest import LiveServer, StaffAccount, add_gift, add_supporter, browser_log_in
from tests.staff.test_regular_gift_pages import add_regular_gift

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_fundraiser_finds_a_supporter_records_a_declaration_and_is_refused_the_claim(
    browser_page: Any, live_server: LiveServer, staff_accounts: dict[str, StaffAccount]
) -> None:
    page = browser_page
    supporter_id = add_supporter(live_server.runtime, history=60)
    add_supporter(live_server.runtime, "Bob", "Jones", "bob@example.org", "N1 9GU")
    page.goto("/staff/login")
    live_server.screenshot(page, "01-login")
    browser_log_in(page, staff_accounts["fundraiser"])
    live_server.screenshot(page, "02-start")

    page.get_by_label("Find a supporter by name, email or postcode").fill("smith")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**/staff/supporters?q=smith")
    assert page.get_by_role("link", name=re.compile("Ann Smith")).count() == 1
    assert page.get_by_text("Jones").count() == 0
    live_server.screenshot(page, "03-search")

    page.get_by_role("link", name=re.compile("Ann Smith")).click()
    page.wait_for_url(f"**/staff/supporters/{supporter_id}")
    assert page.get_by_role("heading", name="Gift Aid declarations").is_visible()
    live_server.screenshot(page, "04-supporter")

    page.get_by_role("link", name=re.compile("The full history")).click()
    page.wait_for_url(f"**/staff/supporters/{supporter_id}/history")
    assert page.locator(".timeline-item").count() == 50
    # Keyset paging: an item arriving meanwhile is not shown again on the older page (61 items: 60 and the consent).
    add_supporter_items(live_server.runtime, supporter_id)
    page.get_by_role("link", name=re.compile("Older")).click()
    page.wait_for_url("**before=*")
    assert page.locator(".timeline-item").count() == 11
    page.get_by_role("link", name=re.compile("Newer")).click()
    page.wait_for_url("**after=*")
    assert page.locator(".timeline-item").count() == 50
    assert page.get_by_role("link", name=re.compile("Newer")).count() == 1  # the item that arrived
    page.get_by_label("Show").select_option("gift")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**type=gift")
    assert page.locator(".timeline-item").count() == 30
    assert page.locator(".timeline-item .amount").first.inner_text().startswith("£")
    live_server.screenshot(page, "05-history")

    received = uk_today() - dt.timedelta(days=20)
    add_gift(live_server.runtime, supporter_id, 123450, received)
    page.goto(f"/staff/supporters/{supporter_id}")
    page.get_by_text("Record an oral or paper declaration").click()
    page.get_by_label(re.compile("Spoken")).check()
    page.get_by_label("Date it was made").fill(uk_today().strftime("%d/%m/%Y"))
    page.get_by_label("Which gifts it covers").select_option("past_4_years_and_future")
    page.get_by_role("button", name="Record declaration").click()
    page.wait_for_url(re.compile(r".*done=.*"))
    assert "confirmation letter is on its way" in page.locator(".notice").inner_text()
    assert page.get_by_text("waiting for its confirmation letter").is_visible()
    # What it changed for Gift Aid: the gift waits for the confirmation letter; no claim needs adjusting.
    assert page.get_by_role("heading", name="What this changed for Gift Aid").is_visible()
    changed = page.locator("tr.gift-change")
    assert changed.count() == 1
    assert received.strftime("%d/%m/%Y") in changed.inner_text() and "£1,234.50" in changed.inner_text()
    assert "still not claimable" in changed.inner_text()
    assert page.get_by_text("No adjustment to a claim is needed.").is_visible()
    live_server.screenshot(page, "06-declaration-recorded")
    with live_server.runtime.read_session() as session:
        declaration = session.exec(select(Declaration)).one()
        assert (declaration.method, declaration.recorded_by) == ("oral", "fundraiser@example.org")

    # Cancelled before its confirmation letter: void, and the page says so.
    page.locator("summary", has_text="Cancel the declaration made").click()
    page.get_by_label("Why").fill("changed their mind")
    recorded_url = page.url
    page.get_by_role("button", name="Cancel this declaration").click()
    # The notice rides on the address sealed (signed), not as words: wait for the next page's address.
    page.wait_for_url(lambda url: url != recorded_url and "done=" in url)
    assert "It is void" in page.locator(".notice").inner_text()
    assert page.get_by_role("heading", name="What this changed for Gift Aid").is_visible()
    assert "declaration cancelled" in page.locator("tr.gift-change").inner_text()
    live_server.screenshot(page, "06b-declaration-cancelled")

    # The donor rings to stop their monthly gift: one click behind a disclosure, then the page says what happens.
    add_regular_gift(live_server.runtime, supporter_id)
    page.goto(f"/staff/supporters/{supporter_id}")
    page.locator("summary", has_text="Cancel").filter(has_text="£12.50").click()
    before = page.url
    page.get_by_role("button", name="Cancel this monthly gift").click()
    page.wait_for_url(lambda url: url != before and "done=" in url)
    assert "GoCardless is being told to take no more payments" in page.locator(".notice").inner_text()
    assert page.get_by_text("cancellation asked for by fundraiser@example.org").is_visible()
    live_server.screenshot(page, "06c-regular-gift-cancelling")

    response = page.goto("/staff/finance/giftaid")
    assert response is not None and response.status == 403
    assert page.get_by_role("heading", name="Not allowed").is_visible()
    live_server.screenshot(page, "07-fundraiser-refused-claim")
    assert page.get_by_role("link", name="Gift Aid").count() == 0  # not offered in the menu either


def test_finance_builds_and_downloads_a_claim(
    browser_page: Any, live_server: LiveServer, staff_accounts: dict[str, StaffAccount], tmp_path: Any
) -> None:
    page = browser_page
    declared = add_supporter(live_server.runtime, declaration=True)
    add_gift(live_server.runtime, declared, 123450, uk_today() - dt.timedelta(days=15))
    undeclared = add_supporter(live_server.runtime, "Bob", "Jones", "bob@example.org", "N1 9GU")
    add_gift(live_server.runtime, undeclared, 2500, uk_today() - dt.timedelta(days=15))

    page.goto("/staff/login")
    page.get_by_label("Email address").fill(staff_accounts["finance"].email)
    page.get_by_label("Password").fill(staff_accounts["finance"].password)
    page.get_by_role("button", name="Log in").click()  # no code: refused
    page.get_by_text("The email, password or code is wrong.").first.wait_for()  # the answer to the POST
    assert page.get_by_text("The email, password or code is wrong.").first.is_visible()
    browser_log_in(page, staff_accounts["finance"])

    page.get_by_role("link", name="Gift Aid").first.click()
    page.wait_for_url("**/staff/finance/giftaid")
    assert page.get_by_text("£308.63").is_visible()
    assert page.get_by_text("no declaration").first.is_visible()
    live_server.screenshot(page, "08-giftaid-dashboard")

    page.get_by_role("button", name="Build claim").click()
    page.wait_for_url(re.compile(r".*/staff/finance/giftaid/claims/[0-9a-f-]+\?done=.*"))
    assert "Claim built: 1 line" in page.locator(".notice").inner_text()
    live_server.screenshot(page, "09-claim")

    with page.expect_download() as ods_download:
        page.get_by_role("button", name=re.compile(r"Gift Aid schedule \(\.ods\)")).click()
    ods_path = tmp_path / ods_download.value.suggested_filename
    ods_download.value.save_as(ods_path)
    assert ods_path.suffix == ".ods" and ods_path.read_bytes()[:2] == b"PK"
    with page.expect_download() as xml_download:
        page.get_by_role("button", name=re.compile(r"Charities Online message \(\.xml\)")).click()
    xml_path = tmp_path / xml_download.value.suggested_filename
    xml_download.value.save_as(xml_path)
    assert b"1234.50" in xml_path.read_bytes()

    page.locator("summary", has_text="Mark as submitted to HMRC").click()
    page.get_by_role("button", name="Mark as submitted to HMRC").click()
    page.wait_for_url(re.compile(r".*done=.*"))
    assert page.locator(".facts .status").first.inner_text() == "submitted"
    with live_server.runtime.read_session() as session:
        assert session.exec(select(Claim)).one().status == "submitted"

    page.get_by_role("link", name="Payouts").first.click()
    page.wait_for_url("**/staff/finance/payouts")
    live_server.screenshot(page, "10-payouts")


def test_admin_logs_in_with_totp_and_manages_tokens(
    browser_page: Any, live_server: LiveServer, staff_accounts: dict[str, StaffAccount]
) -> None:
    page = browser_page
    browser_log_in(page, staff_accounts["admin"])
    page.get_by_role("link", name="Users").first.click()
    # `is_visible` does not wait: on a busy machine it looked before the users page had loaded.
    page.wait_for_url("**/staff/admin/users")
    assert page.get_by_role("cell", name="finance@example.org", exact=True).is_visible()
    live_server.screenshot(page, "11-admin-users")

    page.get_by_role("link", name="API tokens").first.click()
    page.get_by_label("What it is for").fill("accounts export")
    page.get_by_role("button", name="Create token").click()
    token = page.locator("#new-token").inner_text()
    assert token.startswith("gvg_")
    page.goto("/staff/admin/tokens")
    assert page.locator("#new-token").count() == 0  # shown once, never again
    assert page.get_by_text(token).count() == 0
    page.get_by_role("button", name=re.compile("Revoke")).click()
    assert "Revoked" in page.locator(".notice").inner_text()

    page.get_by_role("link", name="Audit log").first.click()
    page.get_by_text("create api token").first.wait_for()  # the audit page, once loaded
    assert page.get_by_text("create api token").first.is_visible()
    live_server.screenshot(page, "12-audit-log")


def test_phone_sized_screen_and_keyboard(
    chromium: Any, live_server: LiveServer, staff_accounts: dict[str, StaffAccount]
) -> None:
    supporter_id = add_supporter(live_server.runtime, history=5, declaration=True)
    context = chromium.new_context(base_url=live_server.url, viewport={"width": 375, "height": 740}, is_mobile=True)
    page = context.new_page()
    try:
        page.goto("/staff/login")
        fundraiser = staff_accounts["fundraiser"]
        # Keyboard only: the skip link comes first, then the form in order.
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        page.get_by_label("Email address").focus()
        page.keyboard.type(fundraiser.email)
        page.keyboard.press("Tab")
        page.keyboard.type(fundraiser.password)
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline == "solid"  # focus is visible
        page.keyboard.press("Enter")
        page.wait_for_url("**/staff/")
        page.goto(f"/staff/supporters/{supporter_id}")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow}px wider than a phone"
        live_server.screenshot(page, "13-supporter-phone")
    finally:
        context.close()


def add_supporter_items(runtime: Any, supporter_id: Any) -> None:
    """One newer item, as a late webhook or a colleague's note would add while the history is open."""
    from crm import service as crm_service

    with runtime.unit_of_work() as uow:
        crm_service.record_history(
            uow, supporter_id, type="note", summary="Arrived meanwhile", at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
        )
