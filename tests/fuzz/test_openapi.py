"""`GET /api/openapi.json` is true: it describes every JSON route the app has (and no other), it is a valid
OpenAPI 3.1 document, and schemathesis finds no 5xx and no response that breaks its schema, calling each operation
with every role's token and with none."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from core import auth
from core.models import StaffRole, StaffUser
from core.runtime import Runtime
from crm import service as crm
from crm.models import DeclarationMethod, DeclarationScope
from crm.validation import DonorDetails
from giving.openapi import document

ROLES = ("admin", "finance", "fundraiser")
DESCRIBED_PREFIXES = ("/api/", "/webhooks/", "/healthz", "/readyz")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

schema = (
    schemathesis.openapi.from_dict(document())
    # Webhooks have their own fuzzing (test_webhook_fuzz.py: nothing unsigned gets past the signature).
    .exclude(path_regex=r"^/webhooks/")
    # These two call HMRC's gateway; the Gift Aid tests drive them against a fake one.
    .exclude(path_regex=r"/(submit|poll)$")
)


def routed(app_routes: list, prefix: str = "") -> Iterator[tuple[str, str]]:
    for route in app_routes:
        if isinstance(route, Mount):
            yield from routed(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            for method in route.methods or ():
                if method != "HEAD":
                    yield method.lower(), prefix + route.path


def test_the_document_describes_every_json_route_and_nothing_else(client: TestClient) -> None:
    routes = {
        (method, path)
        for method, path in routed(client.app.routes)  # type: ignore[attr-defined]
        if path.startswith(DESCRIBED_PREFIXES) and path != "/api/openapi.json"
    }
    described = {(method, path) for path, operations in document()["paths"].items() for method in operations}
    assert described - routes == set(), "described but not routed"
    assert routes - described == set(), "routed but not described in giving/openapi.py"


def test_the_document_is_served_and_valid(client: TestClient) -> None:
    served = client.get("/api/openapi.json")
    assert served.status_code == 200
    body = served.json()
    assert body == document()
    assert body["openapi"].startswith("3.1")
    for component in body["components"]["schemas"].values():
        jsonschema_rs.meta.validate(component)  # a valid JSON Schema (2020-12, as OpenAPI 3.1 uses)
    error = body["components"]["schemas"]["Error"]
    assert error["required"] == ["detail", "error"]
    assert body["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    for path, operations in body["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/api/"):
                assert operation["security"] == [{"bearerAuth": []}], (method, path)
                assert {"401", "403"} <= set(operation["responses"]), (method, path)


@pytest.fixture
def tokens(runtime: Runtime) -> dict[str, str]:
    """A token per role, and a supporter with a declaration and a history item so lists have something in them."""
    found: dict[str, str] = {}
    for role in ROLES:
        email = f"{role}@example.org"
        with runtime.unit_of_work() as uow:
            # Straight into the table: hashing a real password (argon2) for every test would cost seconds.
            uow.session.add(StaffUser(email=email, role=StaffRole(role), password_hash="!unusable"))
        with runtime.unit_of_work() as uow:
            found[role] = auth.create_api_token(uow, email)
    with runtime.unit_of_work() as uow:
        donor = DonorDetails(
            first_name="Amina",
            last_name="Okafor",
            email="amina@example.org",
            address_line1="10 Downing Street",
            town="London",
            postcode="SW1A 2AA",
        ).normalised(require_address=True)
        supporter = crm.find_or_create_supporter(uow, donor, source="test")
        crm.record_declaration(
            uow,
            supporter.id,
            method=DeclarationMethod.ONLINE,
            made_on=dt.date(2025, 5, 1),
            scope=DeclarationScope.PAST_4_YEARS_AND_FUTURE,
            donor=donor,
            source="test",
            wording_version="test",
            wording_text="I want to Gift Aid my donations.",
        )
    return found


@schema.parametrize()
@hypothesis_settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_answers_match_the_document_for_every_role(case, client: TestClient, tokens: dict[str, str]) -> None:
    for token in (*tokens.values(), None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        case.call_and_validate(app=client.app, headers=headers, checks=CHECKS)
