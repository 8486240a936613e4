"""Ledger exceptions: domain outcomes only, so any caller (HTTP, CLI, job) can map them as it sees fit."""

from __future__ import annotations

from uuid import UUID


class LedgerError(Exception):
    """Base class of every error the ledger raises on purpose."""


class InvalidTransaction(LedgerError):
    """The requested transaction is malformed (too few entries, zero amounts, repeated accounts...)."""


class UnbalancedTransaction(InvalidTransaction):
    """The entries do not sum to zero."""


class AmountOutOfRange(InvalidTransaction):
    """An amount beyond 2^53 minor units, or a balance that would pass 2^62."""


class CurrencyMismatch(InvalidTransaction):
    """The accounts of one transaction do not share one currency."""


class InvalidAccount(LedgerError):
    """The requested account is malformed (code, currency or flags)."""


class InvalidCursor(LedgerError):
    """A pagination cursor that this ledger did not produce."""


class AccountNotFound(LedgerError):
    def __init__(self, account_ids: list[UUID] | list[str]) -> None:
        self.account_ids = account_ids
        super().__init__(f"unknown account(s): {', '.join(str(a) for a in account_ids)}")


class AccountConflict(LedgerError):
    """An account with this code exists with a different currency, kind or flags."""

    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(f"account {code!r} already exists with a different currency, kind or flags")


class InsufficientFunds(LedgerError):
    """Posting would break an account's balance flag (including amounts reserved by pending transactions)."""

    def __init__(self, account_id: UUID, code: str, transaction_key: str) -> None:
        self.account_id = account_id
        self.code = code
        self.transaction_key = transaction_key
        super().__init__(f"transaction {transaction_key!r} would break the balance limit of account {code!r}")


class IdempotencyConflict(LedgerError):
    """The transaction key was already used for a different request."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"transaction key {key!r} was already used with a different request")


class TransactionNotFound(LedgerError):
    def __init__(self, tx_id: UUID) -> None:
        self.tx_id = tx_id
        super().__init__(f"unknown transaction {tx_id}")


class NotPending(LedgerError):
    """Only a pending transaction can be posted or voided."""

    def __init__(self, tx_id: UUID) -> None:
        self.tx_id = tx_id
        super().__init__(f"transaction {tx_id} is not pending")


class PendingAlreadyResolved(LedgerError):
    """The pending transaction was already posted or voided."""

    def __init__(self, tx_id: UUID) -> None:
        self.tx_id = tx_id
        super().__init__(f"pending transaction {tx_id} was already posted or voided")


class NotReversible(LedgerError):
    """Only transactions that moved posted balances can be reversed (pending ones are voided instead)."""

    def __init__(self, tx_id: UUID) -> None:
        self.tx_id = tx_id
        super().__init__(f"transaction {tx_id} cannot be reversed")


class AlreadyReversed(LedgerError):
    def __init__(self, tx_id: UUID) -> None:
        self.tx_id = tx_id
        super().__init__(f"transaction {tx_id} was already reversed")
