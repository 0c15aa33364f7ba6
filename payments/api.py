"""Staff JSON API of payments (payouts, orders, stock, partner statements), mounted by giving.app.

Roles: finance (and admin) read and reconcile payouts and export partner statements; any staff member may read
orders and stock and mark an order fulfilled or record shirts sent back. Each handler checks its caller before it
reads its path, query or body (401/403 first, then 400/404).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from core.auth import audit, require_staff
from core.errors import BadRequest
from core.http import JSON, in_thread, limit_param, offset_param, runtime_of
from core.models import StaffRole
from payments import payouts, service, shop
from payments.models import OrderStatus
from payments.reconcile import match_payout

FINANCE = (StaffRole.FINANCE, StaffRole.ADMIN)
ANY_STAFF = (StaffRole.FUNDRAISER, StaffRole.FINANCE, StaffRole.ADMIN)
ORDER_STATUSES = tuple(status.value for status in OrderStatus)


def _date_param(request: Request, name: str) -> dt.date:
    raw = request.query_params.get(name)
    if not raw:
        raise BadRequest(f"{name} (YYYY-MM-DD) is required")
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a date YYYY-MM-DD") from None


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BadRequest(f"{value!r} is not a {what} id") from None


async def list_payouts(request: Request) -> Response:
    runtime = runtime_of(request)

    def work() -> dict[str, Any]:
        with runtime.read_session() as session:
            require_staff(session, request, *FINANCE)
            # Read once the caller may see payouts: a role that may not is told so (403), whatever it asked.
            limit = limit_param(request.query_params.get("limit"))
            offset = offset_param(request.query_params.get("offset"))
            items, more = payouts.list_payouts(session, limit=limit, offset=offset)
        body: dict[str, Any] = {"items": items}
        if more and limit is not None:
            body["next"] = f"{request.url.path}?limit={limit}&offset={offset + limit}"
        return body

    return JSON(await in_thread(work))


async def get_payout(request: Request) -> Response:
    runtime = runtime_of(request)
    ref = request.path_params["payout_id"]

    def work() -> dict[str, Any]:
        with runtime.read_session() as session:
            require_staff(session, request, *FINANCE)
            return payouts.payout_json(session, payouts.find_payout(session, ref))

    return JSON(await in_thread(work))


async def reconcile_payout(request: Request) -> Response:
    """`POST /api/payouts/{id}/reconcile`: match the payout's lines again (what `giving reconcile` does)."""
    runtime = runtime_of(request)
    ref = request.path_params["payout_id"]

    def work() -> dict[str, Any]:
        with runtime.unit_of_work() as uow:
            principal = require_staff(uow.session, request, *FINANCE)
            payout = payouts.find_payout(uow.session, ref)
            result = match_payout(uow, payout.id)
            audit(uow, principal, "reconcile", "payout", payout.id, {"status": str(result.reconciliation)})
        with runtime.read_session() as session:
            return payouts.payout_json(session, payouts.find_payout(session, ref))

    return JSON(await in_thread(work))


async def list_orders(request: Request) -> Response:
    """Every order unless `?limit=` asks for fewer; then `next` (offset) names the rest, as for payouts."""
    runtime = runtime_of(request)
    status = request.query_params.get("status") or None
    unfulfilled = request.query_params.get("unfulfilled") in ("1", "true", "yes")

    def work() -> dict[str, Any]:
        with runtime.read_session() as session:
            require_staff(session, request, *ANY_STAFF)
            limit = limit_param(request.query_params.get("limit"))
            offset = offset_param(request.query_params.get("offset"))
            if status is not None and status not in ORDER_STATUSES:
                # Not a filter that matches nothing: a typo (or a NUL, which PostgreSQL refuses) is the caller's.
                raise BadRequest(f"status is one of {', '.join(ORDER_STATUSES)}")
            fetch = None if limit is None else limit + 1
            items = shop.list_orders(session, status=status, unfulfilled=unfulfilled, limit=fetch, offset=offset)
        body: dict[str, Any] = {"items": items[:limit]}
        if limit is not None and len(items) > limit:
            kept = {"status": status, "unfulfilled": "1" if unfulfilled else None}
            query = urlencode({**{k: v for k, v in kept.items() if v}, "limit": limit, "offset": offset + limit})
            body["next"] = f"{request.url.path}?{query}"
        return body

    return JSON(await in_thread(work))


async def get_order(request: Request) -> Response:
    runtime = runtime_of(request)

    def work() -> dict[str, Any]:
        with runtime.read_session() as session:
            require_staff(session, request, *ANY_STAFF)
            order_id = _uuid(request.path_params["order_id"], "order")
            return shop.order_json(session, shop.get_order(session, order_id))

    return JSON(await in_thread(work))


async def fulfil_order(request: Request) -> Response:
    """`POST /api/orders/{id}/fulfil`: the shirts were posted (again: no change)."""
    runtime = runtime_of(request)

    def work() -> dict[str, Any]:
        with runtime.unit_of_work() as uow:
            principal = require_staff(uow.session, request, *ANY_STAFF)
            order_id = _uuid(request.path_params["order_id"], "order")
            order, posted = shop.fulfil(uow, order_id)
            if posted:  # again: nothing changed, nothing to audit
                audit(uow, principal, "fulfil", "order", order.id)
        with runtime.read_session() as session:
            return shop.order_json(session, shop.get_order(session, order_id))

    return JSON(await in_thread(work))


