"""Money as integer minor units with an ISO currency. Never float."""

from __future__ import annotations

import dataclasses
import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum


class Currency(StrEnum):
    GBP = "GBP"
    EUR = "EUR"


# Digits, a decimal point and a sign: at most fifteen digits before the point (far beyond any gift).
_PLAIN_AMOUNT = re.compile(r"[+-]?(\d{1,15}(\.\d*)?|\.\d+)")
# No leading zero: "0,500" is no grouping anyone writes (a decimal comma typed oddly), so it is refused, not £500.
_THOUSANDS = re.compile(r"[+-]?[1-9]\d{0,2}(,\d{3})+(\.\d*)?")
_MINOR_UNITS = {Currency.GBP: 2, Currency.EUR: 2}
_SYMBOLS = {Currency.GBP: "£", Currency.EUR: "€"}


class MoneyError(ValueError):
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class Money:
    amount: int
    currency: Currency = Currency.GBP

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise MoneyError(f"money amounts are integer minor units, not {type(self.amount).__name__}")

    @classmethod
    def zero(cls, currency: Currency | str = Currency.GBP) -> Money:
        return cls(0, Currency(currency))

    @classmethod
    def parse(cls, text: str, currency: Currency | str = Currency.GBP) -> Money:
        """`"12.50"` → Money(1250). Refuses more decimals than the currency has, and any other notation than plain
        digits with a decimal point: `Decimal` alone takes "1e3" (£1,000) and "1e999999", whose scaling costs
        seconds of CPU or overflows."""
        cur = Currency(str(currency).upper())
        cleaned = text.strip().lstrip("£").strip()  # "£ 25" as well as "£25"
        if "," in cleaned:
            # Commas only between thousands ("1,000.50"): "12,50" is a decimal comma, and reading it as 1250 would
            # charge a hundred times what was meant.
            if not _THOUSANDS.fullmatch(cleaned):
                raise MoneyError(f"{text!r} is not an amount of money: write pence after a point, as in 12.50")
            cleaned = cleaned.replace(",", "")
        if not _PLAIN_AMOUNT.fullmatch(cleaned):
            raise MoneyError(f"{text!r} is not an amount of money")
        try:
            value = Decimal(cleaned)
        except InvalidOperation as exc:
            raise MoneyError(f"{text!r} is not an amount of money") from exc
        if not value.is_finite():
            raise MoneyError(f"{text!r} is not an amount of money")
        places = _MINOR_UNITS[cur]
        scaled = value.scaleb(places)
        if scaled != scaled.to_integral_value():
            raise MoneyError(f"{text!r} has more than {places} decimal places")
        return cls(int(scaled), cur)

    def _check(self, other: Money) -> None:
        if self.currency != other.currency:
            raise MoneyError(f"cannot mix {self.currency} and {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._check(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._check(other)
        return Money(self.amount - other.amount, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount, self.currency)

    def decimal(self) -> Decimal:
        return Decimal(self.amount).scaleb(-_MINOR_UNITS[self.currency])

    def plain(self) -> str:
        """`1234.50`: two decimals, no separators (HMRC XML and spreadsheets)."""
        return f"{self.decimal():.2f}"

    def format(self) -> str:
        """`£1,234.50`, `-€5.00`: babel's en_GB currency format, written out (tests/core/test_money.py holds it to
        babel's text) because it is a tenth of the cost, and a statement formats a score of amounts."""
        whole, rest = divmod(abs(self.amount), 10 ** _MINOR_UNITS[self.currency])
        return f"{'-' if self.amount < 0 else ''}{_SYMBOLS[self.currency]}{whole:,}.{rest:02d}"

    def to_json(self) -> dict[str, object]:
        return {"amount": self.amount, "currency": str(self.currency)}


def percent_of(amount: int, numerator: int, denominator: int) -> int:
    """`amount * numerator / denominator` in minor units, rounded half up: the one rounding rule."""
    if denominator <= 0:
        raise MoneyError("denominator must be positive")
    value = (Decimal(amount) * numerator / denominator).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return int(value)


def gift_aid_on(amount: int) -> int:
    """Gift Aid at the basic rate: 25p for every £1 (20/80), rounded half up to the penny."""
    return percent_of(amount, 25, 100)


def pence_from_decimal_string(values: list[str]) -> int:
    """Add GoCardless-style decimal pence strings ("100.0") exactly, then round once (half up)."""
    total = sum((Decimal(v) for v in values), Decimal(0))
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def format_pence(amount: int, currency: str = "GBP") -> str:
    return Money(amount, Currency(currency)).format()
