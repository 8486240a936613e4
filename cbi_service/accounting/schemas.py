"""The ledger as auditors and finance read it: accounts with their balances, entries, the trial balance."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from cbi_service.kit.money import Money
from ledger import Account, AccountEntry, Balance, TrialBalance


class BalanceOut(BaseModel):
    posted: Money
    pending_debits: Money
    pending_credits: Money
    available: Money

    @classmethod
    def of(cls, balance: Balance) -> BalanceOut:
        c = balance.currency
        return cls(
            posted=Money.of(balance.posted, c),
            pending_debits=Money.of(balance.pending_debits, c),
            pending_credits=Money.of(balance.pending_credits, c),
            available=Money.of(balance.available, c),
        )


class LedgerAccountOut(BaseModel):
    id: uuid.UUID
    code: str
    currency: str
    kind: str
    flags: list[str] = Field(description="Balance limits, e.g. debits_must_not_exceed_credits (never negative).")
    metadata: dict[str, Any]
    created_at: datetime
    balance: BalanceOut

    @classmethod
    def of(cls, account: Account, balance: Balance) -> LedgerAccountOut:
        return cls(
            id=account.id,
            code=account.code,
            currency=account.currency,
            kind=account.kind.value,
            flags=sorted(flag.name.lower() for flag in account.flags if flag.name),
            metadata=dict(account.metadata),
            created_at=account.created_at,
            balance=BalanceOut.of(balance),
        )


class LedgerEntryOut(BaseModel):
    """One entry of an account: amount is signed (credit positive); `balance_after` is the running posted
    balance right after it."""

    transaction_id: uuid.UUID
    transaction_key: str
    kind: str
    phase: str
    amount: Money
    posted: bool = Field(description="False for reservations (pending) and their release: no effect on balance.")
    posted_at: datetime
    sequence: int
    balance_after: Money
    references: dict[str, str]
    description: str

    @classmethod
    def of(cls, entry: AccountEntry) -> LedgerEntryOut:
        return cls(
            transaction_id=entry.tx_id,
            transaction_key=entry.tx_key,
            kind=entry.kind,
            phase=entry.phase.value,
            amount=Money.of(entry.amount, entry.currency),
            posted=entry.posted,
            posted_at=entry.posted_at,
            sequence=entry.account_seq,
            balance_after=Money.of(entry.balance_after, entry.currency),
            references=dict(entry.references),
            description=entry.description,
        )


class TrialBalanceLineOut(BaseModel):
    account_id: uuid.UUID
    code: str
    kind: str
    debit: Money
    credit: Money
    balance: Money


class TrialBalanceTotalOut(BaseModel):
    currency: str
    debits: Money
    credits: Money
    balanced: bool


class TrialBalanceOut(BaseModel):
    as_of: datetime | None
    lines: list[TrialBalanceLineOut]
    totals: list[TrialBalanceTotalOut]
    balanced: bool

    @classmethod
    def of(cls, trial: TrialBalance) -> TrialBalanceOut:
        totals = [
            TrialBalanceTotalOut(
                currency=currency,
                debits=Money.of(debits, currency),
                credits=Money.of(credits, currency),
                balanced=debits == credits,
            )
            for currency, (debits, credits) in sorted(trial.totals().items())
        ]
        return cls(
            as_of=trial.as_of,
            lines=[
                TrialBalanceLineOut(
                    account_id=line.account_id,
                    code=line.code,
                    kind=line.kind.value,
                    debit=Money.of(line.debit, line.currency),
                    credit=Money.of(line.credit, line.currency),
                    balance=Money.of(line.balance, line.currency),
                )
                for line in trial.lines
            ],
            totals=totals,
            balanced=all(total.balanced for total in totals),
        )
