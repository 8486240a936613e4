"""Voucher codes a person can read off paper and type: `7KQM-X3PD-W9R2`.

Eleven random symbols and a Luhn mod N check symbol, over 32 symbols that cannot be misread as each other
(no 0, 1, I or O), grouped by four. The check symbol catches every single mistyped symbol and most swaps
of two neighbours before anything is looked up. 55 random bits keep codes unguessable in practice; that
no two vouchers share one is the database's to enforce (a unique index), and the issuance worker draws
new codes for a chunk that met a taken one.
"""

from __future__ import annotations

import secrets

from stdnum import luhn

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
RANDOM_SYMBOLS = 11
GROUP = 4


def new_code() -> str:
    body = "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_SYMBOLS))
    compact = body + luhn.calc_check_digit(body, alphabet=ALPHABET)
    return "-".join(compact[start : start + GROUP] for start in range(0, len(compact), GROUP))


def normalize_code(text: str) -> str:
    """A typed code in its printed form (upper case, grouped by four), or ValueError if it cannot be one: wrong
    length, a symbol outside the alphabet, or a check symbol that does not match (a mistyped code)."""
    compact = "".join(text.split()).replace("-", "").upper()
    if len(compact) != RANDOM_SYMBOLS + 1 or any(symbol not in ALPHABET for symbol in compact):
        raise ValueError(f"a voucher code is {RANDOM_SYMBOLS + 1} symbols of {ALPHABET}")
    if not luhn.is_valid(compact, alphabet=ALPHABET):
        raise ValueError("the check symbol does not match: a symbol was mistyped")
    return "-".join(compact[start : start + GROUP] for start in range(0, len(compact), GROUP))
