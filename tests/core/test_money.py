"""core.money's written-out currency format against babel's en_GB text, which it replaces at run time."""

from __future__ import annotations

import pytest
from babel.numbers import format_currency

from core.money import Currency, Money, format_pence


@pytest.mark.parametrize("currency", list(Currency))
def test_amounts_read_as_babel_writes_them_in_en_gb(currency: Currency) -> None:
    amounts = [0, 1, -1, 5, 99, 100, -100, 123_450, -123_456, 99_999_999, 10**12 + 7, *range(-250_000, 250_000, 997)]
    expected = [format_currency(Money(a, currency).decimal(), str(currency), locale="en_GB") for a in amounts]
    assert [format_pence(a, str(currency)) for a in amounts] == expected
