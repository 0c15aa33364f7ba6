"""Hosted checkout: record who is giving or buying what, then send them to Stripe Checkout or GoCardless.

The order of work (docs/checkout.md):
1. One unit of work records the supporter, the Gift Aid declaration, the email consent, the basket (shop) and a
   pending `Checkout`. Every check runs before the first write, so a refused form leaves nothing behind.
2. Outside any transaction, the provider's hosted page is created with an idempotency key derived from the
   checkout id, so the same checkout can never get two provider sessions.
3. A second unit of work stores the provider's id and address on the checkout and marks it open (or failed).

The webhook processing (another part) needs nothing from the provider to know who gave what: the checkout id is in
`client_reference_id` and in the metadata of the session, payment intent, subscription and billing request.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy.exc
from sqlmodel import Session, col, select

from core.clock import uk_today, utc_now
from core.db import UnitOfWork
from core.settings import Settings
from crm import service as crm
from crm.models import ConsentChannel, ConsentStatus, DeclarationMethod, DeclarationScope, StatementPreference
from payments import repository, shop
from payments.errors import ProviderBusy, ProviderDisabled, ProviderRefused, ProviderUnavailable
from payments.forms import BasketLine, DonationRequest, InvalidForm, ShopRequest
from payments.models import (
    Checkout,
    CheckoutKind,
    CheckoutStatus,
    Frequency,
    Method,
    Order,
    OrderLine,
    OrderStatus,
    PartnerCampaign,
    Product,
    Provider,
    Sku,
)
from payments.providers.gocardless import GoCardlessGateway
from payments.providers.stripe import StripeGateway

log = logging.getLogger("giving.checkout")

# A resubmitted form (same checkout_ref, same details) reuses its checkout while it is this young; Stripe keeps an
# idempotency key for 24 hours and a Checkout Session lives 24 hours, so an hour is well inside both.
REUSE_WINDOW = dt.timedelta(hours=1)
EMAIL_CONSENT_WORDING_VERSION = "email-updates-2026-01"
DONATION_LINE_NAME = "Donation"
MONTHLY_LINE_NAME = "Monthly donation"

UnitOfWorkFactory = Callable[[], AbstractContextManager[UnitOfWork]]


@dataclass(frozen=True)
class ProviderPage:
    provider_id: str  # Checkout Session id (cs_...) or Billing Request id (BRQ...)
    url: str  # where the donor goes: the Session's url or the Flow's authorisation_url


@dataclass(frozen=True)
class PlannedLine:
    name: str
    unit_amount: int
    quantity: int
    sku: str | None = None


@dataclass(frozen=True)
class CheckoutPlan:
    """What the provider call needs, read out of the unit of work that recorded the checkout."""

    checkout_id: uuid.UUID
    kind: CheckoutKind
    supporter_id: uuid.UUID
    amount: int
    frequency: Frequency
    method: Method
    appeal: str | None
    declaration_id: uuid.UUID | None
    order_id: uuid.UUID | None
    donor: dict[str, Any]
    status: CheckoutStatus
    redirect_url: str | None
    lines: tuple[PlannedLine, ...] = field(default=())
    provider_attempt: int = 0


# --- which provider ------------------------------------------------------------------------------------------


def provider_for(method: Method) -> Provider:
    return Provider.GOCARDLESS if method == Method.DIRECT_DEBIT else Provider.STRIPE


def provider_enabled(settings: Settings, method: Method) -> bool:
    """A provider without its API secret and webhook secret is off: we could not take or learn of the money."""
    if provider_for(method) == Provider.GOCARDLESS:
        return settings.gocardless.enabled
    return settings.stripe.enabled


def ensure_enabled(settings: Settings, method: Method) -> None:
    if not provider_enabled(settings, method):
        name = "Direct Debit" if method == Method.DIRECT_DEBIT else "Card payments"
        raise ProviderDisabled(f"{name} cannot be taken online at the moment")


# --- the shop catalogue -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SkuView:
    sku: str
    size: str
    price: int
    stock: int

    @property
    def in_stock(self) -> bool:
        return self.stock > 0


@dataclass(frozen=True)
class ProductView:
    code: str
    name: str
    description: str
    partner_name: str | None
    skus: tuple[SkuView, ...]


def catalogue(session: Session) -> list[ProductView]:
    """Active products with every size, in a stable order (product code, then the size's position)."""
    products = session.exec(select(Product).where(col(Product.active).is_(True)).order_by(col(Product.code))).all()
    campaigns = {c.id: c for c in session.exec(select(PartnerCampaign)).all()}
    views = []
    for product in products:
        skus = session.exec(
            select(Sku).where(Sku.product_id == product.id).order_by(col(Sku.position), col(Sku.sku))
        ).all()
        campaign = campaigns.get(product.partner_campaign_id) if product.partner_campaign_id else None
        views.append(
            ProductView(
                code=product.code,
                name=product.name,
                description=product.description,
                partner_name=campaign.partner_name if campaign else None,
                skus=tuple(SkuView(s.sku, s.size, s.price, s.stock) for s in skus),
            )
        )
    return views


# --- step 1: record ---------------------------------------------------------------------------------------------


def _form_ids(reference: uuid.UUID | None, details: dict[str, Any]) -> tuple[uuid.UUID, ...]:
    """The ids a form's checkout may have: its reference, and for the form sent with other details once the
    reference is taken (the back button from the provider's page, a changed amount), an id derived from both. The
    page never learns a random id, so without the derived one its "Try again", a double click or the same changed
    form sent again would each start yet another checkout (docs/checkout.md)."""
    if reference is None:
        return ()
    return reference, uuid.uuid5(reference, json.dumps(details, sort_keys=True, default=str))


def _reusable(session: Session, ids: Sequence[uuid.UUID], *, matches: Callable[[Checkout], bool]) -> Checkout | None:
    for checkout_id in ids:
        existing = _reusable_one(session, checkout_id, matches=matches)
        if existing is not None:
            return existing
    return None


def _reusable_one(session: Session, checkout_id: uuid.UUID, *, matches: Callable[[Checkout], bool]) -> Checkout | None:
    existing = session.get(Checkout, checkout_id)
    if existing is None or existing.status not in {CheckoutStatus.PENDING, CheckoutStatus.OPEN, CheckoutStatus.FAILED}:
        return None
    if existing.status == CheckoutStatus.FAILED and (
        existing.stripe_checkout_session_id or existing.gocardless_billing_request_id
    ):
        return None  # its provider page was made and its payment failed: finished, the donor starts anew
    if utc_now() - existing.created_at > REUSE_WINDOW or not matches(existing):
        return None
    return existing


def _page_open(checkout: Checkout) -> bool:
    """The donor was sent to the checkout's provider page, and nothing has closed it here."""
    return checkout.status == CheckoutStatus.OPEN and bool(checkout.redirect_url)


def _new_id(session: Session, ids: Sequence[uuid.UUID]) -> uuid.UUID:
    """The form's reference becomes the checkout id; taken (the form was sent with other details), the id derived
    from it and these details; both taken by checkouts that cannot be reused (finished, old), a random one."""
    for checkout_id in ids:
        if session.get(Checkout, checkout_id) is None:
            return checkout_id
    return uuid.uuid4()


def _record_supporter_and_permissions(
    uow: UnitOfWork,
    request: DonationRequest | ShopRequest,
    *,
    settings: Settings,
    source: str,
    evidence: dict[str, Any],
) -> tuple[uuid.UUID, uuid.UUID | None]:
    supporter = crm.find_or_create_supporter(
        uow,
        request.donor,
        source=source,
        statement_preference=StatementPreference(settings.receipts.default_preference),
    )
    declaration_id = None
    if request.gift_aid:
        # A declaration is one donor's. Someone giving with the email of a record known by another name (couples
        # share one) declares for the gift they give now, not for the record's other gifts, until staff have
        # looked (the name_mismatch review item).
        own_record = crm.bears_name(supporter, request.donor.first_name, request.donor.last_name)
        declaration = crm.record_declaration(
            uow,
            supporter.id,
            method=DeclarationMethod.ONLINE,
            made_on=uk_today(),
            scope=DeclarationScope.PAST_4_YEARS_AND_FUTURE if own_record else DeclarationScope.THIS_GIFT,
            donor=request.donor,
            source=source,
            wording_version=settings.giftaid.donation_wording_version,
            # The words the form showed (the macro gift_aid prints the same function's text).
            wording_text=crm.enduring_declaration_wording(settings.charity.name),
            evidence=evidence,
            given_with_gift=not own_record,
        )
        declaration_id = declaration.id
    if request.email_updates:
        _grant_email_consent(uow, supporter.id, settings=settings, source=source, evidence=evidence)
    return supporter.id, declaration_id


def _grant_email_consent(
    uow: UnitOfWork, supporter_id: uuid.UUID, *, settings: Settings, source: str, evidence: dict[str, Any]
) -> None:
    crm.record_consent(
        uow,
        supporter_id,
        channel=ConsentChannel.EMAIL,
        status=ConsentStatus.GRANTED,
        source=source,
        wording_version=EMAIL_CONSENT_WORDING_VERSION,
        # The words the tick box showed (the donate and shop pages print the same function's text).
        wording_text=crm.email_updates_wording(settings.charity.name),
        evidence=evidence,
    )


def _consent_given_on_resend(
    uow: UnitOfWork,
    checkout: Checkout,
    request: DonationRequest | ShopRequest,
    *,
    settings: Settings,
    source: str,
    evidence: dict[str, Any],
) -> None:
    """The same form sent again (back from the provider's page, or "try again") goes to the same checkout; a box
    for email updates ticked only now is still the donor's consent, recorded once."""
    if request.email_updates and not crm.has_granted(uow.session, checkout.supporter_id, ConsentChannel.EMAIL):
        _grant_email_consent(
            uow,
            checkout.supporter_id,
            settings=settings,
            source=source,
            evidence={**evidence, "checkout_id": str(checkout.id)},
        )


def record_donation(
    uow: UnitOfWork, request: DonationRequest, *, settings: Settings, evidence: dict[str, Any]
) -> CheckoutPlan:
    """Supporter, declaration, consent and a pending donation checkout, or the same form's earlier checkout."""
    session = uow.session
    donor = request.donor.as_dict()

    def same_form(existing: Checkout) -> bool:
        return (
            existing.kind == CheckoutKind.DONATION
            and (existing.amount, existing.frequency, existing.method, existing.appeal)
            == (request.amount, request.frequency, request.method, request.appeal)
            and existing.donor == donor
            and (existing.declaration_id is not None) == request.gift_aid
        )

    ids = _form_ids(
        request.reference,
        {
            "kind": str(CheckoutKind.DONATION),
            "amount": request.amount,
            "frequency": str(request.frequency),
            "method": str(request.method),
            "appeal": request.appeal,
            "donor": donor,
            "gift_aid": request.gift_aid,
        },
    )
    existing = _reusable(session, ids, matches=same_form)
    if existing is not None:
        _consent_given_on_resend(uow, existing, request, settings=settings, source="donate_form", evidence=evidence)
        return _plan(session, existing)
    checkout_id = _new_id(session, ids)
    supporter_id, declaration_id = _record_supporter_and_permissions(
        uow,
        request,
        settings=settings,
        source="donate_form",
        evidence={**evidence, "checkout_id": str(checkout_id)},
    )
    checkout = Checkout(
        id=checkout_id,
        kind=CheckoutKind.DONATION,
        supporter_id=supporter_id,
        amount=request.amount,
        currency="GBP",
        frequency=request.frequency,
        method=request.method,
        appeal=request.appeal,
        declaration_id=declaration_id,
        donor=donor,
        status=CheckoutStatus.PENDING,
        provider=provider_for(request.method),
    )
    session.add(checkout)
    session.flush()
    return _plan(session, checkout)


@dataclass(frozen=True)
class PricedLine:
    sku: Sku
    product: Product
    campaign: PartnerCampaign | None
    quantity: int
    vat_amount: int
    partner_share_amount: int

    @property
    def gross(self) -> int:
        return self.sku.price * self.quantity


def price_basket(session: Session, lines: tuple[BasketLine, ...], *, vat_rate_bp: int) -> list[PricedLine]:
    """Each line priced from the catalogue, or InvalidForm: 400 for an unknown shirt, 409 for too few in stock.

    Prices include VAT (what the buyer pays); the VAT in a line is rate/(1 + rate) of its total, rounded half up.
    """
    priced, unknown, short = _price_lines(session, lines, vat_rate_bp=vat_rate_bp)
    if unknown:
        raise InvalidForm({**unknown, **short})
    if short:
        raise InvalidForm(short, status_code=409)
    return priced


def _price_lines(
    session: Session, lines: tuple[BasketLine, ...], *, vat_rate_bp: int
) -> tuple[list[PricedLine], dict[str, str], dict[str, str]]:
    """(every known line priced, the unknown shirts, the lines with too few in stock): the lines short of stock are
    priced too, so a basket sent again can be matched to its checkout before the stock refuses it."""
    unknown: dict[str, str] = {}
    short: dict[str, str] = {}
    priced = []
    for line in lines:
        sku = session.exec(select(Sku).where(Sku.sku == line.sku)).first()
        product = session.get(Product, sku.product_id) if sku is not None else None
        if sku is None or product is None or not product.active:
            unknown[f"quantity:{line.sku}"] = f"We do not sell {line.sku!r}"
            continue
        if line.quantity > sku.stock:
            short[f"quantity:{line.sku}"] = (
                f"Sorry, size {sku.size} is sold out"
                if sku.stock <= 0
                else f"Sorry, only {sku.stock} left in size {sku.size}"
            )
        campaign = session.get(PartnerCampaign, product.partner_campaign_id) if product.partner_campaign_id else None
        gross = sku.price * line.quantity
        vat = shop.vat_included(gross, vat_rate_bp)
        priced.append(
            PricedLine(sku, product, campaign, line.quantity, vat, partner_share(campaign, line.quantity, gross - vat))
        )
    return priced, unknown, short


def partner_share(campaign: PartnerCampaign | None, quantity: int, net: int) -> int:
    """What the partner campaign is owed for a line: pence per shirt, or basis points of the net (ex VAT)."""
    if campaign is None:
        return 0
    return shop.partner_share_of(campaign, net=net, quantity=quantity, kept=quantity)


def record_order(
    uow: UnitOfWork, request: ShopRequest, *, settings: Settings, evidence: dict[str, Any]
) -> CheckoutPlan:
    """The basket (order and lines), supporter, declaration, consent and a pending shop checkout."""
    session = uow.session
    vat_rate = settings.shop.vat_rate_bp
    # Postage: none within the UK (the prices include it), the international price once per order elsewhere, or
    # the address refused when the shop does not post there (docs/checkout.md, "Postage").
    postage = shop.postage_for(settings.shop, request.donor.country)
    refused = {} if postage is not None else {"country": shop.no_postage_there(settings.shop)}
    priced, unknown, short = _price_lines(session, request.lines, vat_rate_bp=vat_rate)
    if unknown or postage is None:
        raise InvalidForm({**unknown, **short, **refused})
    postage_vat = shop.vat_included(postage, vat_rate)
    goods_gross = sum(line.gross for line in priced) + postage
    vat = sum(line.vat_amount for line in priced) + postage_vat
    total = goods_gross + request.donation
    donor = request.donor.as_dict()
    wanted = sorted((line.sku, line.quantity) for line in request.lines)

    def same_form(existing: Checkout) -> bool:
        if existing.kind != CheckoutKind.SHOP or existing.order_id is None:
            return False
        order = session.get(Order, existing.order_id)
        lines = session.exec(select(OrderLine).where(OrderLine.order_id == existing.order_id)).all()
        return (
            order is not None
            and order.donation_amount == request.donation
            and existing.amount == total
            and existing.appeal == request.appeal
            and existing.donor == donor
            and (existing.declaration_id is not None) == request.gift_aid
            and sorted((line.sku, line.quantity) for line in lines if not shop.is_postage(line)) == wanted
        )

    ids = _form_ids(
        request.reference,
        {
            "kind": str(CheckoutKind.SHOP),
            "lines": wanted,
            "donation": request.donation,
            "appeal": request.appeal,
            "donor": donor,
            "gift_aid": request.gift_aid,
        },
    )
    existing = _reusable(session, ids, matches=same_form)
    # The same basket sent again (the back button) goes to its own Stripe page even if the size sold out since: that
    # page passed the stock check and can still be paid (stock is taken at payment). A checkout with no page yet
    # would make a new one for shirts that are gone, so it meets the stock check like a new basket.
    if existing is not None and (not short or _page_open(existing)):
        _consent_given_on_resend(uow, existing, request, settings=settings, source="shop", evidence=evidence)
        return _plan(session, existing)
    if short:
        raise InvalidForm(short, status_code=409)
    checkout_id = _new_id(session, ids)
    supporter_id, declaration_id = _record_supporter_and_permissions(
        uow, request, settings=settings, source="shop", evidence={**evidence, "checkout_id": str(checkout_id)}
    )
    now = utc_now()
    order = Order(
        supporter_id=supporter_id,
        currency="GBP",
        goods_amount=goods_gross - vat,
        vat_amount=vat,
        vat_rate_bp=vat_rate,
        donation_amount=request.donation,
        created_at=now,
        updated_at=now,
    )
    session.add(order)
    session.flush()
    for line in priced:
        session.add(
            OrderLine(
                order_id=order.id,
                sku=line.sku.sku,
                product_name=line.product.name,
                size=line.sku.size,
                quantity=line.quantity,
                unit_price=line.sku.price,
                vat_amount=line.vat_amount,
                partner_campaign_id=line.campaign.id if line.campaign else None,
                partner_share_amount=line.partner_share_amount,
            )
        )
    if postage:
        session.add(
            OrderLine(
                order_id=order.id,
                sku=shop.POSTAGE_SKU,
                product_name=shop.POSTAGE_LINE_NAME,
                size="",
                quantity=1,
                unit_price=postage,
                vat_amount=postage_vat,
            )
        )
    checkout = Checkout(
        id=checkout_id,
        kind=CheckoutKind.SHOP,
        supporter_id=supporter_id,
        amount=total,
        currency="GBP",
        frequency=Frequency.ONCE,
        method=Method.CARD,
        appeal=request.appeal,
        declaration_id=declaration_id,
        order_id=order.id,
        donor=donor,
        status=CheckoutStatus.PENDING,
        provider=Provider.STRIPE,
    )
    session.add(checkout)
    session.flush()
    return _plan(session, checkout)


def _plan(session: Session, checkout: Checkout) -> CheckoutPlan:
    """What the provider call needs. A basket's lines go to Stripe as the shirts (by SKU), then the postage, then
    the donation."""
    lines: list[PlannedLine] = []
    if checkout.order_id is not None:
        order = session.get(Order, checkout.order_id)
        postage: list[PlannedLine] = []
        for line in session.exec(
            select(OrderLine).where(OrderLine.order_id == checkout.order_id).order_by(col(OrderLine.sku))
        ).all():
            if shop.is_postage(line):
                postage.append(PlannedLine(line.product_name, line.unit_price, line.quantity))
            else:
                lines.append(
                    PlannedLine(f"{line.product_name} (size {line.size})", line.unit_price, line.quantity, line.sku)
                )
        lines.extend(postage)
        if order is not None and order.donation_amount:
            lines.append(PlannedLine(DONATION_LINE_NAME, order.donation_amount, 1))
    return CheckoutPlan(
        checkout_id=checkout.id,
        kind=checkout.kind,
        supporter_id=checkout.supporter_id,
        amount=checkout.amount,
        frequency=checkout.frequency,
        method=checkout.method,
        appeal=checkout.appeal,
        declaration_id=checkout.declaration_id,
        order_id=checkout.order_id,
        donor=dict(checkout.donor),
        status=checkout.status,
        redirect_url=checkout.redirect_url,
        lines=tuple(lines),
        provider_attempt=checkout.provider_attempt,
    )


# --- step 2: the provider's hosted page -------------------------------------------------------------------------


def idempotency_key(checkout_id: uuid.UUID, what: str, attempt: int = 0) -> str:
    """The same key for every call of one try (a page made before a timeout is returned, not made twice); a new one
    after the provider answered a try with an error, which it would otherwise replay (`Checkout.provider_attempt`)."""
    return f"checkout:{checkout_id}:{what}" + (f":{attempt}" if attempt else "")


def metadata(plan: CheckoutPlan) -> dict[str, str]:
    """Our ids, as Stripe metadata (string values) on the session and on its payment intent or subscription."""
    data = {"checkout_id": str(plan.checkout_id), "supporter_id": str(plan.supporter_id)}
    if plan.declaration_id is not None:
        data["declaration_id"] = str(plan.declaration_id)
    if plan.order_id is not None:
        data["order_id"] = str(plan.order_id)
    if plan.appeal:
        data["appeal"] = plan.appeal
    return data


def _return_urls(settings: Settings, plan: CheckoutPlan) -> tuple[str, str]:
    base = settings.web.base_url.rstrip("/")
    area = "shop" if plan.kind == CheckoutKind.SHOP else "donate"
    return (
        f"{base}/{area}/thank-you?checkout={plan.checkout_id}",
        f"{base}/{area}/cancelled?checkout={plan.checkout_id}",
    )


def stripe_session_params(settings: Settings, plan: CheckoutPlan) -> dict[str, Any]:
    success_url, cancel_url = _return_urls(settings, plan)
    ids = metadata(plan)
    params: dict[str, Any] = {
        "client_reference_id": str(plan.checkout_id),
        "metadata": ids,
        "success_url": success_url,
        "cancel_url": cancel_url,
    }
    if plan.donor.get("email"):
        params["customer_email"] = plan.donor["email"]
    if plan.kind == CheckoutKind.SHOP:
        params["mode"] = "payment"
        params["line_items"] = [
            _stripe_line(line.name, line.unit_amount, line.quantity, line.sku) for line in plan.lines
        ]
        params["payment_intent_data"] = {"metadata": ids}
    elif plan.frequency == Frequency.MONTHLY:
        params["mode"] = "subscription"
        line = _stripe_line(MONTHLY_LINE_NAME, plan.amount, 1, None)
        line["price_data"]["recurring"] = {"interval": "month"}
        params["line_items"] = [line]
        params["subscription_data"] = {"metadata": ids}
    else:
        params["mode"] = "payment"
        params["submit_type"] = "donate"
        params["line_items"] = [_stripe_line(DONATION_LINE_NAME, plan.amount, 1, None)]
        params["payment_intent_data"] = {"metadata": ids}
    return params


def _stripe_line(name: str, unit_amount: int, quantity: int, sku: str | None) -> dict[str, Any]:
    product: dict[str, Any] = {"name": name}
    if sku:
        product["metadata"] = {"sku": sku}
    return {
        "price_data": {"currency": "gbp", "unit_amount": unit_amount, "product_data": product},
        "quantity": quantity,
    }


def gocardless_billing_request_params(plan: CheckoutPlan) -> dict[str, Any]:
    """A Bacs mandate request only, for a one-off and a monthly gift alike.

    A one-off Direct Debit is a mandate and then one payment on it: GoCardless's `payment_request` is Instant Bank
    Pay (open banking), not Direct Debit. The webhook processing creates that payment from this checkout's amount
    once `billing_requests.fulfilled` arrives (docs/checkout.md).
    """
    # GoCardless allows at most 3 metadata keys per object; the checkout row holds everything else.
    ids = {"checkout_id": str(plan.checkout_id), "supporter_id": str(plan.supporter_id)}
    top = dict(ids)
    if plan.declaration_id is not None:
        top["declaration_id"] = str(plan.declaration_id)
    # No `subscription_request` for a monthly gift: GoCardless supports it only for ACH and PAD, and refuses it on a
    # Bacs mandate request (422 validation_failed). The webhook processing creates the subscription on the new
    # mandate itself, from this checkout's amount, once `billing_requests.fulfilled` arrives (docs/checkout.md).
    return {
        "mandate_request": {"currency": "GBP", "scheme": "bacs", "metadata": ids},
        "metadata": top,
    }


def gocardless_flow_params(settings: Settings, plan: CheckoutPlan, billing_request_id: str) -> dict[str, Any]:
    base = settings.web.base_url.rstrip("/")
    donor = plan.donor
    prefilled = {
        "given_name": donor.get("first_name"),
        "family_name": donor.get("last_name"),
        "email": donor.get("email"),
        "address_line1": donor.get("address_line1"),
        "address_line2": donor.get("address_line2"),
        "city": donor.get("town"),
        "postal_code": donor.get("postcode"),
        "country_code": donor.get("country"),
    }
    return {
        "links": {"billing_request": billing_request_id},
        "redirect_uri": f"{base}/donate/direct-debit/return?checkout={plan.checkout_id}",
        "exit_uri": f"{base}/donate/direct-debit/exit?checkout={plan.checkout_id}",
        "prefilled_customer": {key: value for key, value in prefilled.items() if value},
    }


def open_provider_page(settings: Settings, plan: CheckoutPlan) -> ProviderPage:
    """Creates the hosted page. Raises ProviderDisabled, ProviderUnavailable or ProviderRefused."""
    if provider_for(plan.method) == Provider.GOCARDLESS:
        gocardless = GoCardlessGateway(settings.gocardless)
        request = gocardless.create_billing_request(
            gocardless_billing_request_params(plan),
            idempotency_key=idempotency_key(plan.checkout_id, "billing_request", plan.provider_attempt),
        )
        flow = gocardless.create_billing_request_flow(gocardless_flow_params(settings, plan, request["id"]))
        return ProviderPage(request["id"], flow["authorisation_url"])
    session = StripeGateway(settings.stripe).create_checkout_session(
        stripe_session_params(settings, plan),
        idempotency_key=idempotency_key(plan.checkout_id, "session", plan.provider_attempt),
    )
    return ProviderPage(session["id"], session["url"])


# --- step 3: remember the outcome -------------------------------------------------------------------------------


def mark_open(uow: UnitOfWork, checkout_id: uuid.UUID, page: ProviderPage) -> None:
    checkout = uow.session.get(Checkout, checkout_id)
    if checkout is None:
        return
    if checkout.provider == Provider.GOCARDLESS:
        checkout.gocardless_billing_request_id = page.provider_id
    else:
        checkout.stripe_checkout_session_id = page.provider_id
    checkout.redirect_url = page.url
    if checkout.status in {CheckoutStatus.PENDING, CheckoutStatus.FAILED}:
        checkout.status = CheckoutStatus.OPEN
    elif checkout.status == CheckoutStatus.CANCELLED:
        # Closed (an erasure) while its page was being made: that page is closed too.
        uow.enqueue(CLOSE_CHECKOUT, checkout_id=str(checkout.id))
    uow.session.add(checkout)


def mark_failed(uow: UnitOfWork, checkout_id: uuid.UUID, *, answered: bool) -> None:
    """Only a checkout still waiting for its page fails: a concurrent resubmission may have opened it meanwhile.
    `answered`: the provider answered with an error, so the next try uses a new idempotency key."""
    checkout = uow.session.get(Checkout, checkout_id)
    if checkout is not None and checkout.status in {CheckoutStatus.PENDING, CheckoutStatus.FAILED}:
        checkout.status = CheckoutStatus.FAILED
        if answered:
            checkout.provider_attempt += 1
        uow.session.add(checkout)


# --- the whole sequence -----------------------------------------------------------------------------------------


def start_checkout(
    unit_of_work: UnitOfWorkFactory, settings: Settings, record: Callable[[UnitOfWork], CheckoutPlan]
) -> str:
    """Record (step 1), open the provider's page (2), store it (3); returns the address to send the donor to.

    Raises InvalidForm (nothing recorded), ProviderUnavailable / ProviderRefused after marking the checkout failed,
    or ProviderBusy (the checkout left as it is: another request is still making its page under the same key).
    `record` is `record_donation` or `record_order` with its request bound.
    """
    plan = _record(unit_of_work, record)
    if plan.status == CheckoutStatus.OPEN and plan.redirect_url:
        return plan.redirect_url
    try:
        page = open_provider_page(settings, plan)
    except ProviderBusy:
        # A twin of this form (a double click) is still making the page under the same key: nothing failed, the
        # checkout keeps its key, and "Try again" gets that page.
        log.info("checkout %s: the provider is still making its page for another request", plan.checkout_id)
        raise
    except (ProviderUnavailable, ProviderRefused, ProviderDisabled) as exc:
        log.warning("checkout %s: the provider page could not be created: %s", plan.checkout_id, exc)
        with unit_of_work() as uow:
            mark_failed(uow, plan.checkout_id, answered=getattr(exc, "answered", False) and _replays_errors(plan))
        raise
    try:
        with unit_of_work() as uow:
            mark_open(uow, plan.checkout_id, page)
    except sqlalchemy.exc.SQLAlchemyError:
        # The donor can still pay: the webhook finds the checkout by client_reference_id / metadata.
        log.exception("checkout %s: could not store provider page %s", plan.checkout_id, page.provider_id)
    return page.url


def _replays_errors(plan: CheckoutPlan) -> bool:
    """Whether the provider keeps an error answer under the idempotency key and would replay it (so the next try
    needs the next key). Stripe does. GoCardless keeps only what it created: a key used again answers `409
    idempotent_creation_conflict` naming that billing request, which its SDK fetches. So a Direct Debit checkout
    keeps its key, and "Try again" after a failed flow reuses the billing request already made instead of leaving it
    pending at GoCardless beside a second one."""
    return provider_for(plan.method) == Provider.STRIPE


def _record(unit_of_work: UnitOfWorkFactory, record: Callable[[UnitOfWork], CheckoutPlan]) -> CheckoutPlan:
    try:
        with unit_of_work() as uow:
            return record(uow)
    except sqlalchemy.exc.IntegrityError:
        # A concurrent twin (double click, or a new donor's email created at the same moment) committed first:
        # once more, now seeing its rows.
        with unit_of_work() as uow:
            return record(uow)


# --- closing the checkouts of an erased supporter -----------------------------------------------------------------

CLOSE_CHECKOUT = "payments.close_checkout"
_CLOSABLE = (CheckoutStatus.PENDING, CheckoutStatus.OPEN, CheckoutStatus.FAILED)


def close_checkouts(uow: UnitOfWork, supporter_ids: Sequence[uuid.UUID]) -> int:
    """The erasure of a supporter closes the checkouts they have not finished: each becomes `cancelled` (so a
    completion that still arrives is recognised: docs/payments.md, "Checkouts of an erased supporter"), its basket
    `cancelled`, and `payments.close_checkout` expires its provider page after the commit. A checkout whose
    delayed payment failed is finished already and stays as it is. Returns how many were closed."""
    session = uow.session
    checkouts = repository.all_locked(
        session,
        select(Checkout)
        .where(col(Checkout.supporter_id).in_(supporter_ids), col(Checkout.status).in_(_CLOSABLE))
        .order_by(col(Checkout.id)),
    )
    closed = 0
    for checkout in checkouts:
        page = checkout.stripe_checkout_session_id or checkout.gocardless_billing_request_id
        if checkout.status == CheckoutStatus.FAILED and page:
            continue  # its payment failed: finished, nothing to close
        checkout.status = CheckoutStatus.CANCELLED
        session.add(checkout)
        if checkout.order_id is not None:
            order = repository.order_locked(session, checkout.order_id)
            if order is not None and order.status == OrderStatus.PENDING:
                order.status = OrderStatus.CANCELLED
                order.updated_at = utc_now()
                session.add(order)
        if page:
            uow.enqueue(CLOSE_CHECKOUT, checkout_id=str(checkout.id))
        closed += 1
    session.flush()
    return closed


def close_provider_page(
    uow: UnitOfWork,
    checkout_id: uuid.UUID,
    *,
    stripe: Callable[[], StripeGateway],
    gocardless: Callable[[], GoCardlessGateway],
) -> str:
    """The job: expire the Stripe Checkout Session, or cancel the GoCardless billing request, of a checkout Giving
    closed, so the donor can no longer pay on it. A page the provider refuses to close because it is no longer open
    (paid a moment ago, or expired) is left as it is: a completion is recorded by its webhook. Refused while it is
    still open: ProviderRefused, for a person."""
    checkout = uow.session.get(Checkout, checkout_id)
    if checkout is None or checkout.status != CheckoutStatus.CANCELLED:
        return f"nothing to close ({checkout.status if checkout else 'no such checkout'})"
    if session_id := checkout.stripe_checkout_session_id:
        card = stripe()
        return _close_page(
            lambda: card.expire_checkout_session(session_id),
            lambda: card.retrieve_checkout_session(session_id).get("status"),
            still_open=("open",),
            done="expired at Stripe",
        )
    if request_id := checkout.gocardless_billing_request_id:
        direct_debit = gocardless()
        return _close_page(
            lambda: direct_debit.cancel_billing_request(request_id),
            lambda: direct_debit.get_billing_request(request_id).get("status"),
            still_open=("pending", "ready_to_fulfil"),
            done="cancelled at GoCardless",
        )
    return "no provider page"


def _close_page(close: Callable[[], Any], status: Callable[[], Any], *, still_open: tuple[str, ...], done: str) -> str:
    """Close a provider page; refused, it is left as it is unless the provider still has it open (then raised)."""
    try:
        close()
    except ProviderRefused:
        now = status()
        if now in still_open:
            raise
        return f"already {now}"
    return done
