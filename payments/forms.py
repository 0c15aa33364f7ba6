"""The public donate and shop forms: parsing and checking what a donor typed, before anything is written.

Every rule that needs no database is checked here and every problem is reported at once, keyed by field name, so
the page can show each message beside its field. Stock and SKU rules need the catalogue and live in
`payments.checkout`.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from babel import Locale
from starlette.datastructures import FormData

from core.errors import ValidationFailed
from core.money import Money, MoneyError, format_pence
from core.settings import DonationSettings
from crm.errors import InvalidDonorDetails
from crm.validation import DonorDetails, house_from_line1, is_non_uk, overseas_house
from payments.models import Frequency, Method

DONOR_FIELDS = (
    "title",
    "first_name",
    "last_name",
    "email",
    "address_line1",
    "address_line2",
    "town",
    "postcode",
    "country",
)
# A field people never see (hidden by CSS, skipped by screen readers and the keyboard) that form-filling bots do fill.
HONEYPOT_FIELD = "website"
# The donor's own id for one filled-in form, so a resubmission (double click, retry after an error) reuses the
# checkout it already created instead of starting another (see docs/checkout.md).
REFERENCE_FIELD = "checkout_ref"
TICKED = {"yes", "on", "true", "1"}
APPEAL_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_QUANTITY = 50
# A sign too: Money.parse takes "+1.000", which this must refuse like "1.000" (docs/checkout.md).
_TOO_MANY_DECIMALS = re.compile(r"£?\s*[+-]?[\d,]*\.\d{3,}")
# ISO 3166-1 alpha-2 country codes (babel's territories less its regions, groupings and codes reserved for parts of
# other countries). XK, Kosovo's user-assigned code, is kept: banks and card schemes use it.
_NOT_COUNTRIES = {"AC", "CP", "CQ", "DG", "EA", "EU", "EZ", "IC", "QO", "TA", "UN", "XA", "XB", "ZZ"}
COUNTRIES = frozenset(
    code
    for code in map(str, Locale("en").territories)
    if len(code) == 2 and code.isalpha() and code not in _NOT_COUNTRIES
)


class InvalidForm(ValidationFailed):
    """A form with mistakes: `errors` maps each field to what is wrong with it."""

    def __init__(self, errors: dict[str, str], *, status_code: int = 400):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()), errors)
        self.status_code = status_code


@dataclass(frozen=True)
class DonationRequest:
    amount: int
    frequency: Frequency
    method: Method
    donor: DonorDetails
    gift_aid: bool
    email_updates: bool
    appeal: str | None
    reference: uuid.UUID | None


@dataclass(frozen=True)
class BasketLine:
    sku: str
    quantity: int


@dataclass(frozen=True)
class ShopRequest:
    lines: tuple[BasketLine, ...]
    donation: int
    donor: DonorDetails
    gift_aid: bool
    email_updates: bool
    appeal: str | None
    reference: uuid.UUID | None


# Control characters (NUL above all: PostgreSQL refuses it in text) are never part of what a donor meant to type.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _typed(value: object) -> str:
    return _CONTROL.sub("", value).strip() if isinstance(value, str) else ""


def text(form: FormData, name: str) -> str:
    return _typed(form.get(name))


def texts(form: FormData, name: str) -> list[str]:
    return [_typed(value) for value in form.getlist(name)]


def form_values(form: FormData) -> dict[str, str]:
    """What was typed, to fill the form in again when it is shown with its errors."""
    return {key: text(form, key) for key in form}


def parse_reference(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


def reference_of(form: FormData) -> uuid.UUID | None:
    return parse_reference(text(form, REFERENCE_FIELD))


def parse_pounds(raw: str, *, limits: DonationSettings, what: str = "amount") -> tuple[int | None, str | None]:
    """(pence, None) or (None, message) for an amount typed in pounds: "25", "12.50", "£1,000"."""
    if not raw:
        return None, f"Enter an {what} in pounds, for example 25 or 12.50"
    if _TOO_MANY_DECIMALS.fullmatch(raw):
        # Zeros too: "1.000" is one thousand where a point separates thousands, and "12.500" is not what £12.50 is
        # written as here. Either way the donor is asked, not guessed at (docs/checkout.md).
        return None, "Enter pounds and pence with at most 2 decimal places, for example 12.50"
    try:
        money = Money.parse(raw)
    except MoneyError:
        return None, f"Enter an {what} in pounds, for example 25 or 12.50"
    if money.amount < limits.min_amount:
        return None, f"The smallest {what} we can take online is {format_pence(limits.min_amount)}"
    if money.amount > limits.max_amount:
        largest = format_pence(limits.max_amount)
        return None, f"The largest {what} we can take online is {largest}; please contact us to give more"
    return money.amount, None


def _choice(raw: str, allowed: type[Frequency] | type[Method], default: str) -> str | None:
    value = raw or default
    return value if value in {member.value for member in allowed} else None


# Stripe refuses an email address with any character outside ASCII (an accented or non-Latin local part, a domain
# written in Unicode: `email_invalid`), though email-validator takes them (SMTPUTF8, IDNA); GoCardless gets the same
# address as the Direct Debit payer's. Refused here, before anything is recorded or either is called.
PROVIDER_EMAIL_MESSAGE = (
    "Enter an email address using only unaccented letters (a to z), digits and symbols such as . - _ + "
    "(our payment providers cannot take other characters)"
)


def _provider_refuses_email(typed: str) -> bool:
    # NFKC as crm.validation.normalise_email reads it: full-width letters from a phone's keyboard become ASCII.
    return not unicodedata.normalize("NFKC", typed).isascii()


def _donor(form: FormData, errors: dict[str, str], *, require_address: bool) -> DonorDetails | None:
    # A GB address with a Jersey, Guernsey or Isle of Man postcode becomes that island (non-UK for HMRC) in
    # DonorDetails.normalised.
    raw = DonorDetails(
        first_name=text(form, "first_name"),
        last_name=text(form, "last_name"),
        email=text(form, "email"),
        title=text(form, "title") or None,
        address_line1=text(form, "address_line1"),
        address_line2=text(form, "address_line2"),
        town=text(form, "town"),
        postcode=text(form, "postcode"),
        country=text(form, "country").upper() or "GB",
    )
    country = "GB" if raw.country == "UK" else raw.country
    # crm checks the code's shape (two letters); a code that is no country ("ZZ") is a typing mistake here, not an
    # address to send to GoCardless and put on a Gift Aid declaration.
    unknown = re.fullmatch(r"[A-Z]{2}", country) is not None and country not in COUNTRIES
    if unknown:
        errors["country"] = "Enter the two-letter code of a country, for example GB, IE or FR"
    refused_email = _provider_refuses_email(raw.email or "")
    try:
        donor = raw.normalised(require_email=True, require_address=require_address)
    except InvalidDonorDetails as exc:
        errors.update(exc.errors)
        donor = None
    if refused_email:
        errors.setdefault("email", PROVIDER_EMAIL_MESSAGE)  # a malformed address is told so first
    return None if unknown or refused_email else donor


GIFT_AID_HOUSE_MESSAGE = (
    "Enter your house name or number in the first line of the address (Gift Aid needs it, not only punctuation)"
)


def _gift_aid_house(donor: DonorDetails | None, errors: dict[str, str]) -> None:
    """With Gift Aid ticked, the house HMRC is given (crm takes it from the address as `house_from_line1`, or the
    address for a donor outside the UK) must name or number one: a line of nothing but punctuation ("-", ".") is a
    donor's way of giving none, and a declaration without a house name or number is no valid declaration."""
    if donor is None or "address_line1" in errors:
        return
    if is_non_uk(donor.country, donor.postcode or ""):
        house = overseas_house(donor.address_line1, donor.address_line2, donor.town, donor.postcode)
    else:
        house = house_from_line1(donor.address_line1 or "")
    if not any(ch.isalnum() for ch in house):
        errors["address_line1"] = GIFT_AID_HOUSE_MESSAGE


