"""Donor details as HMRC needs them, checked when they are entered rather than when a claim is built."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from email_validator import EmailNotValidError, validate_email

from crm.errors import InvalidDonorDetails

# UK postcode, written with one space: HMRC's own pattern (its schedule validator and r68_PostCodeType), so a
# postcode the form takes is one a claim can send (a second letter I or Z, say, is refused here, not held back later).
# Anchored, for Python and for the databases' regular expressions alike (giftaid's eligibility checks it in SQL).
UK_POSTCODE_PATTERN = (
    r"^(GIR 0AA|(([A-Z][0-9][0-9]?)|(([A-Z][A-HJ-Y][0-9][0-9]?)|(([A-Z][0-9][A-Z])|([A-Z][A-HJ-Y][0-9]?[A-Z]))))"
    r" [0-9][A-Z]{2})$"
)
UK_POSTCODE = re.compile(UK_POSTCODE_PATTERN)
# Jersey, Guernsey and the Isle of Man are non-UK for HMRC (postcode X / Overseas).
CROWN_DEPENDENCIES = {"JE", "GG", "IM"}
TITLE = re.compile(r"^[A-Za-z]{1,4}$")
NAME = re.compile(r"^[^\x00-\x1f]{1,35}$")
MAX_NAME = 35  # HMRC's limit for a donor's first and last name, kept for every supporter
MAX_INTEREST_NOTE = 500
MAX_STAFF_NOTE = 4000


def too_long(fields: dict[str, tuple[str, int, str]]) -> dict[str, str]:
    """An error for each field longer than it may be ({field: (value, limit, what it is)}): what people type is
    refused, never cut to fit (a cut name, address or note is not what they gave)."""
    return {
        name: f"{what} is at most {limit:,} characters"
        for name, (value, limit, what) in fields.items()
        if len(value) > limit
    }


def refuse_too_long(fields: dict[str, tuple[str, int, str]]) -> None:
    """InvalidDonorDetails naming every field of `too_long`'s."""
    errors = too_long(fields)
    if errors:
        raise InvalidDonorDetails("; ".join(f"{name}: {text}" for name, text in errors.items()), errors)


def normalise_email(raw: str) -> str:
    """NFKC, trimmed, lower case; refuses what is not an email address."""
    text = unicodedata.normalize("NFKC", raw or "").strip()
    if not text:
        raise InvalidDonorDetails("an email address is needed", {"email": "Enter an email address"})
    try:
        checked = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidDonorDetails(
            f"{raw!r} is not an email address: {exc}", {"email": "Enter a valid email address"}
        ) from exc
    return checked.normalized.lower()


# The longest value each address column holds (crm.models: supporter_addresses, declarations, supporters).
MAX_ADDRESS_LINE = 100
MAX_TOWN = 60
MAX_POSTCODE = 10


def normalise_postcode(raw: str, country: str = "GB") -> str:
    """A UK postcode in upper case with one space; other countries' as given (trimmed, upper case)."""
    text = re.sub(r"\s+", "", unicodedata.normalize("NFKC", raw or "")).upper()
    if country.upper() != "GB":
        given = (raw or "").strip().upper()
        if len(given) > MAX_POSTCODE:
            # Refused, not cut: a postcode missing its end is another address (and the column holds 10).
            message = f"A postcode is at most {MAX_POSTCODE} characters"
            raise InvalidDonorDetails(f"{raw!r} is too long for a postcode", {"postcode": message})
        return given
    if len(text) < 5:
        raise InvalidDonorDetails(f"{raw!r} is not a UK postcode", {"postcode": "Enter a valid UK postcode"})
    formatted = f"{text[:-3]} {text[-3:]}"
    if not UK_POSTCODE.fullmatch(formatted):
        raise InvalidDonorDetails(f"{raw!r} is not a UK postcode", {"postcode": "Enter a valid UK postcode"})
    return formatted


# Postcode areas of the Crown Dependencies, which use UK-style postcodes but are not the UK for HMRC.
CROWN_DEPENDENCY_AREAS = {"JE": "JE", "GY": "GG", "IM": "IM"}
_AREA = re.compile(r"^([A-Z]{1,2})[0-9]")


def crown_dependency_of(postcode: str) -> str | None:
    """The country code (JE, GG, IM) of a Jersey, Guernsey or Isle of Man postcode, else None."""
    match = _AREA.match(re.sub(r"\s+", "", postcode or "").upper())
    return CROWN_DEPENDENCY_AREAS.get(match.group(1)) if match else None


def is_non_uk(country: str, postcode: str = "") -> bool:
    """Non-UK for HMRC: any country but GB, and a GB address whose postcode is in Jersey, Guernsey or Man."""
    return country.upper() != "GB" or crown_dependency_of(postcode) is not None


def overseas_house(*parts: str | None) -> str:
    """A non-UK donor's house for HMRC: as much of the address as fits in 40 characters (giftaid.md §1E rule 25: the
    postcode column says X, so the address must carry itself)."""
    text = ", ".join(" ".join(part.split()) for part in parts if part and part.strip())
    return text[:40].rstrip(" ,")


