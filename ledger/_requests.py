"""What a posting request must be, checked before the database is asked: its shape (text lengths, entry
count and amounts, balance), the entries that resolve or reverse a transaction, and what a retry with the
same key must repeat to be a replay rather than a conflict."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from ledger._plan import MAX_AMOUNT
from ledger.errors import AmountOutOfRange, IdempotencyConflict, InvalidTransaction, UnbalancedTransaction
from ledger.types import Entry, EntrySpec, Phase, Transaction, TransactionSpec

MAX_ENTRIES = 1000


def check_text(name: str, value: object, shortest: int, longest: int) -> None:
    if not isinstance(value, str) or not shortest <= len(value) <= longest or "\x00" in value:
        raise InvalidTransaction(f"{name} must be text of {shortest} to {longest} characters, without NUL")


def check_strings(key: str, kind: str, references: Mapping[str, str], description: str) -> None:
    check_text("key", key, 1, 200)
    check_text("kind", kind, 0, 100)
    check_text("description", description, 0, 1000)
    for k, v in references.items():
        check_text("a reference name", k, 1, 100)
        check_text("a reference value", v, 0, 1000)


def check_shape(spec: TransactionSpec) -> None:
    """Validation that needs no database; a malformed spec is refused before any of its rows is queued."""
    check_strings(spec.key, spec.kind, spec.references, spec.description)
    entries = spec.entries
    if not 2 <= len(entries) <= MAX_ENTRIES:
        raise InvalidTransaction(f"transaction {spec.key!r} needs 2 to {MAX_ENTRIES} entries")
    total = 0
    for entry in entries:
        amount = entry.amount
        if type(amount) is not int or amount == 0:
            raise InvalidTransaction(f"transaction {spec.key!r} has a zero or non-integer amount")
        if not -MAX_AMOUNT <= amount <= MAX_AMOUNT:
            raise AmountOutOfRange(f"transaction {spec.key!r} has an amount beyond 2^53")
        total += amount
    if total != 0:
        raise UnbalancedTransaction(f"entries of transaction {spec.key!r} sum to {total}, not zero")
    if len({e.account_id for e in entries}) != len(entries):
        raise InvalidTransaction(f"transaction {spec.key!r} names an account more than once")


def resolution_entries(
    target: Transaction, phase: Phase, amount: int | None
) -> tuple[list[EntrySpec], list[EntrySpec]]:
    """(entries, released reservations) of a post-pending, void or reversal of `target`."""
    original = [EntrySpec(e.account_id, e.amount) for e in target.entries]
    if phase is Phase.POSTED:
        return [EntrySpec(e.account_id, -e.amount) for e in original], []
    if amount is None:
        return original, original
    if type(amount) is not int or amount <= 0:
        raise InvalidTransaction("a partial amount must be a positive integer")
    if len(original) != 2:
        raise InvalidTransaction("a partial amount can only post a two-entry pending transaction")
    if amount > abs(original[0].amount):
        raise InvalidTransaction("cannot post more than the pending amount")
    return [EntrySpec(e.account_id, amount if e.amount > 0 else -amount) for e in original], original


def request_fingerprint(
    kind: str,
    phase: Phase,
    pending_id: UUID | None,
    reverses_id: UUID | None,
    entries: Sequence[Entry] | Sequence[EntrySpec],
    references: Mapping[str, str],
    description: str,
) -> tuple[Any, ...]:
    """What a retry with the same key must repeat to be a replay rather than a conflict."""
    return (
        kind,
        phase,
        pending_id,
        reverses_id,
        [(e.account_id, e.amount) for e in entries],
        dict(references),
        description,
    )


def _fingerprint(tx: Transaction) -> tuple[Any, ...]:
    return request_fingerprint(
        tx.kind, tx.phase, tx.pending_id, tx.reverses_id, tx.entries, tx.references, tx.description
    )


def spec_fingerprint(spec: TransactionSpec) -> tuple[Any, ...]:
    phase = Phase.PENDING if spec.pending else Phase.POSTED
    return request_fingerprint(spec.kind, phase, None, None, spec.entries, spec.references, spec.description)


def replay(previous: Transaction, wanted: tuple[Any, ...]) -> Transaction:
    if _fingerprint(previous) != wanted:
        raise IdempotencyConflict(previous.key)
    return as_replay(previous)


def as_replay(tx: Transaction) -> Transaction:
    return dataclasses.replace(tx, replayed=True)
