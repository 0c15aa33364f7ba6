"""Donor pages (HTML, no login): the donate form, the shop, and the pages donors come back to from the providers.

Endpoints are thin: parse, call `payments.checkout` in a thread, render. See docs/checkout.md.
"""

from __future__ import annotations

import functools
import uuid
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.templating import Jinja2Templates

from core import ratelimit
from core.auth import client_network
from core.clock import isoformat_z, utc_now
from core.errors import ValidationFailed
from core.http import client_address, in_thread, runtime_of
from core.money import format_pence
from core.settings import Settings
from crm import service as crm_service
from payments import checkout, shop
from payments.errors import ProviderBusy, ProviderDisabled, ProviderRefused, ProviderUnavailable
from payments.forms import (
    DONOR_FIELDS,
    HONEYPOT_FIELD,
    REFERENCE_FIELD,
    InvalidForm,
    form_values,
    parse_donation_form,
    parse_reference,
    parse_shop_form,
    texts,
)
from payments.models import Method

TEMPLATES_DIR = Path(__file__).parent / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
templates.env.filters["pence"] = format_pence
# The Gift Aid declaration's words: the ones crm keeps with each declaration made on these forms.
templates.env.globals["declaration_wording"] = crm_service.enduring_declaration_wording
# The email-updates tick box's words: the ones crm keeps with the consent it records.
templates.env.globals["email_updates_wording"] = crm_service.email_updates_wording
RATE_WINDOW_SECONDS = 60


def _page(request: Request, name: str, context: dict[str, Any], status_code: int = 200, **kwargs: Any) -> Response:
    settings: Settings = runtime_of(request).settings
    base = {
        "charity": settings.charity,
        "donor_fields": DONOR_FIELDS,
        "honeypot_field": HONEYPOT_FIELD,
        "reference_field": REFERENCE_FIELD,
        "card_enabled": checkout.provider_enabled(settings, Method.CARD),
        "direct_debit_enabled": checkout.provider_enabled(settings, Method.DIRECT_DEBIT),
        "limits": settings.donations,
    }
    response = templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code, **kwargs)
    response.headers["cache-control"] = "no-store"
    return response