def house_from_line1(line1: str) -> str:
    """HMRC's house name or number: the leading number of the first address line, or the line (≤ 40 chars)."""
    text = " ".join((line1 or "").split())
    match = re.match(r"^(\d+[A-Za-z]?(?:-\d+[A-Za-z]?)?)\b", text)
    if match:
        return match.group(1)
    return text[:40].rstrip()


# Control characters: never part of a name or a note (and PostgreSQL's text cannot hold NUL at all). With them, what
# XML 1.0 cannot hold (U+FFFE, U+FFFF, lone surrogates): names and addresses go into HMRC's XML as they are kept,
# where one such character would make the whole claim's message malformed.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def clean_text(value: str) -> str:
    """Free text people type (notes): control characters removed, lines and tabs kept, trimmed."""
    return _CONTROL.sub("", value or "").strip()


# Letters that print as nothing (Hangul fillers, the Braille blank): a "name" of these is empty.
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# Joiners shape letters inside a word in Persian, Arabic and Indic names: kept there, dropped elsewhere.
_JOINERS = frozenset("\u200c\u200d")


def _invisible(char: str) -> bool:
    """Format characters (zero-width spaces, direction marks, the BOM) and blank letters: nothing on paper."""
    return unicodedata.category(char) == "Cf" or char in _BLANK_LETTERS


def clean_name(value: str) -> str:
    """A name or an address line: NFKC, control and invisible characters removed (a joiner between two letters
    stays), one space between words. A value with nothing visible is empty, so a required field is still missing."""
    text = _CONTROL.sub("", unicodedata.normalize("NFKC", value or ""))
    kept = "".join(
        char
        for i, char in enumerate(text)
        if not _invisible(char)
        or (char in _JOINERS and 0 < i < len(text) - 1 and text[i - 1].isalpha() and text[i + 1].isalpha())
    )
    return " ".join(kept.split())


@dataclass
class DonorDetails:
    """Name and address as a donor gave them (a form, staff, an import)."""

    first_name: str
    last_name: str
    email: str | None = None
    title: str | None = None
    address_line1: str = ""
    address_line2: str = ""
    town: str = ""
    postcode: str = ""
    country: str = "GB"
    errors: dict[str, str] = field(default_factory=dict, repr=False)

    def normalised(self, *, require_email: bool = False, require_address: bool = False) -> DonorDetails:
        """A checked copy, or InvalidDonorDetails listing every field that is wrong."""
        errors: dict[str, str] = {}
        title = clean_name(self.title or "") or None
        if title and not TITLE.match(title.rstrip(".")):
            errors["title"] = "A title is 1 to 4 letters, e.g. Mr, Mrs, Ms, Dr"
        elif title:
            title = title.rstrip(".")
        first, last = clean_name(self.first_name), clean_name(self.last_name)
        if not first or not NAME.match(first):
            errors["first_name"] = "Enter a first name (at most 35 characters)"
        if not last or not NAME.match(last):
            errors["last_name"] = "Enter a last name (at most 35 characters)"
        country = (self.country or "GB").strip().upper()
        # "UK" is what British donors type; ISO 3166 reserves it for the United Kingdom, whose code is GB.
        country = "GB" if country == "UK" else country
        if not re.fullmatch(r"[A-Z]{2}", country):
            errors["country"] = "Enter a two-letter country code, e.g. GB"
            country = "GB"
        email = None
        if self.email or require_email:
            try:
                email = normalise_email(self.email or "")
            except InvalidDonorDetails as exc:
                errors.update(exc.errors)
        postcode = ""
        if self.postcode or require_address:
            try:
                postcode = normalise_postcode(self.postcode, country)
            except InvalidDonorDetails as exc:
                errors.update(exc.errors)
        # A Jersey, Guernsey or Isle of Man postcode given with "GB" is that island: non-UK for HMRC.
        dependency = crown_dependency_of(postcode) if country == "GB" else None
        if dependency is not None:
            country = dependency
        line1, line2, town = clean_name(self.address_line1), clean_name(self.address_line2), clean_name(self.town)
        if require_address and not line1:
            errors["address_line1"] = "Enter the first line of the address (house name or number)"
        # Too long is refused, never cut to fit the column: a cut address is one the donor did not give.
        errors.update(
            too_long(
                {
                    "address_line1": (line1, MAX_ADDRESS_LINE, "The first address line"),
                    "address_line2": (line2, MAX_ADDRESS_LINE, "The second address line"),
                    "town": (town, MAX_TOWN, "The town or city"),
                }
            )
        )
        if errors:
            raise InvalidDonorDetails("; ".join(f"{k}: {v}" for k, v in errors.items()), errors)
        return DonorDetails(
            first_name=first,
            last_name=last,
            email=email,
            title=title,
            address_line1=line1,
            address_line2=line2,
            town=town,
            postcode=postcode,
            country=country,
        )

    def as_dict(self) -> dict[str, str | None]:
        return {
            "title": self.title,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "email": self.email,
            "address_line1": self.address_line1,
            "address_line2": self.address_line2,
            "town": self.town,
            "postcode": self.postcode,
            "country": self.country,
        }
