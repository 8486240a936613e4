from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from cbi_service.kit.money import Money, PositiveMoney, format_amount, parse_amount


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [("150000.00", "COP", 15000000), ("1500", "JPY", 1500), ("1.234", "KWD", 1234), ("0.01", "USD", 1)],
)
def test_parse_uses_iso4217_digits(amount, currency, minor):
    assert parse_amount(amount, currency) == minor
    assert format_amount(minor, currency) == amount


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        ("150000.0", "COP"),
        ("150000", "COP"),
        ("1.5", "JPY"),
        ("1.00", "XXX"),
        ("1.00", "ABC"),
        ("1e5", "USD"),
    ],
)
def test_wrong_digits_or_currency_refused(amount, currency):
    with pytest.raises(ValidationError):
        Money(amount=amount, currency=currency)


@pytest.mark.parametrize(("amount", "currency"), [("99999999999999999.99", "COP"), ("9999999999999.999", "KWD")])
def test_amounts_beyond_2_pow_53_minor_units_are_refused(amount, currency):
    with pytest.raises(ValidationError):
        Money(amount=amount, currency=currency)


@pytest.mark.parametrize("amount", ["0.00", "-1.00"])
def test_positive_money_refuses_zero_and_negative(amount):
    with pytest.raises(ValidationError):
        PositiveMoney(amount=amount, currency="USD")


@given(st.integers(min_value=-(10**15), max_value=10**15), st.sampled_from(["COP", "JPY", "KWD", "EUR"]))
def test_round_trip(minor, currency):
    assert parse_amount(format_amount(minor, currency), currency) == minor
    assert Money.of(minor, currency).minor == minor


# Digits of other scripts that Python's `int`, `Decimal` and a Unicode `\d` all read as numbers.
FOREIGN_DIGIT_AMOUNTS = ["１０.００", "1０.00", "10.０0", "١٠.٠٠", "१०.००", "𝟏𝟎.𝟎𝟎"]


@pytest.mark.parametrize("amount", FOREIGN_DIGIT_AMOUNTS)
def test_only_ascii_digits_are_money(amount):
    with pytest.raises(ValueError, match="decimal string"):
        parse_amount(amount, "COP")
    for model in (Money, PositiveMoney):
        with pytest.raises(ValidationError):
            model(amount=amount, currency="COP")
