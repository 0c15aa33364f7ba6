"""Every route the application serves, walked with every role: the documented role table holds on each.

The JSON API's table is the one its description gives ("Roles: ..." on each operation, giving/openapi.py); the
staff pages' is docs/staff-pages.md ("Pages and who may use them"), written out below. A route that appears in
neither fails the test, so a new route cannot be added without saying who may use it.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from core.models import StaffRole
from core.runtime import Runtime
from giving.openapi import document
from tests.crm.helpers import staff_token
from tests.staff.conftest import StaffAccount, log_in

ROLES = [role.value for role in StaffRole]
EVERY = {"fundraiser", "finance", "admin"}
KEEPERS = {"fundraiser", "finance", "admin"}
FINANCE = {"finance", "admin"}
MERGERS = {"fundraiser", "admin"}
ADMIN = {"admin"}

# docs/staff-pages.md, "Pages and who may use them" (admin may do everything).
STAFF_PAGES: dict[tuple[str, str], set[str]] = {
    ("GET", "/staff/"): EVERY,
    ("GET", "/staff/supporters"): EVERY,
    ("GET", "/staff/supporters/{supporter_id}"): EVERY,
    ("GET", "/staff/supporters/{supporter_id}/history"): EVERY,
    ("POST", "/staff/supporters/{supporter_id}/notes"): KEEPERS,
    ("POST", "/staff/supporters/{supporter_id}/consents"): KEEPERS,
    ("POST", "/staff/supporters/{supporter_id}/declarations"): KEEPERS,
    ("POST", "/staff/supporters/{supporter_id}/declarations/{declaration_id}/cancel"): KEEPERS,
    ("POST", "/staff/supporters/{supporter_id}/declarations/{declaration_id}/confirm"): KEEPERS,
    ("POST", "/staff/supporters/{supporter_id}/documents/{document_id}/resend"): KEEPERS,
    ("POST", "/staff/supporters/{supporter_id}/regular-gifts/{regular_gift_id}/cancel"): KEEPERS,
    ("GET", "/staff/supporters/{supporter_id}/merge"): MERGERS,
    ("POST", "/staff/supporters/{supporter_id}/merge"): MERGERS,
    ("GET", "/staff/finance/giftaid"): FINANCE,
    ("POST", "/staff/finance/giftaid/claims"): FINANCE,
    ("GET", "/staff/finance/giftaid/claims/{claim_id}"): FINANCE,
    ("POST", "/staff/finance/giftaid/claims/{claim_id}/schedule.ods"): FINANCE,
    ("POST", "/staff/finance/giftaid/claims/{claim_id}/claim.xml"): FINANCE,
    ("POST", "/staff/finance/giftaid/claims/{claim_id}/status"): FINANCE,
    ("GET", "/staff/finance/payouts"): FINANCE,
    ("GET", "/staff/finance/payouts/{payout_id}"): FINANCE,
    ("GET", "/staff/finance/instalments"): FINANCE,
    ("GET", "/staff/finance/shop"): FINANCE,
    ("GET", "/staff/admin/users"): ADMIN,
    ("POST", "/staff/admin/users"): ADMIN,
    ("POST", "/staff/admin/users/{user_id}"): ADMIN,
    ("GET", "/staff/admin/tokens"): ADMIN,
    ("POST", "/staff/admin/tokens"): ADMIN,
    ("POST", "/staff/admin/tokens/{token_id}/revoke"): ADMIN,
    ("GET", "/staff/admin/audit"): ADMIN,
    ("POST", "/staff/supporters/{supporter_id}/export"): ADMIN,
    ("GET", "/staff/supporters/{supporter_id}/erase"): ADMIN,
    ("POST", "/staff/supporters/{supporter_id}/erase"): ADMIN,
}
# Open to anyone: the login mechanism itself (logout needs a session; it is walked on its own below).
STAFF_OPEN = {
    ("GET", "/staff/login"),
    ("POST", "/staff/login"),
    ("GET", "/staff/forgot-password"),
    ("POST", "/staff/forgot-password"),
    ("GET", "/staff/reset-password"),
    ("POST", "/staff/reset-password"),
    ("POST", "/staff/logout"),
    ("GET", "/staff/{rest:path}"),  # the "no such page" page
    ("POST", "/staff/{rest:path}"),
}


def routed(routes: list[Any], prefix: str = "") -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for route in routes:
        if isinstance(route, Mount):
            found += routed(list(route.routes or []), prefix + route.path)
        elif isinstance(route, Route):
            found += [(method, prefix + route.path) for method in route.methods or () if method in ("GET", "POST")]
    return found


def concrete(path: str) -> str:
    """The path with a fresh id in each parameter (nothing has that id: a role that may gets a 404 or a 400)."""
    parts = [str(uuid.uuid4()) if part.startswith("{") else part for part in path.split("/")]
    return "/".join(parts)


def api_roles() -> dict[tuple[str, str], set[str]]:
    table = {}
    for path, operations in document()["paths"].items():
        for method, operation in operations.items():
            described = str(operation.get("description", ""))
            if "Roles: " in described:
                roles = described.split("Roles: ", 1)[1].split(".", 1)[0]
                table[(method.upper(), path)] = {role.strip() for role in roles.split(",")}
    return table


# docs/staff-access.md: finance does not merge (giving.merge.MERGERS); the API description says "every role".
MERGE_ROUTES = {("GET", "/api/supporters/{supporter_id}/merge"), ("POST", "/api/supporters/{supporter_id}/merge")}
# Found by this walk, in files outside this review (see its report): a role that may not is told 400, not 403,
# because the endpoint reads its query before `require_staff`.
READS_BEFORE_ROLE_CHECK = {
    ("GET", "/api/shop/partner-statement", "fundraiser"),
    ("GET", "/api/supporters/{supporter_id}/merge", "finance"),
}


def api_walk(runtime: Runtime, client: TestClient) -> list[tuple[str, str, str, object]]:
    """Every API route with no token and with each role's: what did not answer as the role table says."""
    table = api_roles()
    for route in MERGE_ROUTES:
        table[route] = MERGERS
    routes = [(m, p) for m, p in routed(client.app.routes) if p.startswith("/api/") and p != "/api/openapi.json"]  # type: ignore[attr-defined]
    assert routes
    undocumented = [route for route in routes if route not in table]
    assert undocumented == [], "routes whose roles the API description does not give"
    tokens = {role: staff_token(runtime, role) for role in ROLES}
    wrong: list[tuple[str, str, str, object]] = []
    for method, path in routes:
        url = concrete(path)
        anonymous = client.request(method, url, json={})
        if anonymous.status_code != 401:
            wrong.append((method, path, "anonymous", anonymous.status_code))
        for role in ROLES:
            answer = client.request(method, url, json={}, headers=tokens[role])
            allowed = role in table[(method, path)]
            if (allowed and answer.status_code in (401, 403)) or (not allowed and answer.status_code != 403):
                wrong.append((method, path, role, answer.status_code))
    return wrong


