"""The OpenAPI 3.1 description of every JSON endpoint, served at `GET /api/openapi.json`.

Written here as one document rather than generated from the routes: the routes are plain Starlette and belong to
their packages, and the contract (shared/docs/contract.md) is what callers rely on. `tests/fuzz/test_openapi.py`
keeps it true: every route of the app that answers JSON is described, every described path is routed, and
schemathesis checks each response against its schema with every role's token.

Schemas list the fields the contract fixes as required and allow more (extra fields are the packages' to add).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from core.http import JSON

Schema = dict[str, Any]

TIMESTAMP: Schema = {
    "type": "string",
    "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$",
    "description": "UTC, YYYY-MM-DDTHH:MM:SSZ",
}
DATE: Schema = {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
UUID: Schema = {"type": "string", "format": "uuid"}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None, **extra: Any) -> Schema:
    return {
        "type": "object",
        "required": sorted(required),
        "properties": {**required, **(optional or {})},
        **extra,
    }


def items_of(schema: Schema, *, paged: bool = False) -> Schema:
    optional = {"next": nullable({"type": "string"})} if paged else None
    return obj({"items": {"type": "array", "items": schema}}, optional)


MONEY = obj(
    {
        "amount": {"type": "integer", "description": "minor units (pence)"},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
    },
    additionalProperties=False,
)

ERROR = obj(
    {
        "error": {"type": "string", "description": "a stable code, e.g. NotFound, Forbidden, ValidationFailed"},
        "detail": {"type": "string", "description": "words for a person"},
    },
)

ADDRESS = obj(
    {},
    {
        "title": nullable({"type": "string", "maxLength": 4}),
        "first_name": {"type": "string"},
        "last_name": {"type": "string"},
        "address_line1": nullable({"type": "string"}),
        "address_line2": nullable({"type": "string"}),
        "town": nullable({"type": "string"}),
        "postcode": nullable({"type": "string"}),
        "country": {"type": "string", "pattern": "^[A-Z]{2}$"},
    },
)

TOTALS = obj(
    {
        "donated": ref("Money"),
        "gift_aid_claimable": ref("Money"),
        "gift_aid_claimed": ref("Money"),
        "purchases": ref("Money"),
        "regular_gifts": {"type": "integer", "minimum": 0},
    }
)

SUPPORTER = obj(
    {"id": UUID},
    {
        "email": nullable({"type": "string"}),
        "first_name": nullable({"type": "string"}),
        "last_name": nullable({"type": "string"}),
        "created_at": TIMESTAMP,
        "totals": ref("SupporterTotals"),
    },
)

PROVIDER_IDS = {
    "type": "object",
    "additionalProperties": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "description": "every id the provider gave this item (checkout_session, payment_intent, charge, invoice, ...)",
}

HISTORY_ITEM = obj(
    {
        "at": TIMESTAMP,
        "type": {
            "type": "string",
            "description": "gift, refund, regular_gift_started, regular_gift_cancelled, payment_failed, declaration, "
            "consent, receipt, purchase, merged, ...",
        },
        "summary": {"type": "string"},
    },
    {
        "amount": nullable(ref("Money")),
        "gift_id": nullable(UUID),
        "refund_id": nullable(UUID),
        "order_id": nullable(UUID),
        "dispute_id": nullable(UUID),
        "provider_ids": PROVIDER_IDS,
    },
)

DECLARATION_METHOD = {"type": "string", "enum": ["oral", "written", "online"]}
DECLARATION_SCOPE = {"type": "string", "enum": ["this_gift", "future", "past_4_years_and_future", "period"]}

DECLARATION = obj(
    {"id": UUID},
    {
        "supporter_id": UUID,
        "method": DECLARATION_METHOD,
        "scope": DECLARATION_SCOPE,
        "made_on": DATE,
        "start": nullable(DATE),
        "end": nullable(DATE),
        "gift_id": nullable(UUID),
        "confirmation_sent_on": nullable(DATE),
        "cancelled_on": nullable(DATE),
        "effective_on": nullable(DATE),
    },
)

NEW_DECLARATION = obj(
    {"method": DECLARATION_METHOD, "made_on": DATE, "scope": DECLARATION_SCOPE},
    {
        "start": DATE,
        "end": DATE,
        "gift_id": UUID,
        "confirmation_sent_on": DATE,
        "address": ref("Address"),
    },
)

HELD_BACK = obj(
    {
        "gift_id": UUID,
        "reason": {
            "type": "string",
            "description": "starts with missing_house, invalid_postcode, no_declaration, declaration_cancelled, "
            "oral_unconfirmed, refunded, out_of_time or not_a_donation, then words",
        },
    }
)

CLAIM = obj(
    {"id": UUID},
    {
        "claim_id": UUID,
        "through": DATE,
        "status": {"type": "string"},
        "lines": {"type": "integer", "minimum": 0},
        "total": ref("Money"),
        "gift_aid": ref("Money"),
        "adjustment": ref("Money"),
        "held_back": {"type": "array", "items": ref("HeldBack")},
        "created_at": TIMESTAMP,
    },
)

PAYOUT_LINE = obj(
    {"kind": {"type": "string", "description": "gift, order, refund, dispute, fee, ..."}, "amount": ref("Money")},
    {
        "source_id": nullable({"type": "string", "description": "the provider's id of its source (ch_, re_, PM...)"}),
        "gift_id": nullable(UUID),
        "order_id": nullable(UUID),
        "refund_id": nullable(UUID),
        "dispute_id": nullable(UUID),
    },
)

PAYOUT = obj(
    {
        "id": UUID,
        "provider": {"type": "string", "enum": ["stripe", "gocardless"]},
        "provider_payout_id": {"type": "string"},
        "amount": ref("Money"),
        "status": {"type": "string", "enum": ["reconciled", "unreconciled"]},
        "discrepancy": ref("Money"),
    },
    {"lines": {"type": "array", "items": ref("PayoutLine")}, "arrival_date": nullable(DATE)},
)

READINESS = obj(
    {
        "database": {"type": "string", "enum": ["ok", "unavailable"]},
        "broker": {"type": "string", "enum": ["ok", "unavailable"]},
        "pending_events": {"type": "integer", "minimum": 0},
        "pending_jobs": {"type": "integer", "minimum": 0},
    }
)

SCHEMAS: dict[str, Schema] = {
    "Error": ERROR,
    "Money": MONEY,
    "Address": ADDRESS,
    "Supporter": SUPPORTER,
    "SupporterTotals": TOTALS,
    "HistoryItem": HISTORY_ITEM,
    "Declaration": DECLARATION,
    "NewDeclaration": NEW_DECLARATION,
    "HeldBack": HELD_BACK,
    "Claim": CLAIM,
    "Payout": PAYOUT,
    "PayoutLine": PAYOUT_LINE,
    "Readiness": READINESS,
}


# --- operations ---------------------------------------------------------------------------------------------------


def json_body(schema: Schema) -> Schema:
    return {"content": {"application/json": {"schema": schema}}}


def error(description: str) -> Schema:
    return {"description": description, **json_body(ref("Error"))}


STAFF_ERRORS = {
    "401": error("no valid bearer token"),
    "403": error("the token's role may not do this"),
}


def staff(
    summary: str,
    ok: Schema,
    *,
    roles: str,
    ok_status: str = "200",
    body: Schema | None = None,
    params: list[Schema] | None = None,
    errors: dict[str, str] | None = None,
) -> Schema:
    operation: Schema = {
        "summary": summary,
        "description": f"Roles: {roles}.",
        "security": [{"bearerAuth": []}],
        "responses": {
            ok_status: {"description": "ok", **json_body(ok)},
            **STAFF_ERRORS,
            **{status: error(words) for status, words in (errors or {}).items()},
        },
    }
    if params:
        operation["parameters"] = params
    if body is not None:
        operation["requestBody"] = {"required": True, **json_body(body)}
    return operation


def path_id(name: str = "id") -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": UUID}


def query(name: str, schema: Schema, description: str = "") -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


LIMIT = query("limit", {"type": "integer", "minimum": 1}, "at most this many items; `next` gives the rest")
CURSOR = query("cursor", {"type": "string"}, "from a previous page's `next`")
FUNDRAISER_UP = "fundraiser, finance, admin"
FINANCE_UP = "finance, admin"


def file_download(summary: str, media_type: str) -> Schema:
    return {
        "summary": summary,
        "description": f"Roles: {FINANCE_UP}.",
        "security": [{"bearerAuth": []}],
        "parameters": [path_id()],
        "responses": {
            "200": {"description": "the file", "content": {media_type: {"schema": {"type": "string"}}}},
            **STAFF_ERRORS,
            "404": error("no such claim"),
        },
    }


def webhook(provider: str, header: str, refused: dict[str, str]) -> Schema:
    return {
        "summary": f"{provider} event deliveries",
        "description": "Stored once each (raw body kept) and processed by a worker; the answer never waits on it.",
        "parameters": [{"name": header, "in": "header", "required": True, "schema": {"type": "string"}}],
        "requestBody": {"required": True, **json_body({"type": "object"})},
        "responses": {
            "200": {"description": "stored (or already stored, or a type we ignore)", **json_body({"type": "object"})},
            **{status: error(words) for status, words in refused.items()},
            "404": error(f"{provider} is not configured on this installation"),
            "413": error("the body is larger than 1 MB"),
            "503": error("could not be stored (the database is unavailable); the provider retries"),
        },
    }


PATHS: dict[str, Schema] = {
    "/healthz": {
        "get": {
            "summary": "The process is up",
            "responses": {"200": {"description": "up", **json_body(obj({"status": {"const": "ok"}}))}},
        }
    },
    "/readyz": {
        "get": {
            "summary": "The database and broker answer; backlog sizes",
            "responses": {
                "200": {"description": "ready", **json_body(ref("Readiness"))},
                "503": {"description": "the database is unreachable", **json_body(ref("Readiness"))},
            },
        }
    },
    "/webhooks/stripe": {
        "post": webhook("Stripe", "Stripe-Signature", {"400": "bad, missing or stale signature, or malformed body"})
    },
    "/webhooks/gocardless": {
        "post": webhook("GoCardless", "Webhook-Signature", {"400": "malformed body", "498": "bad or missing signature"})
    },
    "/api/supporters": {
        "get": staff(
            "Find supporters by exact (normalised) email or by a search",
            items_of(ref("Supporter")),
            roles=FUNDRAISER_UP,
            params=[query("email", {"type": "string"}), query("q", {"type": "string"})],
            errors={"400": "neither email nor q, or a bad value"},
        )
    },
    "/api/supporters/{id}": {
        "get": staff(
            "One supporter with totals",
            ref("Supporter"),
            roles=FUNDRAISER_UP,
            params=[path_id()],
            errors={"404": "no such supporter"},
        )
    },
    "/api/supporters/{id}/history": {
        "get": staff(
            "The supporter's history, newest first",
            items_of(ref("HistoryItem"), paged=True),
            roles=FUNDRAISER_UP,
            params=[path_id(), LIMIT, CURSOR],
            errors={"400": "a bad limit or cursor", "404": "no such supporter"},
        )
    },
    "/api/supporters/{id}/declarations": {
        "get": staff(
            "The supporter's Gift Aid declarations",
            items_of(ref("Declaration")),
            roles=FUNDRAISER_UP,
            params=[path_id()],
            errors={"404": "no such supporter"},
        ),
        "post": staff(
            "Record an oral, paper or online declaration",
            ref("Declaration"),
            roles=FUNDRAISER_UP,
            ok_status="201",
            params=[path_id()],
            body=ref("NewDeclaration"),
            errors={"400": "the declaration breaks a rule", "404": "no such supporter or gift"},
        ),
    },
    "/api/declarations/{id}/cancel": {
        "post": staff(
            "Cancel a declaration from a date",
            ref("Declaration"),
            roles=FUNDRAISER_UP,
            params=[path_id()],
            body=obj({"effective_on": DATE}, {"reason": {"type": "string"}}),
            errors={"400": "a bad date", "404": "no such declaration"},
        )
    },
    "/api/declarations/{id}/confirm": {
        "post": staff(
            "Record an oral declaration's written confirmation",
            ref("Declaration"),
            roles=FUNDRAISER_UP,
            params=[path_id()],
            body=obj({"confirmation_sent_on": DATE}),
            errors={"400": "not an oral declaration, or a bad date", "404": "no such declaration"},
        )
    },
    "/api/giftaid/claims": {
        "get": staff("Gift Aid claims", items_of(ref("Claim")), roles=FINANCE_UP),
        "post": staff(
            "Build a claim of every claimable gift received on or before `through`",
            ref("Claim"),
            roles=FINANCE_UP,
            ok_status="201",
            body=obj({"through": DATE}),
            errors={"400": "a bad date", "409": "nothing to claim"},
        ),
    },
    "/api/giftaid/claims/{id}/schedule.ods": {
        "get": file_download("The claim's HMRC schedule", "application/vnd.oasis.opendocument.spreadsheet")
    },
    "/api/giftaid/claims/{id}/claim.xml": {
        "get": file_download("The claim's Charities Online XML message", "application/xml")
    },
    "/api/payouts": {
        "get": staff(
            "Payouts, newest first",
            items_of(ref("Payout"), paged=True),
            roles=FINANCE_UP,
            params=[LIMIT, CURSOR],
            errors={"400": "a bad limit or cursor"},
        )
    },
    "/api/payouts/{id}": {
        "get": staff(
            "One payout with its lines",
            ref("Payout"),
            roles=FINANCE_UP,
            params=[path_id()],
            errors={"404": "no such payout"},
        )
    },
}


def document() -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Giving",
            "version": "1",
            "description": "Donations and supporter CRM: the staff JSON API, provider webhooks and health checks. "
            'Money is {"amount": minor units, "currency": "GBP"}; timestamps are UTC YYYY-MM-DDTHH:MM:SSZ; '
            'every error is {"error": code, "detail": words}.',
        },
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "an API token from `giving tokens create EMAIL`",
                }
            },
        },
    }


async def openapi_endpoint(request: Request) -> Response:
    return JSON(document())
