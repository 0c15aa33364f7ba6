"""What each document says, as pure data built from database rows (no queries, no rendering).

A document's content is stored with it (`Document.content`), so the same content always renders to the same PDF,
and a copy sent years later says what the original said. Amounts are integer pence; templates format them.
"""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache
from typing import Annotated, Any, Literal

from babel import Locale
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from core.settings import CharitySettings

# Bump when a template changes what it prints; kept in the content so an old document can be told apart.
# 2: the donor's country (outside the UK), the gift a single-gift oral declaration covers, and a correction that says
# we no longer claim Gift Aid a receipt promised. Layout 1 content has none of these and renders as it did.
# 3: a statement's invitation to declare (`AnnualStatement.could_claim`) and an oral declaration's letter that dates
# what it covers (`OralConfirmation.covers`), and a statement that explains money returned other than by refund;
# earlier content has none of these and renders as it did.
# 4: tables laid out with fixed column widths (`table-layout: fixed`), which weasyprint lays out without measuring
# every cell's text first (a 12-gift statement: about an eighth less CPU). Same words; earlier content keeps the
# automatic widths it was printed with (the rules apply under `body.fixed-tables`, layout 4 on).
# 5: a statement says what its Returned column holds: refunds of the year's gifts made after the year ended are
# listed apart (`AnnualStatement.refunds_after`), and the note on chargebacks is printed only when a gift lost money
# other than by refund (`StatementGift.refunded`). Earlier content has neither field and prints its note as it did.
# Fixed column widths as layout 4 (`fixed-tables`).
LAYOUT_VERSION = 5

METHOD_LABELS = {"card": "Card", "direct_debit": "Direct Debit", "cash": "Cash", "cheque": "Cheque"}
REGULATOR_LABELS = {
    "CCEW": "Charity Commission for England and Wales",
    "CCNI": "Charity Commission for Northern Ireland",
    "OSCR": "Scottish Charity Regulator",
}
# An oral declaration may be cancelled within 30 days of its written confirmation (giftaid.md §1C rule 13).
ORAL_CANCELLATION_DAYS = dt.timedelta(days=30)
SCOPE_LABELS = {
    "this_gift": "this gift only",
    "future": "this gift and all future gifts",
    "past_4_years_and_future": "this gift, gifts made in the past 4 years and all future gifts",
    "period": "gifts made in a period",
}
NO_BENEFIT = "No goods or services were provided in return for this gift."
HOME_COUNTRY = "GB"


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Charity(Model):
    name: str
    registration: str
    address: str
    postcode: str
    email: str
    phone: str


class Donor(Model):
    title: str | None = None
    first_name: str
    last_name: str
    address_lines: list[str] = []
    postcode: str = ""
    email: str | None = None
    # ISO 3166 code as given ("" on documents made before it was kept) and, outside the UK, the name printed as the
    # last line of the address (kept in the content, so a later babel naming a country differently changes nothing).
    country: str = ""
    country_name: str = ""

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.title, self.first_name, self.last_name) if p)


class DeclarationSummary(Model):
    made_on: dt.date
    method: str
    scope: str
    start: dt.date | None = None
    end: dt.date | None = None
    confirmation_sent_on: dt.date | None = None
    cancellation_effective_on: dt.date | None = None

    @property
    def scope_text(self) -> str:
        if self.scope == "period" and self.start and self.end:
            return f"gifts made from {self.start:%d/%m/%Y} to {self.end:%d/%m/%Y}"
        return SCOPE_LABELS.get(self.scope, self.scope.replace("_", " "))

    def letter_scope_text(self) -> str:
        """What an enduring declaration covers, for a letter that names no gift: its gifts from the day the Gift Aid
        rules count them from (`future`: the day it was made; `past_4_years_and_future`: its start). "" for another
        scope (`scope_text` says it already)."""
        if self.scope == "future":
            first = self.made_on
        elif self.scope == "past_4_years_and_future":
            first = self.start or self.made_on
        else:
            return ""
        return f"all your gifts from {first:%d/%m/%Y} onwards"


class GiftAidNote(Model):
    """`claim`: a declaration covers the gift; `invite`: it could, none does; `none`: not eligible (say nothing);
    `withdrawn` (corrections only): the receipt said we would claim, and by the Gift Aid rules we now cannot (the
    declaration was cancelled within its 30 days, say): the correction says we will claim none."""

    status: Literal["claim", "invite", "none", "withdrawn"]
    claim_amount: int = 0
    declaration: DeclarationSummary | None = None


class GiftReceipt(Model):
    kind: Literal["gift_receipt"] = "gift_receipt"
    layout: int = LAYOUT_VERSION
    reference: str
    issued_on: dt.date
    charity: Charity
    donor: Donor
    gift_id: str
    amount: int
    currency: str = "GBP"
    received_on: dt.date
    method: str
    appeal: str
    description: str
    benefit: str = NO_BENEFIT
    gift_aid: GiftAidNote
    order_reference: str | None = None
    # Money already returned when the receipt was made (refunds, lost disputes), and the refunds that covers: the
    # receipt shows them, and only later refunds get a correction.
    returned: int = 0
    refunds_shown: list[str] = []
    # What each refund shown had returned of this gift when the receipt was made (a basket's refund may have come
    # off the goods only): a later re-allocation that changes it gets a correction. Not printed; {} on receipts made
    # before it was kept.
    refund_parts_shown: dict[str, int] = {}

    @property
    def kept(self) -> int:
        return self.amount - self.returned