def test_every_api_route_answers_each_role_as_documented(runtime: Runtime, client: TestClient) -> None:
    wrong = [w for w in api_walk(runtime, client) if w[:3] not in READS_BEFORE_ROLE_CHECK]
    assert wrong == [], wrong


def test_a_role_that_may_not_is_told_403_whatever_its_query(runtime: Runtime, client: TestClient) -> None:
    wrong = [w[:3] for w in api_walk(runtime, client)]
    assert not READS_BEFORE_ROLE_CHECK & set(wrong)


def test_the_api_description_gives_the_merge_endpoints_roles() -> None:
    table = api_roles()
    assert {route: table[route] for route in MERGE_ROUTES} == dict.fromkeys(MERGE_ROUTES, MERGERS)


def test_every_staff_page_answers_each_role_as_the_page_table_says(
    runtime: Runtime, client: TestClient, staff_accounts: dict[str, StaffAccount]
) -> None:
    routes = [(m, p) for m, p in routed(client.app.routes) if p.startswith("/staff/")]  # type: ignore[attr-defined]
    unlisted = [route for route in routes if route not in STAFF_PAGES and route not in STAFF_OPEN]
    assert unlisted == [], "staff routes missing from docs/staff-pages.md's role table"
    wrong = []
    client.cookies.clear()
    for (method, path), _ in STAFF_PAGES.items():
        answer = client.request(method, concrete(path), data={}, follow_redirects=False)
        expected = 303 if method == "GET" else 401
        if answer.status_code != expected or (method == "GET" and "/staff/login" not in answer.headers["location"]):
            wrong.append((method, path, "anonymous", answer.status_code))
    for role in ROLES:
        client.cookies.clear()
        csrf = log_in(client, staff_accounts[role])
        for (method, path), allowed_roles in STAFF_PAGES.items():
            data = {"csrf_token": csrf} if method == "POST" else None
            answer = client.request(method, concrete(path), data=data, follow_redirects=False)
            allowed = role in allowed_roles
            if (allowed and answer.status_code in (401, 403)) or (not allowed and answer.status_code != 403):
                wrong.append((method, path, role, answer.status_code))
            if answer.status_code == 303 and "/staff/login" in answer.headers.get("location", ""):
                wrong.append((method, path, role, "logged out"))
    assert wrong == [], wrong
