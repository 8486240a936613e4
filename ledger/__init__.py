"""A double-entry ledger on PostgreSQL: balanced, append-only, two-phase, idempotent and hash-chained.

Standalone: it depends on SQLAlchemy Core and asyncpg only, never on the service around it, and works
inside the caller's transaction (`Ledger(conn)` on an `AsyncConnection`; `Ledger` never commits). Its
tables live in the PostgreSQL schema `ledger`, created by migration 0002_ledger from the SQL in
`ledger/sql/` (see `ledger.schema`).

    ledger = Ledger(conn)
    a = await ledger.create_account("donor", "COP", AccountKind.EQUITY)
    b = await ledger.create_account("cash", "COP", AccountKind.ASSET)
    tx = await ledger.post(TransactionSpec("key-1", [EntrySpec(a.id, -500), EntrySpec(b.id, 500)]))

`PostingWriter(engine)` posts transactions that stand on their own for many concurrent callers, committing
those that arrive together in one database transaction (group commit): what keeps hot accounts fast.

Amounts are signed integers in minor units: positive is a credit, negative a debit, and an account's
balance is credits minus debits. `ledger.chain` defines the hash chain's canonical encoding and
`ledger.verify` checks an export of the ledger offline; `Ledger.verify_chain` and `Ledger.verify_balances`
check the database itself.
"""

from ledger.core import Ledger
from ledger.errors import (
    AccountConflict,
    AccountNotFound,
    AlreadyReversed,
    AmountOutOfRange,
    CurrencyMismatch,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAccount,
    InvalidCursor,
    InvalidTransaction,
    LedgerError,
    NotPending,
    NotReversible,
    PendingAlreadyResolved,
    TransactionNotFound,
    UnbalancedTransaction,
)
from ledger.types import (
    Account,
    AccountEntry,
    AccountFlags,
    AccountKind,
    AccountPage,
    Balance,
    BalanceMismatch,
    Entry,
    EntryPage,
    EntrySpec,
    Phase,
    Transaction,
    TransactionSpec,
    TrialBalance,
    TrialBalanceLine,
)
from ledger.writer import PostingWriter

__all__ = [
    "Account",
    "AccountConflict",
    "AccountEntry",
    "AccountFlags",
    "AccountKind",
    "AccountNotFound",
    "AccountPage",
    "AlreadyReversed",
    "AmountOutOfRange",
    "Balance",
    "BalanceMismatch",
    "CurrencyMismatch",
    "Entry",
    "EntryPage",
    "EntrySpec",
    "IdempotencyConflict",
    "InsufficientFunds",
    "InvalidAccount",
    "InvalidCursor",
    "InvalidTransaction",
    "Ledger",
    "LedgerError",
    "NotPending",
    "NotReversible",
    "PendingAlreadyResolved",
    "Phase",
    "PostingWriter",
    "Transaction",
    "TransactionNotFound",
    "TransactionSpec",
    "TrialBalance",
    "TrialBalanceLine",
    "UnbalancedTransaction",
]