def _common(form: FormData, errors: dict[str, str]) -> tuple[bool, bool, str | None]:
    if text(form, HONEYPOT_FIELD):
        errors["form"] = "We could not accept this form. Please check it and send it again."
    gift_aid = text(form, "gift_aid").lower() in TICKED
    email_updates = text(form, "email_updates").lower() in TICKED
    appeal = text(form, "appeal") or None
    if appeal is not None and not APPEAL_CODE.match(appeal):
        errors["appeal"] = "An appeal code is letters, digits, dots, dashes or underscores (at most 64)"
    return gift_aid, email_updates, appeal


def parse_donation_form(form: FormData, limits: DonationSettings) -> DonationRequest:
    """The donate form, checked; InvalidForm lists every mistake."""
    errors: dict[str, str] = {}
    amount, problem = parse_pounds(text(form, "amount"), limits=limits)
    if problem:
        errors["amount"] = problem
    frequency = _choice(text(form, "frequency").lower(), Frequency, "once")
    if frequency is None:
        errors["frequency"] = "Choose one-off or monthly"
    method = _choice(text(form, "method").lower(), Method, "card")
    if method not in {Method.CARD, Method.DIRECT_DEBIT}:
        errors["method"] = "Choose card or Direct Debit"
    gift_aid, email_updates, appeal = _common(form, errors)
    # Gift Aid needs the house and postcode HMRC asks for: an empty first address line refuses the tick.
    donor = _donor(form, errors, require_address=gift_aid)
    if gift_aid:
        _gift_aid_house(donor, errors)
    if errors:
        raise InvalidForm(errors)
    assert amount is not None and donor is not None and frequency is not None and method is not None
    return DonationRequest(
        amount=amount,
        frequency=Frequency(frequency),
        method=Method(method),
        donor=donor,
        gift_aid=gift_aid,
        email_updates=email_updates,
        appeal=appeal,
        reference=reference_of(form),
    )


