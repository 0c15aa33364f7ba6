"""core.money's written-out currency format against babel's en_GB text, which it replaces at run time."""

from __future__ import annotations

import pytest
from babel.numbers import format_currency

from core.money import Currency, Money, MoneyError, format_pence


@pytest.mark.parametrize("currency", list(Currency))
def test_amounts_read_as_babel_writes_them_in_en_gb(currency: Currency) -> None:
    amounts = [0, 1, -1, 5, 99, 100, -100, 123_450, -123_456, 99_999_999, 10**12 + 7, *range(-250_000, 250_000, 997)]
    expected = [format_currency(Money(a, currency).decimal(), str(currency), locale="en_GB") for a in amounts]
    assert [format_pence(a, str(currency)) for a in amounts] == expected


@pytest.mark.parametrize("text", ["1e3", "1E3", "1e999999", "2.5e1", "1_000", "0x10", "NaN", "Infinity", "1" * 16])
def test_only_plain_digits_are_an_amount(text: str) -> None:
    """`Decimal` takes exponents ("1e3" would be £1,000, "1e999999" costs seconds or overflows), underscores and
    NaN; an amount of money is digits with a decimal point, at most fifteen before it."""
    with pytest.raises(MoneyError):
        Money.parse(text)


@pytest.mark.parametrize(
    ("text", "pence"),
    [
        ("12.50", 1250),
        ("1,000", 100000),
        ("£5", 500),
        ("£ 25", 2500),
        (".5", 50),
        ("7.", 700),
        ("1,234,567.89", 123456789),
    ],
)
def test_plain_amounts_still_parse(text: str, pence: int) -> None:
    assert Money.parse(text).amount == pence


@pytest.mark.parametrize("text", ["12,50", "1,00", "5,5", "1,0000", ",500", "1,000,00", "1,,000", "0,500", "00,500"])
def test_a_comma_only_between_thousands(text: str) -> None:
    """A decimal comma ("12,50") read as 1250 would charge a hundred times what was meant."""
    with pytest.raises(MoneyError):
        Money.parse(text)
