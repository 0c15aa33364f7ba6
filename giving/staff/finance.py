"""Finance pages: payouts and their reconciliation, missing regular instalments, shop orders and stock.
(Gift Aid pages are in `giving.staff.giftaid_pages`.) Finance and admin only."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from core.auth import Principal, audit
from core.clock import uk_today
from core.http import in_thread
from core.models import StaffRole
from giving.staff import queries
from giving.staff.web import PAGE_SIZE, page_cursors, render, runtime, staff_page
from payments import payouts as payouts_service


@staff_page(StaffRole.FINANCE)
async def payouts(request: Request, staff: Principal) -> Response:
    before, after = page_cursors(request)

    def load() -> dict[str, Any]:
        with runtime(request).read_session() as session:
            page = queries.payouts_page(session, before=before, after=after, page_size=PAGE_SIZE)
        return {"rows": page.items, "newer": page.newer, "older": page.older}

    return render(request, "finance/payouts.html", await in_thread(load))


@staff_page(StaffRole.FINANCE)
async def payout(request: Request, staff: Principal) -> Response:
    payout_ref = request.path_params["payout_id"]

    def load() -> dict[str, Any]:
        with runtime(request).read_session() as session:
            return {"payout": payouts_service.payout_json(session, payouts_service.find_payout(session, payout_ref))}

    return render(request, "finance/payout.html", await in_thread(load))


@staff_page(StaffRole.FINANCE)
async def instalments(request: Request, staff: Principal) -> Response:
    grace = runtime(request).settings.donations.regular_grace_days

    def load() -> dict[str, Any]:
        with runtime(request).unit_of_work() as uow:
            rows = queries.missing_instalments(uow.session, uk_today(), grace)
            # Names of supporters are personal data.
            audit(uow, staff, "view", "missing_instalments", "", {"rows": len(rows)})
        return {"rows": rows, "grace_days": grace}

    return render(request, "finance/instalments.html", await in_thread(load))


@staff_page(StaffRole.FINANCE)
async def shop(request: Request, staff: Principal) -> Response:
    before, after = page_cursors(request)

    def load() -> dict[str, Any]:
        with runtime(request).unit_of_work() as uow:
            page = queries.recent_orders(uow.session, before=before, after=after, page_size=PAGE_SIZE)
            stock = queries.stock(uow.session)
            # Which page it was: the time of its newest and oldest orders.
            shown = {}
            if page.items and (before or after):
                shown = {
                    "from": page.items[0].order.created_at.isoformat(),
                    "to": page.items[-1].order.created_at.isoformat(),
                }
            audit(uow, staff, "view", "orders", "", shown)
        return {
            "orders": page.items,
            "stock": stock,
            "newer": page.newer,
            "older": page.older,
            "low_stock": runtime(request).settings.shop.low_stock_threshold,
        }

    return render(request, "finance/shop.html", await in_thread(load))
