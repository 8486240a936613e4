"""Bulk posting, steps 1 and 2: lock once, then plan every transaction in Python, where it is cheapest.

1. `ledger.begin_posting` locks all the accounts involved once, in id order (postings never deadlock on
   each other), and one chain stripe that no other transaction holds (SKIP LOCKED; the caller passes the
   stripe its transaction already holds, if any); it returns the balance counters, the stripe's head and
   the posting time (`Locked`). Keys are taken to be new: only when the unique index refuses one (a
   replay, or a concurrent writer) does a second attempt ask `begin_posting` which keys are already used.
2. `Batch` applies each transaction to those counters in memory, checks the flags, numbers the entries
   per account with their running balance and extends the stripe's hash chain (`ledger.chain`).

Step 3, streaming the rows, is `ledger._copy`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any
from uuid import UUID

from ledger._room import new_id
from ledger.chain import canonical_bytes, format_timestamp
from ledger.errors import AmountOutOfRange, CurrencyMismatch, InsufficientFunds
from ledger.types import AccountFlags, Entry, Phase, Transaction, TransactionSpec

BEGIN_SQL = "SELECT * FROM ledger.begin_posting($1::uuid[], $2::text[], $3::integer)"

# Moves the locked accounts' counters and the stripe head after a bulk write (`a.id = ANY` lets the
# planner fetch just those accounts by primary key rather than scan them all for the join).
ADVANCE_SQL = """
WITH counters AS (
    UPDATE ledger.accounts AS a
       SET posted = u.posted, pending_debits = u.pending_debits, pending_credits = u.pending_credits,
           entry_seq = u.entry_seq, last_posted_at = $1
      FROM unnest($2::uuid[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
           AS u(id, posted, pending_debits, pending_credits, entry_seq)
     WHERE a.id = u.id AND a.id = ANY ($2)
)
UPDATE ledger.chains SET seq = $7, head_hash = $8, last_posted_at = $1 WHERE chain = $9
"""

#: Largest amount of one entry, and largest balance counter (their sum stays within a bigint).
MAX_AMOUNT = 2**53
COUNTER_LIMIT = 2**62

_DEBITS_LIMIT = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
_CREDITS_LIMIT = int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
_POSTED = Phase.POSTED
_PENDING = Phase.PENDING
_NO_REFERENCES: Mapping[str, str] = MappingProxyType({})
_dumps = json.JSONEncoder(ensure_ascii=False).encode
_sha256 = hashlib.sha256


class Replan(Exception):
    """A posting planned without looking its keys up met a key already used (posted earlier, or by a
    concurrent writer), or was refused, perhaps only for applying a replay twice: look the keys up and plan
    again."""


class AccountState:
    """An account's counters as locked by `begin_posting`, advanced in memory while a batch is planned."""

    __slots__ = (
        "code",
        "currency",
        "entry_seq",
        "flags",
        "id",
        "pending_credits",
        "pending_debits",
        "posted",
        "touched",
    )

    def __init__(
        self,
        id: UUID,
        code: str,
        currency: str,
        flags: int,
        posted: int,
        pending_debits: int,
        pending_credits: int,
        entry_seq: int,
    ) -> None:
        self.id = id
        self.code = code
        self.currency = currency
        self.flags = flags
        self.posted = posted
        self.pending_debits = pending_debits
        self.pending_credits = pending_credits
        self.entry_seq = entry_seq
        self.touched = False

    def within_limits(self) -> bool:
        if self.flags & _DEBITS_LIMIT and self.posted - self.pending_debits < 0:
            return False
        return not (self.flags & _CREDITS_LIMIT and self.posted + self.pending_credits > 0)


@dataclass(slots=True)
class Locked:
    """What `begin_posting` locked and read; `existing_keys` holds the keys already used when
    `keys_checked`, else nothing."""

    accounts: dict[UUID, AccountState]
    chain: int
    seq: int
    head: bytes
    posted_at: datetime
    existing_keys: set[str]
    keys_checked: bool

    @classmethod
    def from_row(cls, row: Any, *, keys_checked: bool) -> Locked:
        accounts = {
            account_id: AccountState(account_id, code, currency, flags, posted, debits, credits, seq)
            for account_id, code, currency, flags, posted, debits, credits, seq in zip(
                row.account_ids or (),
                row.codes or (),
                row.currencies or (),
                row.flags or (),
                row.posted or (),
                row.pending_debits or (),
                row.pending_credits or (),
                row.entry_seqs or (),
                strict=True,
            )
        }
        return cls(
            accounts=accounts,
            chain=row.chain,
            seq=row.chain_seq,
            head=bytes(row.chain_hash),
            posted_at=row.posted_at,
            existing_keys=set(row.existing_keys or ()),
            keys_checked=keys_checked,
        )


class Batch:
    """The rows a write inserts, built transaction by transaction against the locked counters."""

    def __init__(self, locked: Locked) -> None:
        self.locked = locked
        self.chain = locked.chain
        self.posted_at = locked.posted_at
        self.posted_at_text = format_timestamp(locked.posted_at)
        self.seq = locked.seq
        self.head = locked.head
        self.transactions: list[tuple[Any, ...]] = []
        self.entries: list[tuple[Any, ...]] = []

    def take(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Hand over the rows queued so far (for streaming) and start new lists."""
        rows = self.transactions, self.entries
        self.transactions, self.entries = [], []
        return rows

    def append(self, spec: TransactionSpec) -> Transaction:
        """Apply one new transaction to the locked counters, check its flags, chain it and queue its rows.

        Raises before queuing anything, with the counters as they were, if the currencies differ, a flag
        would break or a balance would leave the representable range. (Resolutions of pending transactions
        and reversals are single postings: `ledger.post_one` applies those.)
        """
        accounts = self.locked.accounts
        key = spec.key
        entries = spec.entries
        states = [accounts[e.account_id] for e in entries]
        currency = states[0].currency
        for state in states:
            if state.currency != currency:
                raise CurrencyMismatch(f"transaction {key!r} mixes currencies")
        amounts = [e.amount for e in entries]
        posts = not spec.pending
        self._apply(states, amounts, posts, 1)
        for state in states:
            if state.flags and not state.within_limits():
                self._apply(states, amounts, posts, -1)
                raise InsufficientFunds(state.id, state.code, key)
            if abs(state.posted) > COUNTER_LIMIT or max(state.pending_debits, state.pending_credits) > COUNTER_LIMIT:
                self._apply(states, amounts, posts, -1)
                raise AmountOutOfRange(f"transaction {key!r} would take account {state.code!r} past 2^62")

        tx_id = new_id()
        seq = self.seq = self.seq + 1
        prev = self.head
        chain = self.chain
        posted_at = self.posted_at
        phase = _POSTED if posts else _PENDING
        phase_text = phase._value_
        references: Mapping[str, str]
        if spec.references:
            plain = dict(spec.references)
            refs_text = _dumps(plain)
            references = MappingProxyType(plain)
        else:
            refs_text = "{}"
            references = _NO_REFERENCES
        digest = self.head = _sha256(
            canonical_bytes(
                tx_id=tx_id,
                key=key,
                kind=spec.kind,
                phase=phase_text,
                related_id=None,
                chain=chain,
                seq=seq,
                prev_hash=prev,
                posted_at=self.posted_at_text,
                entries=[(s.code, amount, currency) for s, amount in zip(states, amounts, strict=False)],
                references=references,
            )
        ).digest()
        self.transactions.append(
            (
                tx_id,
                key,
                spec.kind,
                phase_text,
                None,
                None,
                currency,
                refs_text,
                spec.description,
                posted_at,
                chain,
                seq,
                prev,
                digest,
            )
        )
        rows = self.entries
        out = []
        for idx, (state, amount) in enumerate(zip(states, amounts, strict=False)):
            account_seq = state.entry_seq = state.entry_seq + 1
            state.touched = True
            balance = state.posted
            account_id = state.id
            rows.append((tx_id, idx, account_id, amount, currency, posts, posted_at, account_seq, balance))
            out.append(Entry(account_id, state.code, amount, posts, account_seq, balance))
        return Transaction(
            tx_id,
            key,
            spec.kind,
            phase,
            currency,
            out,
            references,
            spec.description,
            posted_at,
            chain,
            seq,
            prev,
            digest,
        )

    @staticmethod
    def _apply(states: list[AccountState], amounts: list[int], posts: bool, sign: int) -> None:
        """Move the counters by the entries (`sign` 1), or undo that (-1) when the transaction is refused."""
        if posts:
            for state, amount in zip(states, amounts, strict=False):
                state.posted += sign * amount
        else:
            for state, amount in zip(states, amounts, strict=False):
                if amount < 0:
                    state.pending_debits -= sign * amount
                else:
                    state.pending_credits += sign * amount

    def advance_arguments(self) -> tuple[Any, ...]:
        touched = [s for s in self.locked.accounts.values() if s.touched]
        return (
            self.locked.posted_at,
            [s.id for s in touched],
            [s.posted for s in touched],
            [s.pending_debits for s in touched],
            [s.pending_credits for s in touched],
            [s.entry_seq for s in touched],
            self.seq,
            self.head,
            self.locked.chain,
        )
