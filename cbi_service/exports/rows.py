"""The export's row layout: one row per ledger entry, carrying its whole transaction.

Every column `ledger.verify` needs is present (see `ledger.verify.EXPORT_COLUMNS`), so an export can be
checked offline; the rest (`description`, `entry`, `amount`) is for people reading it. `amount` is the
decimal form of `amount_minor` with the currency's ISO 4217 digits; the verifier checks that they agree.
Rows come grouped by transaction, transactions ordered by (posted_at, chain, seq): within a chain stripe
that is increasing `seq`, which the verifier requires.
"""

from __future__ import annotations

import functools

from cbi_service.kit.money import currency_exponent

COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "key",
    "kind",
    "phase",
    "related_id",
    "description",
    "references",
    "posted_at",
    "chain",
    "seq",
    "prev_hash",
    "hash",
    "entry",
    "account_code",
    "amount",
    "currency",
    "amount_minor",
)


@functools.cache
def amount_exponent(currency: str) -> int:
    """Digits of `amount`: the ISO 4217 minor unit, or 0 (amount = minor units) for a code without one."""
    try:
        return currency_exponent(currency)
    except ValueError:
        return 0
