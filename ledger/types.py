"""Value types of the ledger's public API.

Sign convention: an entry's `amount` is a signed integer in minor units; positive is a credit, negative a
debit, and an account's balance is credits minus debits, i.e. the sum of its posted entries.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID


class AccountKind(enum.StrEnum):
    ASSET = "asset"
    LIABILITY = "liability"
    EQUITY = "equity"
    INCOME = "income"
    EXPENSE = "expense"


class AccountFlags(enum.IntFlag):
    NONE = 0
    #: The balance may not go below zero (pending debits included): e.g. money available to spend.
    DEBITS_MUST_NOT_EXCEED_CREDITS = 1
    #: The balance may not go above zero (pending credits included).
    CREDITS_MUST_NOT_EXCEED_DEBITS = 2


class Phase(enum.StrEnum):
    """How a transaction affects balances."""

    POSTED = "posted"
    #: Reserves its amounts (counted in flag checks) without moving posted balances.
    PENDING = "pending"
    #: Resolves a pending transaction by posting all or part of it; the rest is released.
    POST_PENDING = "post_pending"
    #: Resolves a pending transaction by releasing all of it; its entries mirror the pending ones.
    VOID_PENDING = "void_pending"


@dataclass(frozen=True, slots=True)
class Account:
    id: UUID
    code: str
    currency: str
    kind: AccountKind
    flags: AccountFlags
    metadata: Mapping[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class EntrySpec:
    account_id: UUID
    amount: int


@dataclass(frozen=True, slots=True)
class TransactionSpec:
    """A transaction to post; `key` is the caller's idempotency key, unique ledger-wide."""

    key: str
    entries: Sequence[EntrySpec]
    kind: str = "transfer"
    references: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    pending: bool = False


@dataclass(slots=True)
class Entry:
    account_id: UUID
    account_code: str
    amount: int
    #: False for the entries of pending and void transactions: they never move the posted balance.
    posted: bool
    #: Position of this entry in its account's history (1, 2, ...).
    account_seq: int
    #: The account's posted balance right after this entry.
    balance_after: int


@dataclass(slots=True)
class Transaction:
    id: UUID
    key: str
    kind: str
    phase: Phase
    currency: str
    entries: list[Entry]
    references: Mapping[str, str]
    description: str
    posted_at: datetime
    chain: int
    seq: int
    prev_hash: bytes
    hash: bytes
    pending_id: UUID | None = None
    reverses_id: UUID | None = None
    #: True when this call found the transaction already posted under the same key with the same input.
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Balance:
    account_id: UUID
    currency: str
    #: Credits minus debits of posted entries.
    posted: int
    #: Debits reserved by unresolved pending transactions (a non-negative magnitude).
    pending_debits: int
    #: Credits reserved by unresolved pending transactions (a non-negative magnitude).
    pending_credits: int

    @property
    def available(self) -> int:
        """What can still be debited: the posted balance less the outstanding reservations against it."""
        return self.posted - self.pending_debits


@dataclass(frozen=True, slots=True)
class BalanceMismatch:
    """An account whose stored counter disagrees with what its entries add up to (`Ledger.verify_balances`)."""

    account_id: UUID
    code: str
    #: "posted", "pending_debits", "pending_credits", "entry_seq", or "balance_after" (the first entry
    #: whose running balance is wrong: `recorded` is its balance_after, `computed` the sum up to it).
    counter: str
    recorded: int
    computed: int


@dataclass(frozen=True, slots=True)
class AccountEntry:
    """One line of an account's history, with the running posted balance."""

    tx_id: UUID
    tx_key: str
    kind: str
    phase: Phase
    amount: int
    currency: str
    posted: bool
    posted_at: datetime
    account_seq: int
    balance_after: int
    references: Mapping[str, str]
    description: str


@dataclass(frozen=True, slots=True)
class EntryPage:
    items: list[AccountEntry]
    #: Opaque; pass back as `cursor` to read the next page. None on the last page.
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class AccountPage:
    items: list[Account]
    #: The id to pass as `after` for the next page. None on the last page.
    next_after: UUID | None


@dataclass(frozen=True, slots=True)
class TrialBalanceLine:
    account_id: UUID
    code: str
    kind: AccountKind
    currency: str
    balance: int

    @property
    def debit(self) -> int:
        return -self.balance if self.balance < 0 else 0

    @property
    def credit(self) -> int:
        return self.balance if self.balance > 0 else 0


@dataclass(frozen=True, slots=True)
class TrialBalance:
    as_of: datetime | None
    lines: list[TrialBalanceLine]

    def totals(self) -> dict[str, tuple[int, int]]:
        """(debits, credits) per currency; equal in a balanced ledger."""
        out: dict[str, tuple[int, int]] = {}
        for line in self.lines:
            debits, credits = out.get(line.currency, (0, 0))
            out[line.currency] = (debits + line.debit, credits + line.credit)
        return out

    @property
    def balanced(self) -> bool:
        return all(d == c for d, c in self.totals().values())
