"""Staff pages under /staff (mounted by giving.app). Static files are served under /staff/static."""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles

from core.auth import Principal
from giving.staff import admin, auth_pages, finance, giftaid_pages, privacy_pages, supporters
from giving.staff.session import SessionsOnStaffPaths
from giving.staff.web import STATIC_DIR, render, staff_page


@staff_page()
async def home(request: Request, staff: Principal) -> Response:
    return render(request, "home.html")


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
    Route("/supporters/{supporter_id}/merge", supporters.merge_preview, methods=["GET"]),
    Route("/supporters/{supporter_id}/merge", supporters.merge_now, methods=["POST"]),
    Route("/supporters/{supporter_id}/documents/{document_id}/resend", supporters.resend_document, methods=["POST"]),
    Route("/supporters/{supporter_id}/export", privacy_pages.export, methods=["GET"]),
    Route("/supporters/{supporter_id}/erase", privacy_pages.erase_form, methods=["GET"]),
    Route("/supporters/{supporter_id}/erase", privacy_pages.erase, methods=["POST"]),
    Route("/finance/giftaid", giftaid_pages.dashboard, methods=["GET"]),
    Route("/finance/giftaid/claims", giftaid_pages.build, methods=["POST"]),
    Route("/finance/giftaid/claims/{claim_id}", giftaid_pages.claim, methods=["GET"]),
    Route("/finance/giftaid/claims/{claim_id}/schedule.ods", giftaid_pages.schedule, methods=["GET"]),
    Route("/finance/giftaid/claims/{claim_id}/claim.xml", giftaid_pages.message, methods=["GET"]),
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

routes: list[BaseRoute] = [
    Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="staff_static"),
    # The session middleware wraps the pages only (static files need no database look-up).
    Mount("", app=Router(routes=page_routes, middleware=[Middleware(SessionsOnStaffPaths)])),
]