async def cancel_regular_gift(request: Request) -> Response:
    """`POST /api/regular-gifts/{id}/cancel`: the donor asked to stop their regular gift. 202: recorded, and a job
    tells Stripe or GoCardless (`status` turns `cancelled` when it has); 409 when it has already ended."""
    runtime = runtime_of(request)

    def work() -> dict[str, Any]:
        with runtime.unit_of_work() as uow:
            principal = require_staff(uow.session, request, *ANY_STAFF)
            regular_gift_id = _uuid(request.path_params["regular_gift_id"], "regular gift")
            regular = service.request_cancellation(uow, regular_gift_id, requested_by=principal.email)
            audit(
                uow, principal, "cancel_regular_gift", "regular_gift", regular.id, {"provider": str(regular.provider)}
            )
            return service.regular_gift_json(regular)

    return JSON(await in_thread(work), status_code=202)


async def return_lines(request: Request) -> Response:
    """`POST /api/orders/{id}/returns` `{"lines": [{"line_id" or "sku", "quantity"}]}`: shirts sent back (their
    stock returns and the partner's share is recomputed). The money goes back through the provider's refund."""
    runtime = runtime_of(request)
    raw = await request.body()  # read here (async); judged only once the caller is known

    def work() -> dict[str, Any]:
        with runtime.unit_of_work() as uow:
            principal = require_staff(uow.session, request, *ANY_STAFF)
            order_id = _uuid(request.path_params["order_id"], "order")
            try:
                payload = json.loads(raw)
            except ValueError:
                raise BadRequest("the body must be JSON") from None
            lines = payload.get("lines") if isinstance(payload, dict) else None
            if not isinstance(lines, list) or not lines:
                raise BadRequest('give "lines": [{"line_id" or "sku", "quantity"}]')
            shop.record_returns(uow, order_id, lines)
            audit(uow, principal, "record_return", "order", order_id, {"lines": _returned(lines)})
        with runtime.read_session() as session:
            return shop.order_json(session, shop.get_order(session, order_id))

    return JSON(await in_thread(work))


def _returned(lines: list[Any]) -> list[dict[str, Any]]:
    """What the audit keeps of returns `record_returns` applied: each line's id or SKU and its quantity, not the body
    as sent. A key it never reads may hold anything, a NUL too, which PostgreSQL's jsonb refuses (a 500 that undid a
    return already checked)."""
    kept = []
    for spec in lines:
        entry: dict[str, Any] = {
            key: str(spec[key]).replace("\x00", "") for key in ("line_id", "sku") if spec.get(key) is not None
        }
        entry["quantity"] = spec["quantity"]
        kept.append(entry)
    return kept


async def stock(request: Request) -> Response:
    runtime = runtime_of(request)
    low_only = request.url.path.endswith("/low-stock")

    def work() -> dict[str, Any]:
        with runtime.read_session() as session:
            require_staff(session, request, *ANY_STAFF)
            threshold = runtime.settings.shop.low_stock_threshold
            rows = shop.low_stock(session, threshold) if low_only else shop.stock_list(session)
            return {"threshold": threshold, "items": rows}

    return JSON(await in_thread(work))


async def partner_statement(request: Request) -> Response:
    runtime = runtime_of(request)
    campaign = request.query_params.get("campaign") or None

    def work() -> dict[str, Any]:
        with runtime.unit_of_work() as uow:
            principal = require_staff(uow.session, request, *FINANCE)
            # Read after the role check: a role that may not is told 403 whatever it asks.
            start, end = _date_param(request, "from"), _date_param(request, "to")
            if end < start:
                raise BadRequest("to is before from")
            if campaign is not None and "\x00" in campaign:  # no campaign code has one (PostgreSQL refuses it)
                raise BadRequest(f"no partner campaign {campaign!r}")
            statement = shop.partner_statement(uow.session, start, end, campaign_code=campaign)
            audit(
                uow, principal, "export", "partner_statement", campaign or "all", {"from": str(start), "to": str(end)}
            )
            return statement

    return JSON(await in_thread(work))


routes: list[BaseRoute] = [
    Route("/api/payouts", list_payouts, methods=["GET"]),
    Route("/api/payouts/{payout_id}", get_payout, methods=["GET"]),
    Route("/api/payouts/{payout_id}/reconcile", reconcile_payout, methods=["POST"]),
    Route("/api/orders", list_orders, methods=["GET"]),
    Route("/api/orders/{order_id}", get_order, methods=["GET"]),
    Route("/api/orders/{order_id}/fulfil", fulfil_order, methods=["POST"]),
    Route("/api/orders/{order_id}/returns", return_lines, methods=["POST"]),
    Route("/api/regular-gifts/{regular_gift_id}/cancel", cancel_regular_gift, methods=["POST"]),
    Route("/api/shop/stock", stock, methods=["GET"]),
    Route("/api/shop/low-stock", stock, methods=["GET"]),
    Route("/api/shop/partner-statement", partner_statement, methods=["GET"]),
]
