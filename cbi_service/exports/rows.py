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

#: Text people or callers choose: a CSV or XLSX export neutralises it (`kit.cells`) so that no spreadsheet
#: evaluates it, and `cbi-service ledger verify` restores it before hashing. The other columns are ids,
#: digests, numbers, times and JSON objects, which never start like a formula.
SPREADSHEET_TEXT_COLUMNS: tuple[str, ...] = ("key", "kind", "phase", "description", "account_code", "currency")


@functools.cache
def amount_exponent(currency: str) -> int:
    """Digits of `amount`: the ISO 4217 minor unit, or 0 (amount = minor units) for a code without one."""
    try:
        return currency_exponent(currency)
    except ValueError:
        return 0