class SaleLine(Model):
    description: str
    quantity: int
    unit_price: int
    total: int
    vat: int = 0


class SaleReceipt(Model):
    kind: Literal["sale_receipt"] = "sale_receipt"
    layout: int = LAYOUT_VERSION
    reference: str
    issued_on: dt.date
    charity: Charity
    donor: Donor
    order_id: str
    paid_on: dt.date
    method: str
    currency: str = "GBP"
    lines: list[SaleLine]
    goods_total: int
    vat_rate_bp: int = 0
    vat_amount: int = 0
    donation: int = 0
    # Where the donation line is receipted: its own gift receipt, or (a supporter on yearly statements) the statement.
    donation_on_statement: bool = False
    total_paid: int


class StatementGift(Model):
    received_on: dt.date
    amount: int
    currency: str = "GBP"
    returned: int = 0
    # Of `returned`, what refunds returned (layout 5 on; before, 0: all of it was taken to be other than refunds).
    refunded: int = 0
    method: str
    appeal: str
    gift_aided: bool

    @property
    def net(self) -> int:
        return self.amount - self.returned

    @property
    def taken_back(self) -> int:
        """Returned other than by refund: a chargeback, a lost card dispute, a reversal."""
        return max(self.returned - self.refunded, 0)


class StatementRefund(Model):
    refunded_on: dt.date
    amount: int
    currency: str = "GBP"
    gift_received_on: dt.date | None = None
    reason: str = ""


class AnnualStatement(Model):
    kind: Literal["annual_statement"] = "annual_statement"
    layout: int = LAYOUT_VERSION
    reference: str
    issued_on: dt.date
    charity: Charity
    donor: Donor
    tax_year: str
    period_start: dt.date
    period_end: dt.date
    currency: str = "GBP"
    declarations: list[DeclarationSummary]
    gifts: list[StatementGift]
    refunds: list[StatementRefund]
    # Refunds of the year's gifts made after the year ended, up to the statement (layout 5 on): its Returned column
    # counts them, so they are listed apart from the year's refunds.
    refunds_after: list[StatementRefund] = []
    total_donated: int  # in `currency` (sterling: Gift Aid is on sterling gifts only)
    total_gift_aided: int
    gift_aid: int
    grossed_up: int
    # What was donated in each other currency (net of returns), never added to the sterling figures.
    donated_in_other_currencies: dict[str, int] = {}
    # The Gift Aid a declaration could still bring on the year's gifts none covers (the rules' `no_declaration` or
    # `declaration_cancelled`; a declaration may reach back four years): the invitation the receipts a supporter on
    # yearly statements does not get would have carried. 0: no invitation.
    could_claim: int = 0

    @property
    def gift_aid_reminder(self) -> bool:
        """Whether the statement carries the taxpayer reminder and how to cancel (giftaid.md §6): when anything was
        Gift Aided, and also when nothing was (every gift refunded, say) while a declaration listed is not
        cancelled: the charity will claim on their next gifts under it."""
        return self.total_gift_aided > 0 or any(d.cancellation_effective_on is None for d in self.declarations)


class OralConfirmation(Model):
    kind: Literal["oral_confirmation"] = "oral_confirmation"
    layout: int = LAYOUT_VERSION
    reference: str
    issued_on: dt.date
    charity: Charity
    donor: Donor
    declaration_id: str
    declaration: DeclarationSummary
    # None: numbered for the post, its sending day not known yet (it is dated when a postal batch prints it).
    cancel_by: dt.date | None
    # The day this letter was sent, set as it goes out when that is not `issued_on` (or it went by post): the day crm
    # records as the declaration's `confirmation_sent_on`, `cancel_by` being 30 days after it. Stored with an
    # original dated so (the stored PDF is the letter that went); on a copy, set as the copy goes out.
    sent_on: dt.date | None = None
    # A declaration for one gift: that gift, so the letter says what it covers (None: not known, or another scope).
    gift_amount: int | None = None
    gift_currency: str = "GBP"
    gift_received_on: dt.date | None = None
    # What an enduring declaration covers, dated (`DeclarationSummary.letter_scope_text`); "": the scope's label, as
    # letters before layout 3 printed it.
    covers: str = ""

    def as_sent_on(self, day: dt.date) -> OralConfirmation:
        """The letter as it reads when it goes out on `day`: itself when it says so already (an email sent the day
        it was numbered), else dated `day` with the 30 days to cancel counted from it."""
        if self.cancel_by == day + ORAL_CANCELLATION_DAYS and (self.sent_on or self.issued_on) == day:
            return self
        return self.model_copy(update={"sent_on": day, "cancel_by": day + ORAL_CANCELLATION_DAYS})


