"""Minor units ↔ decimal strings for provider payloads (this package cannot use the service's money kit)."""

from __future__ import annotations

import re

from iso4217 import Currency

_AMOUNT = re.compile(r"^([0-9]{1,17})(?:\.([0-9]+))?$")  # ASCII digits only: `\d` takes any script's


def currency_exponent(code: str) -> int:
    """Minor-unit digits of an ISO 4217 currency that can carry payments."""
    try:
        exponent = Currency(code).exponent
    except ValueError as exc:
        raise ValueError(f"unknown currency {code!r}") from exc
    if exponent is None:
        raise ValueError(f"currency {code!r} has no minor unit")
    return int(exponent)


def to_minor(amount: str, currency: str) -> int:
    """A non-negative decimal string with exactly the currency's minor digits → minor units."""
    exponent = currency_exponent(currency)
    match = _AMOUNT.match(amount)
    if match is None:
        raise ValueError("amount must be a decimal string such as '150000.00'")
    whole, fraction = match.group(1), match.group(2) or ""
    if len(fraction) != exponent or (exponent == 0 and match.group(2) is not None):
        raise ValueError(f"{currency} amounts need exactly {exponent} decimal digits")
    scale: int = 10**exponent
    return int(whole) * scale + (int(fraction) if fraction else 0)


def to_decimal(minor: int, currency: str) -> str:
    exponent = currency_exponent(currency)
    whole, fraction = divmod(minor, 10**exponent)
    return f"{whole}.{fraction:0{exponent}d}" if exponent else str(whole)