def _message(
    request: Request,
    title: str,
    *paragraphs: str,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    context = {"title": title, "paragraphs": paragraphs, **extra}
    return _page(request, "message.html", context, status_code, headers=headers)


async def _within_rate(request: Request) -> bool:
    """Every POST of a public checkout form counts, valid or not: card testing starts with bad forms too.
    An IPv6 client counts by its /64 (one host usually owns the whole /64 and could rotate addresses)."""
    runtime = runtime_of(request)
    key = f"checkout_form:{client_network(client_address(request))}"

    def count() -> bool:
        with runtime.unit_of_work() as uow:
            return ratelimit.hit(
                uow.session,
                key,
                limit=runtime.settings.web.form_rate_per_minute,
                window_seconds=RATE_WINDOW_SECONDS,
            )

    return await in_thread(count)


def _too_many(request: Request, back: str) -> Response:
    wait = ratelimit.retry_after(RATE_WINDOW_SECONDS)
    return _message(
        request,
        "Too many attempts",
        "We have had a lot of payment forms from your network in the last minute, so we have paused for a moment "
        "to protect donors' cards from misuse.",
        f"Please wait {wait} seconds and try again. Nothing was charged.",
        status_code=429,
        headers={"Retry-After": str(wait)},
        back=back,
    )


def _evidence(request: Request, form: str) -> dict[str, Any]:
    """What we keep as evidence of an online declaration or consent: when and from where the form was sent."""
    return {
        "form": form,
        "submitted_at": isoformat_z(utc_now()),
        "ip": client_address(request),
        "user_agent": request.headers.get("user-agent", "")[:300],
    }


def _provider_failed(
    request: Request,
    exc: Exception,
    *,
    action: str,
    values: dict[str, str],
    basket: list[tuple[str, str]] | None = None,
) -> Response:
    """A clear page, and a button that sends the same form (same checkout_ref) again. Unavailable (and busy: the
    provider is still making the page for a twin of this form) carries the error's 503 and Retry-After; a refusal
    of our request by the provider is a 502."""
    unavailable = isinstance(exc, ProviderUnavailable)
    resend = {k: v for k, v in values.items() if k not in {"sku", "quantity", HONEYPOT_FIELD}}
    context = {
        "unavailable": unavailable,
        "busy": isinstance(exc, ProviderBusy),
        "action": action,
        "resend": resend,
        "basket": basket or [],
    }
    if isinstance(exc, ProviderUnavailable):
        return _page(
            request,
            "provider_error.html",
            context,
            status_code=exc.status_code,
            headers=exc.headers or {"Retry-After": "30"},
        )
    return _page(request, "provider_error.html", context, status_code=502)


# --- donate -----------------------------------------------------------------------------------------------------


def _donate_form(request: Request, values: dict[str, str], errors: dict[str, str], status_code: int = 200) -> Response:
    values = {"frequency": "once", "country": "GB", **{k: v for k, v in values.items() if v}}
    settings: Settings = runtime_of(request).settings
    if "method" not in values:
        card = checkout.provider_enabled(settings, Method.CARD)
        values["method"] = (
            "card" if card or not checkout.provider_enabled(settings, Method.DIRECT_DEBIT) else "direct_debit"
        )
    if parse_reference(values.get(REFERENCE_FIELD, "")) is None:
        values[REFERENCE_FIELD] = str(uuid.uuid4())
    return _page(request, "donate.html", {"values": values, "errors": errors}, status_code)


async def donate_page(request: Request) -> Response:
    # Appeal links may preset the amount, frequency and appeal: /donate?appeal=WINTER&amount=25
    preset = {k: request.query_params.get(k, "")[:64] for k in ("amount", "frequency", "method", "appeal")}
    return _donate_form(request, preset, {})


async def donate_submit(request: Request) -> Response:
    if not await _within_rate(request):
        return _too_many(request, "/donate")
    runtime = runtime_of(request)
    form = await request.form()
    values = form_values(form)
    try:
        donation = parse_donation_form(form, runtime.settings.donations)
        checkout.ensure_enabled(runtime.settings, donation.method)
    except InvalidForm as exc:
        return _donate_form(request, values, exc.errors, exc.status_code)
    except ProviderDisabled as exc:
        return _donate_form(request, values, {"method": f"{exc.detail}. Please choose another way to give."}, 503)
    record = functools.partial(
        checkout.record_donation, request=donation, settings=runtime.settings, evidence=_evidence(request, "donate")
    )
    try:
        url = await in_thread(checkout.start_checkout, runtime.unit_of_work, runtime.settings, record)
    except ValidationFailed as exc:  # InvalidForm, or a rule crm checks again when recording
        return _donate_form(request, values, exc.errors or {"form": exc.detail}, exc.status_code)
    except (ProviderUnavailable, ProviderRefused) as exc:
        return _provider_failed(request, exc, action="/donate", values=values)
    return RedirectResponse(url, status_code=303)


async def donate_thank_you(request: Request) -> Response:
    return _message(
        request,
        "Thank you for your donation",
        "Your gift makes a real difference to people on the move.",
        "Once the payment is confirmed we will email your receipt.",
    )


async def donate_cancelled(request: Request) -> Response:
    return _message(
        request,
        "Your donation was not completed",
        "Nothing has been taken from your card or account.",
        back="/donate",
        back_label="Return to the donation form",
    )


async def direct_debit_return(request: Request) -> Response:
    return _message(
        request,
        "Thank you: your Direct Debit is being set up",
        "GoCardless will email you to confirm your Direct Debit and tell you when the first payment is taken.",
        "We will email your receipt once the payment is collected.",
    )


async def direct_debit_exit(request: Request) -> Response:
    return _message(
        request,
        "Your Direct Debit was not set up",
        "You left the Direct Debit pages before finishing, so nothing will be collected.",
        back="/donate",
        back_label="Return to the donation form",
    )


# --- shop -------------------------------------------------------------------------------------------------------


def _shop_form(
    request: Request,
    products: list[checkout.ProductView],
    values: dict[str, str],
    quantities: dict[str, str],
    errors: dict[str, str],
    status_code: int = 200,
) -> Response:
    values = {"country": "GB", **{k: v for k, v in values.items() if v}}
    values.pop("sku", None)
    values.pop("quantity", None)
    if parse_reference(values.get(REFERENCE_FIELD, "")) is None:
        values[REFERENCE_FIELD] = str(uuid.uuid4())
    settings: Settings = runtime_of(request).settings
    context = {
        "products": products,
        "values": values,
        "quantities": quantities,
        "errors": errors,
        "international_postage": settings.shop.international_postage,
        "postage_area": shop.postage_area(settings.shop),
    }
    return _page(request, "shop.html", context, status_code)


async def _catalogue(request: Request) -> list[checkout.ProductView]:
    runtime = runtime_of(request)

    def read() -> list[checkout.ProductView]:
        with runtime.read_session() as session:
            return checkout.catalogue(session)

    return await in_thread(read)


async def shop_page(request: Request) -> Response:
    return _shop_form(request, await _catalogue(request), {}, {}, {})


async def shop_checkout(request: Request) -> Response:
    if not await _within_rate(request):
        return _too_many(request, "/shop")
    runtime = runtime_of(request)
    form = await request.form()
    values = form_values(form)
    basket = list(zip(texts(form, "sku"), texts(form, "quantity"), strict=False))
    quantities = dict(basket)
    try:
        order = parse_shop_form(form, runtime.settings.donations)
        checkout.ensure_enabled(runtime.settings, Method.CARD)
    except InvalidForm as exc:
        return _shop_form(request, await _catalogue(request), values, quantities, exc.errors, exc.status_code)
    except ProviderDisabled:
        return _message(
            request,
            "The shop is closed for now",
            "We cannot take card payments online at the moment, so nothing was ordered. Please try again later.",
            status_code=503,
            back="/shop",
        )
    record = functools.partial(
        checkout.record_order, request=order, settings=runtime.settings, evidence=_evidence(request, "shop")
    )
    try:
        url = await in_thread(checkout.start_checkout, runtime.unit_of_work, runtime.settings, record)
    except ValidationFailed as exc:  # InvalidForm (SKUs, stock), or a rule crm checks again when recording
        errors = exc.errors or {"form": exc.detail}
        return _shop_form(request, await _catalogue(request), values, quantities, errors, exc.status_code)
    except (ProviderUnavailable, ProviderRefused) as exc:
        return _provider_failed(request, exc, action="/shop/checkout", values=values, basket=basket)
    return RedirectResponse(url, status_code=303)


async def shop_thank_you(request: Request) -> Response:
    return _message(
        request,
        "Thank you for your order",
        "Once the payment is confirmed we will email your receipt and post your shirts.",
    )


async def shop_cancelled(request: Request) -> Response:
    return _message(
        request,
        "Your order was not completed",
        "Nothing has been taken from your card.",
        back="/shop",
        back_label="Return to the shop",
    )


async def stylesheet(request: Request) -> Response:
    return FileResponse(
        TEMPLATES_DIR / "checkout.css", media_type="text/css", headers={"cache-control": "max-age=3600"}
    )


routes: list[BaseRoute] = [
    Route("/donate", donate_page, methods=["GET"]),
    Route("/donate", donate_submit, methods=["POST"]),
    Route("/donate/thank-you", donate_thank_you, methods=["GET"]),
    Route("/donate/cancelled", donate_cancelled, methods=["GET"]),
    Route("/donate/direct-debit/return", direct_debit_return, methods=["GET"]),
    Route("/donate/direct-debit/exit", direct_debit_exit, methods=["GET"]),
    Route("/shop", shop_page, methods=["GET"]),
    Route("/shop/checkout", shop_checkout, methods=["POST"]),
    Route("/shop/thank-you", shop_thank_you, methods=["GET"]),
    Route("/shop/cancelled", shop_cancelled, methods=["GET"]),
    Route("/assets/checkout.css", stylesheet, methods=["GET"]),
]
