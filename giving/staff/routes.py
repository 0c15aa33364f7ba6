"""Staff pages under /staff (mounted by giving.app). Static files are served under /staff/static."""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route, Router
from starlette.staticfiles import StaticFiles

from core.auth import Principal
from giving.staff import admin, auth_pages, finance, giftaid_pages, privacy_pages, supporters
from giving.staff.session import SessionsOnStaffPaths
from giving.staff.web import STATIC_DIR, error_page, render, staff_page


@staff_page()
async def home(request: Request, staff: Principal) -> Response:
    return render(request, "home.html")


async def no_such_page(request: Request) -> Response:
    """Under /staff, an address no page has (or a form's address opened as a page) gets a page, not the JSON
    API's error body."""
    if any(route.matches(request.scope)[0] == Match.PARTIAL for route in page_routes):
        return error_page(
            request,
            405,
            "Not a page",
            "This address is where a form is sent; it cannot be opened as a page. Go back and use the form.",
        )
    return error_page(request, 404, "Page not found", "There is no page at this address.")


page_routes: list[BaseRoute] = [
    Route("/", home, methods=["GET"]),
    Route("/login", auth_pages.login_form, methods=["GET"]),
    Route("/login", auth_pages.login, methods=["POST"]),
    Route("/logout", auth_pages.logout, methods=["POST"]),
    Route("/forgot-password", auth_pages.forgot_form, methods=["GET"]),
    Route("/forgot-password", auth_pages.forgot, methods=["POST"]),
    Route("/reset-password", auth_pages.reset_form, methods=["GET"]),
    Route("/reset-password", auth_pages.reset, methods=["POST"]),
    Route("/supporters", supporters.search, methods=["GET"]),
    Route("/supporters/{supporter_id}", supporters.show, methods=["GET"]),
    Route("/supporters/{supporter_id}/history", supporters.history, methods=["GET"]),
    Route("/supporters/{supporter_id}/notes", supporters.add_note, methods=["POST"]),
    Route("/supporters/{supporter_id}/consents", supporters.change_consent, methods=["POST"]),
    Route("/supporters/{supporter_id}/declarations", supporters.record_declaration, methods=["POST"]),
    Route(
        "/supporters/{supporter_id}/declarations/{declaration_id}/cancel",
        supporters.cancel_declaration,
        methods=["POST"],
    ),
    Route(
        "/supporters/{supporter_id}/declarations/{declaration_id}/confirm",
        supporters.confirm_declaration,
        methods=["POST"],
    ),
    Route("/supporters/{supporter_id}/merge", supporters.merge_preview, methods=["GET"]),
    Route("/supporters/{supporter_id}/merge", supporters.merge_now, methods=["POST"]),
    Route(
        "/supporters/{supporter_id}/regular-gifts/{regular_gift_id}/cancel",
        supporters.cancel_regular_gift,
        methods=["POST"],
    ),
    Route("/supporters/{supporter_id}/documents/{document_id}/resend", supporters.resend_document, methods=["POST"]),
    Route("/supporters/{supporter_id}/export", privacy_pages.export, methods=["POST"]),
    Route("/supporters/{supporter_id}/erase", privacy_pages.erase_form, methods=["GET"]),
    Route("/supporters/{supporter_id}/erase", privacy_pages.erase, methods=["POST"]),
    Route("/finance/giftaid", giftaid_pages.dashboard, methods=["GET"]),
    Route("/finance/giftaid/claims", giftaid_pages.build, methods=["POST"]),
    Route("/finance/giftaid/claims/{claim_id}", giftaid_pages.claim, methods=["GET"]),
    Route("/finance/giftaid/claims/{claim_id}/schedule.ods", giftaid_pages.schedule, methods=["POST"]),
    Route("/finance/giftaid/claims/{claim_id}/claim.xml", giftaid_pages.message, methods=["POST"]),
    Route("/finance/giftaid/claims/{claim_id}/status", giftaid_pages.mark, methods=["POST"]),
    Route("/finance/payouts", finance.payouts, methods=["GET"]),
    Route("/finance/payouts/{payout_id}", finance.payout, methods=["GET"]),
    Route("/finance/instalments", finance.instalments, methods=["GET"]),
    Route("/finance/shop", finance.shop, methods=["GET"]),
    Route("/admin/users", admin.users, methods=["GET"]),
    Route("/admin/users", admin.add_user, methods=["POST"]),
    Route("/admin/users/{user_id}", admin.change_user, methods=["POST"]),
    Route("/admin/tokens", admin.tokens, methods=["GET"]),
    Route("/admin/tokens", admin.create_token, methods=["POST"]),
    Route("/admin/tokens/{token_id}/revoke", admin.revoke_token, methods=["POST"]),
    Route("/admin/audit", admin.audit_log, methods=["GET"]),
]
# Last: whatever no page above answers.
any_method = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
page_routes.append(Route("/{rest:path}", no_such_page, methods=any_method))

routes: list[BaseRoute] = [
    Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="staff_static"),
    # The session middleware wraps the pages only (static files need no database look-up).
    Mount("", app=Router(routes=page_routes, middleware=[Middleware(SessionsOnStaffPaths)])),
]
