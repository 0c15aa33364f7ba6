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
from crm.models import ConsentChannel, ConsentStatus
from payments.models import OrderStatus

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

# A history item's ids at the provider, as one list (an order's `provider_ids` names each id by its kind instead).
HISTORY_PROVIDER_IDS = {
    "type": "array",
    "items": {"type": "string"},
    "description": "every id the provider gave this item (Checkout Session, payment intent, charge, invoice, refund, "
    "dispute; GoCardless payment, mandate, subscription)",
}

HISTORY_ITEM = obj(
    {
        "at": TIMESTAMP,
        "type": {
            "type": "string",
            "description": "gift, refund, regular_gift_started, regular_gift_cancelled, payment_failed, "
            "instalment_voided, instalment_written_off, instalment_paid_outside_stripe, instalment_free, declaration, "
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
        "provider_ids": HISTORY_PROVIDER_IDS,
    },
)

DECLARATION_METHOD = {"type": "string", "enum": ["oral", "written", "online"]}
DECLARATION_SCOPE = {"type": "string", "enum": ["this_gift", "future", "past_4_years_and_future", "period"]}

DECLARATION = obj(
    {"id": UUID},
    {
        "supporter_id": UUID,
        "status": {"type": "string"},
        "method": DECLARATION_METHOD,
        "scope": DECLARATION_SCOPE,
        "made_on": DATE,
        "start": nullable(DATE),
        "end": nullable(DATE),
        "gift_id": nullable(UUID),
        "postcode": nullable({"type": "string"}),
        "house": nullable({"type": "string"}),
        "confirmation_sent_on": nullable(DATE),
        "cancelled_at": nullable(TIMESTAMP),
        "cancellation_effective_on": nullable(DATE),
        "created_at": TIMESTAMP,
    },
)

ELIGIBILITY_CHANGE = obj(
    {"gift_id": UUID, "before": {"type": "string"}, "after": {"type": "string"}},
    description="a gift whose Gift Aid reason code changed (`claimable` when it can be claimed)",
)
# What a new, cancelled or confirmed declaration changed for Gift Aid (giftaid, through the composition root).
DECLARATION_CHANGED = {
    **DECLARATION,
    "properties": {
        **DECLARATION["properties"],
        "changed": {"type": "array", "items": ELIGIBILITY_CHANGE},
        "adjusted_gift_ids": {"type": "array", "items": UUID, "description": "claimed gifts now to be taken back"},
    },
}

# What crm.validation.DonorDetails takes (values are trimmed first): a title of 1 to 4 letters (a final dot is
# dropped), names of 1 to 35 characters, lines and town at most as long as their columns, a two-letter country code
# ("UK" is taken as GB, lower case too).
NEW_ADDRESS = {
    **obj(
        {
            "first_name": {"type": "string", "minLength": 1, "maxLength": 35},
            "last_name": {"type": "string", "minLength": 1, "maxLength": 35},
        },
        {
            "title": nullable({"type": "string", "pattern": r"^\s*([A-Za-z]{1,4}\.?)?\s*$"}),
            "address_line1": {"type": "string", "maxLength": 100},
            "address_line2": {"type": "string", "maxLength": 100},
            "town": {"type": "string", "maxLength": 60},
            "postcode": {"type": "string"},
            "country": {"type": "string", "pattern": r"^\s*[A-Za-z]{2}\s*$"},
        },
    ),
    "additionalProperties": False,
}

NEW_DECLARATION = {
    **obj(
        {"method": DECLARATION_METHOD, "made_on": DATE, "scope": DECLARATION_SCOPE},
        {
            "start": nullable(DATE),
            "end": nullable(DATE),
            "gift_id": nullable(UUID),
            "confirmation_sent_on": nullable(DATE),
            "address": nullable(NEW_ADDRESS),
            "wording_version": {"type": "string", "maxLength": 64},
            "wording_text": {
                "type": "string",
                "maxLength": 4000,
                "description": "the declaration's words; needed (else 400) the first time a wording_version that is "
                "not the charity's own is given",
            },
            "evidence": {"type": "object"},
        },
    ),
    "additionalProperties": False,
}

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
    {"id": UUID, "claim_id": UUID, "status": {"type": "string"}, "lines": {"type": "integer", "minimum": 0}},
    {
        "through": DATE,
        "total": ref("Money"),
        "gift_aid": ref("Money"),
        "adjustment": ref("Money"),
        "held_back": {"type": "array", "items": ref("HeldBack")},
        "files": {
            "type": "array",
            "items": {"type": "string"},
            "description": "every file to send HMRC: schedule.ods and claim.xml for a claim of one part; else "
            "schedule.ods?part=N for each schedule with lines and claim.xml?part=N for each message",
        },
        "schedule_parts": {
            "type": "array",
            "items": {"type": "integer", "minimum": 1},
            "description": "the schedule part numbers that have lines (a take-off can leave a slot empty)",
        },
        "built_at": nullable(TIMESTAMP),
    },
)

