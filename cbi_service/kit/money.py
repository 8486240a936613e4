"""Money at the API edge: decimal strings with exactly the currency's ISO 4217 minor digits.

Below the edge every amount is an integer of minor units plus a currency code; floats never appear.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated

from iso4217 import Currency
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from cbi_service.kit.errors import UnprocessableEntity
from cbi_service.kit.validation import field_error

# The largest amount in minor units anything may carry: exact in every JSON client's numbers (2**53) and far
# inside BIGINT, so no total of realistic size can overflow a column.
MAX_MINOR = 2**53

# `[0-9]`, never `\d`: `\d` also matches other scripts' digits (full-width "１０.００"), which are not money.
_AMOUNT = re.compile(r"^(-?)([0-9]+)(?:\.([0-9]+))?$")


@functools.lru_cache(maxsize=512)
def currency_exponent(code: str) -> int:
    """Minor-unit digits of an active ISO 4217 currency; funds codes without an exponent are refused.
    Remembered per code (a refusal is not): every amount of a ten-thousand-item request asks."""
    try:
        exponent = Currency(code).exponent
    except ValueError as exc:
        raise ValueError(f"unknown currency {code!r}") from exc
    if exponent is None:
        raise ValueError(f"currency {code!r} has no minor unit and cannot carry payments")
    return int(exponent)


def _check_currency(code: str) -> str:
    currency_exponent(code)
    return code


CurrencyCode = Annotated[
    str,
    Field(min_length=3, max_length=3, pattern=r"^[A-Z]{3}$", examples=["COP"]),
    AfterValidator(_check_currency),
]


def parse_amount(amount: str, currency: str) -> int:
    """Decimal string → minor units, refusing a wrong number of decimals."""
    exponent = currency_exponent(currency)
    match = _AMOUNT.match(amount)
    if not match:
        raise ValueError("amount must be a decimal string such as '150000.00'")
    sign, whole = match.group(1), match.group(2)
    fraction: str = match.group(3) or ""
    if len(fraction) != exponent:
        raise ValueError(f"{currency} amounts need exactly {exponent} decimal digits")
    if len(whole) > 17:
        raise ValueError("amount is too large")
    scale: int = 10**exponent
    minor = int(whole) * scale + (int(fraction) if fraction else 0)
    if minor > MAX_MINOR:
        raise ValueError("amount is too large")
    return -minor if sign else minor


def format_amount(minor: int, currency: str) -> str:
    exponent = currency_exponent(currency)
    sign = "-" if minor < 0 else ""
    whole, fraction = divmod(abs(minor), 10**exponent)
    return f"{sign}{whole}.{fraction:0{exponent}d}" if exponent else f"{sign}{whole}"


class Money(BaseModel):
    """Any money value on the wire (may be zero or negative, e.g. balances)."""

    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{"amount": "150000.00", "currency": "COP"}]})

    amount: str = Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$", max_length=24)
    currency: CurrencyCode

    @model_validator(mode="after")
    def _check_digits(self) -> Money:
        try:
            parse_amount(self.amount, self.currency)
        except ValueError as exc:  # named `amount.amount`, the text at fault, not the whole money object
            raise ValidationError.from_exception_data(
                type(self).__name__, [field_error(("amount",), str(exc), self.amount)]
            ) from None
        return self

    @property
    def minor(self) -> int:
        return parse_amount(self.amount, self.currency)

    @classmethod
    def of(cls, minor: int, currency: str) -> Money:
        return cls(amount=format_amount(minor, currency), currency=currency)


class PositiveMoney(Money):
    """Money a client asks to move: strictly positive."""

    amount: str = Field(pattern=r"^[0-9]+(\.[0-9]+)?$", max_length=24)

    @model_validator(mode="after")
    def _check_positive(self) -> PositiveMoney:
        if self.minor <= 0:
            raise ValidationError.from_exception_data(
                type(self).__name__, [field_error(("amount",), "must be greater than zero", self.amount)]
            )
        return self


def require_currency(money: Money, currency: str, field: str = "amount") -> int:
    """Minor units of `money`, refusing a currency other than the programme's."""
    if money.currency != currency:
        raise UnprocessableEntity(
            "Currency does not match.",
            errors=[{"field": f"{field}.currency", "message": f"must be {currency}"}],
        )
    return money.minor