def parse_basket(skus: Sequence[str], quantities: Sequence[str], errors: dict[str, str]) -> list[BasketLine]:
    """Pairs the repeated `sku` and `quantity` fields; a quantity of 0 (or left empty) is not bought."""
    if len(skus) != len(quantities):
        errors["basket"] = "Each shirt needs a quantity"
        return []
    wanted: dict[str, int] = {}
    for sku, raw in zip(skus, quantities, strict=True):
        if not sku:
            errors["basket"] = "A line of the basket names no shirt"
            continue
        if not raw:
            continue
        if not re.fullmatch(r"\d{1,4}", raw):
            errors[f"quantity:{sku}"] = "Enter a whole number of shirts"
            continue
        if int(raw):
            wanted[sku] = wanted.get(sku, 0) + int(raw)
    for sku, quantity in wanted.items():
        if quantity > MAX_QUANTITY:
            errors[f"quantity:{sku}"] = f"At most {MAX_QUANTITY} of one shirt online; please contact us for more"
    if not wanted and "basket" not in errors and not any(k.startswith("quantity:") for k in errors):
        errors["basket"] = "Choose at least one shirt (to give without buying, use the donate page)"
    return [BasketLine(sku, quantity) for sku, quantity in wanted.items()]


def _is_zero(raw: str) -> bool:
    try:
        return Money.parse(raw).amount == 0
    except MoneyError:
        return False


def parse_shop_form(form: FormData, limits: DonationSettings) -> ShopRequest:
    """The shop form, checked except for what needs the catalogue (SKUs known, in stock)."""
    errors: dict[str, str] = {}
    lines = parse_basket(texts(form, "sku"), texts(form, "quantity"), errors)
    donation = 0
    raw_donation = text(form, "donation")
    if raw_donation and not _is_zero(raw_donation):
        amount, problem = parse_pounds(raw_donation, limits=limits, what="donation")
        if problem:
            errors["donation"] = problem
        donation = amount or 0
    gift_aid, email_updates, appeal = _common(form, errors)
    # Shirts are posted: the address is always needed here, and Gift Aid needs it too.
    donor = _donor(form, errors, require_address=True)
    if donor is not None and not donor.town:
        errors["town"] = "Enter the town or city"
    if gift_aid:
        _gift_aid_house(donor, errors)
    if errors:
        raise InvalidForm(errors)
    assert donor is not None
    return ShopRequest(
        lines=tuple(lines),
        donation=donation,
        donor=donor,
        gift_aid=gift_aid,
        email_updates=email_updates,
        appeal=appeal,
        reference=reference_of(form),
    )