BUILT_CLAIM = obj(
    {
        "claim_id": nullable(UUID),
        "lines": {"type": "integer", "minimum": 0},
        "total": ref("Money"),
        "gift_aid": ref("Money"),
        "adjustment": ref("Money"),
        "held_back": {"type": "array", "items": ref("HeldBack")},
        "files": {"type": "array", "items": {"type": "string"}},
    }
)

PAYOUT_LINE = obj(
    {"kind": {"type": "string", "description": "gift, order, refund, dispute, fee, ..."}, "amount": ref("Money")},
    {
        "source_id": nullable({"type": "string", "description": "the provider's id of its source (ch_, re_, PM...)"}),
        "provider_line_id": nullable({"type": "string"}),
        "matched": {"type": "boolean"},
        "gift_id": UUID,
        "order_id": UUID,
        "refund_id": UUID,
        "dispute_id": UUID,
        "fee_for": {"type": "string"},
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
    {
        "lines": {"type": "array", "items": ref("PayoutLine")},
        "arrival_date": nullable(DATE),
        "reconciled_at": nullable(TIMESTAMP),
        "source": {"type": "string", "enum": ["api", "csv"]},
        "amount_from": {
            "type": "string",
            "enum": ["provider", "given", "lines"],
            "description": "given: by a file or --payout-amount; lines: nobody gave it, the sum of the lines",
        },
        "bank_amount": {**ref("Money"), "description": "what reached the bank: `amount` unless converted (`fx`)"},
        "fx": {
            **nullable(
                obj(
                    {"currency": {"type": "string"}, "estimated": {"type": "boolean"}},
                    {"amount": nullable(ref("Money")), "exchange_rate": nullable({"type": "string"})},
                )
            ),
            "description": "a GoCardless payout converted to another currency: that amount, the rate (a decimal "
            "string) and whether GoCardless has only estimated it",
        },
    },
)

ORDER = obj(
    {"id": UUID, "status": {"type": "string"}, "total": ref("Money")},
    {
        "supporter_id": UUID,
        "fulfilled": {"type": "boolean"},
        "held": {
            **nullable({"type": "string", "enum": ["no_address"]}),
            "description": "why a paid order cannot be posted: no_address (its supporter's data was erased)",
        },
        "duplicate_of": {
            **nullable(UUID),
            "description": "status duplicate_payment: the basket this payment paid for a second time (to refund)",
        },
        "goods": ref("Money"),
        "vat": ref("Money"),
        "donation": ref("Money"),
        "refunded": {**ref("Money"), "description": "all money returned on the basket (goods and donation)"},
        "goods_refunded": ref("Money"),
        "donation_refunded": ref("Money"),
        "provider_ids": PROVIDER_IDS,
        "lines": {"type": "array", "items": {"type": "object"}},
    },
)

REGULAR_GIFT = obj(
    {"id": UUID, "status": {"type": "string"}, "amount": ref("Money")},
    {
        "supporter_id": UUID,
        "interval": {"type": "string"},
        "provider": {"type": "string", "enum": ["stripe", "gocardless"]},
        "method": {"type": "string"},
        "started_at": nullable(TIMESTAMP),
        "ended_at": nullable(TIMESTAMP),
        "cancel_requested_at": nullable(TIMESTAMP),
        "cancel_requested_by": nullable({"type": "string"}),
        "provider_ids": {"type": "array", "items": {"type": "string"}},
    },
)

STOCK_ROW = obj({"sku": {"type": "string"}, "stock": {"type": "integer"}}, {"price": ref("Money")})

DOCUMENT = obj(
    {"id": UUID}, {"kind": {"type": "string"}, "reference": {"type": "string"}, "status": {"type": "string"}}
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
    "DeclarationChanged": DECLARATION_CHANGED,
    "NewDeclaration": NEW_DECLARATION,
    "HeldBack": HELD_BACK,
    "Claim": CLAIM,
    "BuiltClaim": BUILT_CLAIM,
    "Payout": PAYOUT,
    "Order": ORDER,
    "RegularGift": REGULAR_GIFT,
    "StockRow": STOCK_ROW,
    "Document": DOCUMENT,
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
    body_required: bool = True,
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
        operation["requestBody"] = {"required": body_required, **json_body(body)}
    return operation


def path_id(name: str, schema: Schema = UUID) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def query(name: str, schema: Schema, description: str = "", *, required: bool = False) -> Schema:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


LIMIT = query(
    "limit",
    {"type": "integer", "minimum": 1},
    "at most this many (a page holds at most 1000: a larger limit gets 1000); `next` has the rest",
)
CURSOR = query("cursor", {"type": "string"}, "from a previous page's `next`")
OFFSET = query("offset", {"type": "integer", "minimum": 0, "maximum": 10**9}, "from a previous page's `next`")
CONSENT_CHANNEL: Schema = {"type": "string", "enum": [channel.value for channel in ConsentChannel]}
CONSENT_STATUSES = [status.value for status in ConsentStatus]
ANY_STAFF = "fundraiser, finance, admin"
FINANCE_UP = "finance, admin"
MERGERS = "fundraiser, admin"  # giving.merge.MERGERS (an admin may do anything)
SUPPORTER_ID = path_id("supporter_id")
CLAIM_ID = path_id("claim_id")
ORDER_ID = path_id("order_id")
REGULAR_GIFT_ID = path_id("regular_gift_id")
DOCUMENT_ID = path_id("document_id")
DECLARATION_ID = path_id("declaration_id")
# A payout is named by our id or by the provider's (po_..., PO...).
PAYOUT_REF = path_id("payout_id", {"type": "string", "minLength": 1})
ANY_OBJECT: Schema = {"type": "object"}
# One line of `POST /api/orders/{id}/returns`: the order line (its id, or its SKU) and how many shirts came back.
RETURN_LINE: Schema = {
    **obj({"quantity": {"type": "integer", "minimum": 1}}, {"line_id": UUID, "sku": {"type": "string"}}),
    "anyOf": [{"required": ["line_id"]}, {"required": ["sku"]}],
}


def file_download(
    summary: str, media_type: str, *, roles: str, params: list[Schema], errors: dict[str, str] | None = None
) -> Schema:
    return {
        "summary": summary,
        "description": f"Roles: {roles}.",
        "security": [{"bearerAuth": []}],
        "parameters": params,
        "responses": {
            "200": {"description": "the file", "content": {media_type: {"schema": {"type": "string"}}}},
            **STAFF_ERRORS,
            "400": error("a bad id"),
            "404": error("not found"),
            "409": error("not ready yet, or a claim HMRC rejected"),
            **{status: error(words) for status, words in (errors or {}).items()},
        },
    }


def webhook(provider: str, header: str, refused: dict[str, str]) -> Schema:
    return {
        "summary": f"{provider} event deliveries",
        "description": "Stored once each (raw body kept) and processed by a worker; the answer never waits on it.",
        "parameters": [{"name": header, "in": "header", "required": True, "schema": {"type": "string"}}],
        "requestBody": {"required": True, **json_body({"type": "object"})},
        "responses": {
            "200": {
                "description": "stored (or already stored, or a type we ignore)",
                **json_body(obj({"received": {"type": "integer"}, "stored": {"type": "integer"}})),
            },
            **{status: error(words) for status, words in refused.items()},
            "404": error(f"{provider} is not configured on this installation"),
            "408": error("the body did not arrive in time"),
            "413": error("the body is larger than 1 MB"),
            "503": error("could not be stored (the database is unavailable); the provider retries"),
        },
    }


def body_of(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """A request body: unknown fields are refused (400), so none are allowed here."""
    return {**obj(required, optional), "additionalProperties": False}


NOT_FOUND = "not found"
BAD = "a bad id, value or body"

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
    # --- supporters (crm) ---
    "/api/supporters": {
        "get": staff(
            "Find supporters by exact (normalised) email or by a search (50 a page unless `?limit=`)",
            items_of(ref("Supporter"), paged=True),
            roles=ANY_STAFF,
            params=[query("email", {"type": "string"}), query("q", {"type": "string"}), LIMIT, OFFSET],
            errors={"400": "neither email nor q, or a bad value"},
        )
    },
    "/api/supporters/{supporter_id}": {
        "get": staff(
            "One supporter with totals",
            ref("Supporter"),
            roles=ANY_STAFF,
            params=[SUPPORTER_ID],
            errors={"404": NOT_FOUND},
        )
    },
    "/api/supporters/{supporter_id}/history": {
        "get": staff(
            "The supporter's history, newest first",
            items_of(ref("HistoryItem"), paged=True),
            roles=ANY_STAFF,
            params=[SUPPORTER_ID, LIMIT, CURSOR],
            errors={"400": "a bad limit or cursor", "404": NOT_FOUND},
        )
    },
    "/api/supporters/{supporter_id}/notes": {
        "post": staff(
            "Add a note to the history",
            ref("HistoryItem"),
            roles=ANY_STAFF,
            ok_status="201",
            params=[SUPPORTER_ID],
            body=body_of({"text": {"type": "string", "minLength": 1, "maxLength": 4000}}),
            errors={"400": BAD, "404": NOT_FOUND},
        )
    },
    "/api/supporters/{supporter_id}/interests": {
        "post": staff(
            "Record an interest (volunteering, events, ...)",
            obj({"id": UUID, "kind": {"type": "string"}}),
            roles=ANY_STAFF,
            ok_status="201",
            params=[SUPPORTER_ID],
            body=body_of(
                {
                    "kind": {
                        "type": "string",
                        "pattern": r"^\s*[A-Za-z][A-Za-z_]{1,31}\s*$",
                        "description": "a short word (letters and _), kept in lower case: volunteering, events, ...",
                    }
                },
                {"note": {"type": "string", "maxLength": 500}, "source": {"type": "string", "maxLength": 32}},
            ),
            errors={"400": BAD, "404": NOT_FOUND},
        )
    },
    "/api/supporters/{supporter_id}/consents": {
        "post": staff(
            "Record a consent granted or withdrawn",
            obj(
                {"id": UUID, "channel": CONSENT_CHANNEL, "status": {"type": "string", "enum": CONSENT_STATUSES}},
                {
                    "at": TIMESTAMP,
                    "source": {"type": "string"},
                    "wording_version": {"type": "string"},
                    "wording_text": {
                        **nullable({"type": "string"}),
                        "description": "the words the person agreed to, as kept with the consent; null when none "
                        "were kept (consents recorded before words were kept, withdrawals)",
                    },
                },
            ),
            roles=ANY_STAFF,
            ok_status="201",
            params=[SUPPORTER_ID],
            body=body_of(
                {"channel": CONSENT_CHANNEL, "status": {"type": "string", "enum": ["granted", "withdrawn"]}},
                {
                    "wording_version": {"type": "string", "maxLength": 64},
                    "wording_text": {
                        "type": "string",
                        "maxLength": 4000,
                        "description": "the words read or shown to them; without them, the words last kept under "
                        "wording_version, if any",
                    },
                    "note": {"type": "string", "maxLength": 500},
                },
            ),
            errors={"400": BAD, "404": NOT_FOUND},
        )
    },
    "/api/supporters/{supporter_id}/declarations": {
        "get": staff(
            "The supporter's Gift Aid declarations",
            items_of(ref("Declaration")),
            roles=ANY_STAFF,
            params=[SUPPORTER_ID],
            errors={"404": NOT_FOUND},
        ),
        "post": staff(
            "Record an oral, paper or online declaration, with the gifts it makes claimable",
            ref("DeclarationChanged"),
            roles=ANY_STAFF,
            ok_status="201",
            params=[SUPPORTER_ID],
            body=ref("NewDeclaration"),
            errors={"400": "the declaration breaks a rule", "404": "no such supporter or gift"},
        ),
    },
    "/api/supporters/{supporter_id}/merge": {
        "get": staff(
            "What merging this supporter into another would move (changes nothing)",
            ANY_OBJECT,
            roles=MERGERS,
            params=[SUPPORTER_ID, query("into", UUID, "the supporter who remains", required=True)],
            errors={"400": BAD, "404": NOT_FOUND, "409": "these two cannot be merged"},
        ),
        "post": staff(
            "Merge this supporter into another",
            obj({"survivor": ref("Supporter")}),
            roles=MERGERS,
            params=[SUPPORTER_ID],
            body=body_of({"into": UUID}),
            errors={"400": BAD, "404": NOT_FOUND, "409": "these two cannot be merged"},
        ),
    },
    "/api/declarations/{declaration_id}/cancel": {
        "post": staff(
            "Cancel a declaration from a date, with what it changes for claimed and unclaimed gifts",
            ref("DeclarationChanged"),
            roles=ANY_STAFF,
            params=[DECLARATION_ID],
            body=body_of({"effective_on": DATE}, {"reason": {"type": "string", "maxLength": 200}}),
            errors={"400": BAD, "404": NOT_FOUND, "409": "already cancelled"},
        )
    },
    "/api/declarations/{declaration_id}/confirm": {
        "post": staff(
            "Record an oral declaration's written confirmation, with the gifts it makes claimable",
            ref("DeclarationChanged"),
            roles=ANY_STAFF,
            params=[DECLARATION_ID],
            body=body_of({"confirmation_sent_on": DATE}),
            errors={"400": "not an oral declaration, or a bad date", "404": NOT_FOUND, "409": "not oral"},
        )
    },
    "/api/review-items": {
        "get": staff(
            "Things for a person to look at (possible duplicates, arrears, ...)",
            items_of(obj({"id": UUID, "kind": {"type": "string"}}), paged=True),
            roles=ANY_STAFF,
            params=[query("status", {"type": "string", "enum": ["open", "all"]}), LIMIT, CURSOR],
            errors={"400": "a bad limit or cursor"},
        )
    },
    "/api/review-items/{item_id}/resolve": {
        "post": staff(
            "Mark a review item resolved",
            obj({"id": UUID, "kind": {"type": "string"}}),
            roles=ANY_STAFF,
            params=[path_id("item_id")],
            errors={"404": NOT_FOUND},
        )
    },
    # --- Gift Aid ---
    "/api/giftaid/claims": {
        "get": staff("Gift Aid claims", items_of(ref("Claim")), roles=FINANCE_UP),
        "post": staff(
            "Build a claim of every claimable gift received on or before `through`",
            ref("BuiltClaim"),
            roles=FINANCE_UP,
            ok_status="201",
            body=body_of({"through": DATE}),
            errors={"400": "a bad date"},
        ),
    },
    "/api/giftaid/claims/{claim_id}": {
        "get": staff("One claim", ref("Claim"), roles=FINANCE_UP, params=[CLAIM_ID], errors={"404": NOT_FOUND})
    },
    "/api/giftaid/claims/{claim_id}/schedule.ods": {
        "get": file_download(
            "The claim's HMRC schedule (`?part=N` when it needs several)",
            "application/vnd.oasis.opendocument.spreadsheet",
            roles=FINANCE_UP,
            params=[CLAIM_ID, query("part", {"type": "integer", "minimum": 1})],
        )
    },
    "/api/giftaid/claims/{claim_id}/claim.xml": {
        "get": file_download(
            "The claim's Charities Online XML message",
            "application/xml",
            roles=FINANCE_UP,
            params=[CLAIM_ID, query("part", {"type": "integer", "minimum": 1})],
        )
    },
    "/api/giftaid/claims/{claim_id}/status": {
        "post": staff(
            "Record what happened to a claim (submitted, accepted, rejected, paid)",
            ref("Claim"),
            roles=FINANCE_UP,
            params=[CLAIM_ID],
            body=body_of(
                {"status": {"type": "string", "enum": ["submitted", "accepted", "rejected", "paid"]}},
                {
                    "reason": {"type": "string", "maxLength": 500},
                    "amount": {"anyOf": [ref("Money"), {"type": "integer"}, {"type": "null"}]},
                    "paid_on": nullable(DATE),
                },
            ),
            errors={"400": BAD, "404": NOT_FOUND, "409": "not allowed from the claim's status"},
        )
    },
    "/api/giftaid/claims/{claim_id}/submit": {
        "post": staff(
            "Send the claim to HMRC's Transaction Engine",
            ref("Claim"),
            roles=FINANCE_UP,
            params=[CLAIM_ID],
            body=body_of({}, {"again": {"type": "boolean"}}),
            body_required=False,
            errors={
                "400": BAD,
                "404": NOT_FOUND,
                "409": "not ready to submit, or an earlier submission got no answer (send again with again: true)",
                "502": "HMRC refused or could not be reached",
            },
        )
    },
    "/api/giftaid/claims/{claim_id}/poll": {
        "post": staff(
            "Ask HMRC for the outcome of a submitted claim",
            ref("Claim"),
            roles=FINANCE_UP,
            params=[CLAIM_ID],
            errors={"404": NOT_FOUND, "409": "not submitted", "502": "HMRC could not be reached"},
        )
    },
    "/api/giftaid/claims/{claim_id}/attach": {
        "post": staff(
            "Attach the correlation id of a submission that got no answer (found with `giving giftaid gateway-list`)",
            ref("Claim"),
            roles=FINANCE_UP,
            params=[CLAIM_ID],
            body=body_of({"correlation_id": {"type": "string", "maxLength": 100}}),
            errors={
                "400": "not a correlation id",
                "404": NOT_FOUND,
                "409": "the claim is not waiting on an unanswered submission, or another claim has that id",
            },
        )
    },
    "/api/giftaid/claims/{claim_id}/messages": {
        "get": staff(
            "The messages exchanged with HMRC for a claim",
            items_of(ANY_OBJECT),
            roles=FINANCE_UP,
            params=[CLAIM_ID],
            errors={"404": NOT_FOUND},
        )
    },
    "/api/giftaid/gifts/{gift_id}": {
        "get": staff(
            "Whether and why a gift is or is not claimable",
            ANY_OBJECT,
            roles=ANY_STAFF,
            params=[path_id("gift_id")],
            errors={"404": NOT_FOUND},
        )
    },
    # --- payouts, orders, shop (payments) ---
    "/api/payouts": {
        "get": staff(
            "Payouts, newest first",
            items_of(ref("Payout"), paged=True),
            roles=FINANCE_UP,
            params=[LIMIT, OFFSET],
            errors={"400": "a bad limit or offset"},
        )
    },
    "/api/payouts/{payout_id}": {
        "get": staff(
            "One payout with its lines",
            ref("Payout"),
            roles=FINANCE_UP,
            params=[PAYOUT_REF],
            errors={"404": NOT_FOUND},
        )
    },
    "/api/payouts/{payout_id}/reconcile": {
        "post": staff(
            "Match the payout's lines again",
            ref("Payout"),
            roles=FINANCE_UP,
            params=[PAYOUT_REF],
            errors={"404": NOT_FOUND, "409": "the provider has not finished the payout"},
        )
    },
    "/api/orders": {
        "get": staff(
            "Shop orders, newest paid first",
            items_of(ref("Order"), paged=True),
            roles=ANY_STAFF,
            params=[
                LIMIT,
                OFFSET,
                query("status", {"type": "string", "enum": [status.value for status in OrderStatus]}),
                query("unfulfilled", {"type": "string", "enum": ["1", "true", "yes", "0", "false", "no"]}),
            ],
            errors={"400": BAD},
        )
    },
    "/api/orders/{order_id}": {
        "get": staff(
            "One order", ref("Order"), roles=ANY_STAFF, params=[ORDER_ID], errors={"400": BAD, "404": NOT_FOUND}
        )
    },
    "/api/orders/{order_id}/fulfil": {
        "post": staff(
            "The shirts were posted",
            ref("Order"),
            roles=ANY_STAFF,
            params=[ORDER_ID],
            errors={"400": BAD, "404": NOT_FOUND, "409": "not paid"},
        )
    },
    "/api/regular-gifts/{regular_gift_id}/cancel": {
        "post": staff(
            "The donor asked to stop their regular gift: recorded, and a job tells Stripe or GoCardless",
            ref("RegularGift"),
            roles=ANY_STAFF,
            ok_status="202",
            params=[REGULAR_GIFT_ID],
            errors={"400": BAD, "404": NOT_FOUND, "409": "already cancelled or finished"},
        )
    },
    "/api/orders/{order_id}/returns": {
        "post": staff(
            "Shirts sent back",
            ref("Order"),
            roles=ANY_STAFF,
            params=[ORDER_ID],
            body=body_of({"lines": {"type": "array", "minItems": 1, "items": RETURN_LINE}}),
            errors={"400": BAD, "404": NOT_FOUND, "409": "more than was bought"},
        )
    },
    "/api/shop/stock": {
        "get": staff(
            "Stock of every SKU",
            obj({"threshold": {"type": "integer"}, "items": {"type": "array", "items": ref("StockRow")}}),
            roles=ANY_STAFF,
        )
    },
    "/api/shop/low-stock": {
        "get": staff(
            "SKUs at or under the low-stock threshold",
            obj({"threshold": {"type": "integer"}, "items": {"type": "array", "items": ref("StockRow")}}),
            roles=ANY_STAFF,
        )
    },
    "/api/shop/partner-statement": {
        "get": staff(
            "What each partner campaign is owed for shirts sold between two dates",
            ANY_OBJECT,
            roles=FINANCE_UP,
            params=[
                query("from", DATE, required=True),
                query("to", DATE, required=True),
                query("campaign", {"type": "string"}),
            ],
            errors={"400": BAD},
        )
    },
    # --- receipts ---
    "/api/receipts/documents": {
        "get": staff(
            "A supporter's receipts, statements and letters",
            items_of(ref("Document")),
            roles=ANY_STAFF,
            params=[query("supporter_id", UUID, required=True)],
            errors={"400": BAD, "404": NOT_FOUND},
        )
    },
    "/api/receipts/documents/{document_id}": {
        "get": staff(
            "One document with its deliveries",
            ref("Document"),
            roles=ANY_STAFF,
            params=[DOCUMENT_ID],
            errors={"400": BAD, "404": NOT_FOUND},
        )
    },
    "/api/receipts/documents/{document_id}/pdf": {
        "get": file_download(
            "The document's PDF",
            "application/pdf",
            roles=ANY_STAFF,
            params=[DOCUMENT_ID],
            errors={"410": "its supporter was erased: the document's words and file are gone"},
        )
    },
    "/api/receipts/documents/{document_id}/resend": {
        "post": staff(
            "Email a document again (marked as a duplicate copy)",
            ANY_OBJECT,
            roles=ANY_STAFF,
            ok_status="202",
            params=[DOCUMENT_ID],
            body=body_of({}, {"to_email": {"type": "string", "format": "email", "pattern": "@"}}),
            errors={"400": BAD, "404": NOT_FOUND, "409": "not issued yet"},
        )
    },
}

# POST /api/giftaid/claims answers 201 with a new claim, or 200 with `claim_id: null` when nothing is claimable.
PATHS["/api/giftaid/claims"]["post"]["responses"]["200"] = {
    "description": "nothing to claim (claim_id is null)",
    **json_body(ref("BuiltClaim")),
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
