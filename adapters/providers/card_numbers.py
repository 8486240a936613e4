"""Telling a full card number (PAN) apart from the provider's token, so that none is ever passed on.

A PAN is 13 to 19 digits that pass the Luhn check, often grouped with spaces or dashes. Providers' tokens
are letters and digits, or digits chosen to fail the Luhn check (format-preserving tokenisation does so on
purpose), so they are never mistaken for one.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from stdnum import luhn

PAN_DIGITS = range(13, 20)
REDACTED = "[redacted]"
# Whole runs of digits (any script's decimal digits: a full-width PAN is still a PAN) joined by spaces or
# dashes, standing apart from letters and digits: a run inside an alphanumeric token (random hex such as
# `tok_9f0123456789012345ab`) is part of that token, not a card number; and never a part of a longer run,
# where some 16 of its digits would pass the Luhn check one time in ten.
_DIGIT_RUN = re.compile(r"(?<![^\W_])\d(?:[\s\-\u2010-\u2015]*\d)*(?![^\W_])")


def _ascii_digits(run: str) -> str:
    return "".join(str(unicodedata.decimal(char)) for char in run if char.isdecimal())


def contains_pan(value: object) -> bool:
    """Whether `value` (a string or an integer) holds a PAN, on its own or inside a longer text."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return False
    for run in _DIGIT_RUN.findall(str(value)):
        digits = _ascii_digits(run)
        if len(digits) in PAN_DIGITS and luhn.is_valid(digits):
            return True
    return False


def redact_pans(value: Any) -> Any:
    """A copy of a JSON value with every string or number that holds a PAN replaced by `REDACTED`."""
    if isinstance(value, Mapping):
        return {key: redact_pans(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_pans(item) for item in value]
    return REDACTED if contains_pan(value) else value