class Correction(Model):
    kind: Literal["correction"] = "correction"
    layout: int = LAYOUT_VERSION
    reference: str
    issued_on: dt.date
    charity: Charity
    donor: Donor
    corrects_reference: str
    corrects_kind: str
    corrects_issued_on: dt.date
    currency: str = "GBP"
    original_amount: int
    refunded_amount: int
    total_returned: int
    corrected_amount: int
    refunded_on: dt.date
    reason: str = ""
    gift_aid: GiftAidNote | None = None
    is_sale: bool = False
    # A further correction: the refund changed after an earlier document showed it (re-allocated between a basket's
    # goods and its donation, or failed: the money came back to us). It replaces that document's figures (an earlier
    # correction, or the receipt itself when the receipt showed the refund); `refunded_amount` is what this refund
    # returned of this gift or purchase now, `total_returned` and `corrected_amount` what stands now.
    replaces_reference: str | None = None
    replaces_kind: str | None = None
    replaces_issued_on: dt.date | None = None
    # What the replaced document said this refund returned (None: a receipt, which showed it in its total).
    replaced_refunded_amount: int | None = None
    refund_amount: int = 0  # the whole refund (a basket's may be split between the goods and the donation)
    refund_failed: bool = False

    @property
    def replaces_a_correction(self) -> bool:
        return self.replaces_kind == "correction"


AnyDocument = Annotated[
    GiftReceipt | SaleReceipt | AnnualStatement | OralConfirmation | Correction, Field(discriminator="kind")
]
_ADAPTER: TypeAdapter[AnyDocument] = TypeAdapter(AnyDocument)


def load(content: dict[str, Any]) -> AnyDocument:
    """A document back from its stored JSON."""
    return _ADAPTER.validate_python(content)


def dump(document: AnyDocument) -> dict[str, Any]:
    return document.model_dump(mode="json")


# --- building blocks from rows and settings ------------------------------------------------------------------------


def charity_from(settings: CharitySettings) -> Charity:
    regulator = REGULATOR_LABELS.get(settings.regulator)
    registration = f"Registered charity number {settings.registration_number}"
    if regulator:
        registration += f" ({regulator})"
    return Charity(
        name=settings.name,
        registration=registration,
        address=settings.address,
        postcode=settings.postcode,
        email=settings.email,
        phone=settings.phone,
    )


def donor_from(details: dict[str, Any], *, email: str | None = None) -> Donor:
    """From a name-and-address dict as kept with a gift (`DonorDetails.as_dict()`) or a declaration."""
    lines = [str(details.get(k) or "").strip() for k in ("address_line1", "address_line2", "town")]
    country = str(details.get("country") or "").strip().upper()
    return Donor(
        title=details.get("title") or None,
        first_name=str(details.get("first_name") or ""),
        last_name=str(details.get("last_name") or ""),
        address_lines=[line for line in lines if line],
        postcode=str(details.get("postcode") or ""),
        email=email if email is not None else details.get("email"),
        country=country,
        country_name=country_name(country),
    )


def country_name(code: str) -> str:
    """What an address outside the UK ends with: the country's English name, or the code itself when CLDR has no
    name for it; "" for the UK (or no country given)."""
    code = code.strip().upper()
    if not code or code == HOME_COUNTRY:
        return ""
    return str(_country_names().get(code) or code)


@lru_cache(maxsize=1)
def _country_names() -> dict[str, str]:
    """CLDR's British English country names (babel, a dependency already), loaded on first use."""
    return dict(Locale.parse("en_GB").territories)


def declaration_summary(declaration: Any) -> DeclarationSummary:
    """From a `crm.models.Declaration`, or a row with the same fields (receipts' repository reads them as rows)."""
    return DeclarationSummary(
        made_on=declaration.made_on,
        method=str(declaration.method),
        scope=str(declaration.scope),
        start=declaration.start,
        end=declaration.end,
        confirmation_sent_on=declaration.confirmation_sent_on,
        cancellation_effective_on=declaration.cancellation_effective_on,
    )


def method_label(method: str) -> str:
    return METHOD_LABELS.get(str(method), str(method).replace("_", " ").capitalize())


def appeal_label(appeal: str | None) -> str:
    if not appeal:
        return "General fund"
    words = re.sub(r"[-_]+", " ", appeal).strip()
    return words[:1].upper() + words[1:]


# --- tax years -----------------------------------------------------------------------------------------------------


class TaxYearError(ValueError):
    pass


def parse_tax_year(text: str) -> tuple[dt.date, dt.date]:
    """`"2025-26"` → (6 April 2025, 5 April 2026)."""
    match = re.fullmatch(r"(\d{4})-(\d{2})", text.strip())
    if not match or (int(match[1]) + 1) % 100 != int(match[2]):
        raise TaxYearError(f"{text!r} is not a tax year; write it like 2025-26")
    start_year = int(match[1])
    return dt.date(start_year, 4, 6), dt.date(start_year + 1, 4, 5)


def tax_year_of(day: dt.date) -> str:
    start_year = day.year if day >= dt.date(day.year, 4, 6) else day.year - 1
    return f"{start_year}-{(start_year + 1) % 100:02d}"
