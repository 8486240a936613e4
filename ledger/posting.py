"""Posting: single and bulk, two-phase (pending, then posted or voided) and reversals; idempotent by key.

A single transaction (post, post_pending, void_pending, reverse) is one call of the database function
`ledger.post_one` (`ledger/sql/post_one.sql`): it locks the accounts, checks key, flags and
resolution, chains and writes the transaction in one round trip, so hot accounts stay locked as briefly
as possible. A bulk posting (`post_many`, `post_each`) locks its accounts once, plans in Python
(`ledger._plan`) and streams its rows with COPY while it plans (`ledger._copy`). Refusals (flags,
idempotency conflicts, resolved pendings) write nothing and leave the caller's transaction usable.

Concurrency: accounts are always locked in id order within one call, so postings never deadlock on each
other. A caller that makes several postings in one database transaction holds the locks of the earlier
ones while taking the later ones; callers doing that concurrently on overlapping accounts should touch
them in a consistent order. Every posting also locks one chain stripe until the database transaction
ends; later postings of the same transaction reuse the stripe it already holds (remembered on the
connection, whichever `Ledger` instance posts), so a long unit of work holds one stripe, not one per call.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import cast
from uuid import UUID

import asyncpg

from ledger._copy import write_new
from ledger._plan import BEGIN_SQL, Batch, Locked, Replan
from ledger._requests import (
    as_replay,
    check_shape,
    check_strings,
    check_text,
    replay,
    request_fingerprint,
    resolution_entries,
    spec_fingerprint,
)
from ledger._room import Room, new_id
from ledger.errors import (
    AccountNotFound,
    AlreadyReversed,
    AmountOutOfRange,
    CurrencyMismatch,
    IdempotencyConflict,
    InsufficientFunds,
    LedgerError,
    NotPending,
    NotReversible,
    PendingAlreadyResolved,
    TransactionNotFound,
)
from ledger.types import Entry, EntrySpec, Phase, Transaction, TransactionSpec

POST_ONE_SQL = """
SELECT * FROM ledger.post_one($1::uuid, $2::text, $3::text, $4::text, $5::uuid, $6::uuid, $7::jsonb, $8::text,
                              $9::uuid[], $10::bigint[], $11::uuid[], $12::bigint[], $13::integer)
"""

_POSTING_PHASES = (Phase.POSTED, Phase.POST_PENDING)
_AUTOCOMMIT = "the ledger only writes inside the caller's transaction (this connection autocommits)"
#: Key in the connection's `info` of (weak reference to the database transaction, stripe it holds).
_HELD_STRIPE = "ledger.held_stripe"


class Posting(Room):
    """Writing transactions, inside the caller's transaction."""

    #: The chain stripe to try first in a database transaction that holds none yet (set by `Ledger`).
    _stripe: int

    # ------------------------------------------------------------------------------------------ posting

    async def post(self, spec: TransactionSpec) -> Transaction:
        """Post one transaction (or reserve it, if `spec.pending`); idempotent by `spec.key`."""
        check_shape(spec)
        return await self._post_one(
            key=spec.key,
            kind=spec.kind,
            phase=Phase.PENDING if spec.pending else Phase.POSTED,
            references=spec.references,
            description=spec.description,
            entries=spec.entries,
        )

    async def post_many(self, specs: Sequence[TransactionSpec]) -> list[Transaction]:
        """Post many transactions at once: all or none, accounts locked once, rows written in bulk.

        Transactions apply in order, so a later one may spend what an earlier one credited. Keys already
        posted with the same input are returned with `replayed=True`. A malformed transaction is refused
        before any of its rows is queued; a refusal that needs the database (an unknown account, a key
        reused with other input, a balance limit) may be reported instead when it comes first.
        """
        if len(specs) <= 1:
            return [await self.post(spec) for spec in specs]
        outcomes = await self._post_specs(specs, range(len(specs)), isolate=False)
        return cast(list[Transaction], outcomes)

    async def post_each(self, specs: Sequence[TransactionSpec]) -> list[Transaction | LedgerError]:
        """Post many independent transactions at once, each posted or refused on its own.

        As `post_many` (in order, accounts locked once, rows written in bulk), except that a refused
        transaction (malformed, unknown account, broken balance limit, key reused with other input) gets
        its error in its place in the result and the others are posted all the same. `PostingWriter`
        commits concurrent callers' postings together with it.
        """
        outcomes: list[Transaction | LedgerError | None] = [None] * len(specs)
        valid: list[int] = []
        for i, spec in enumerate(specs):
            try:
                check_shape(spec)
            except LedgerError as exc:
                outcomes[i] = exc
            else:
                valid.append(i)
        if len(valid) == 1:
            try:
                outcomes[valid[0]] = await self.post(specs[valid[0]])
            except LedgerError as exc:
                outcomes[valid[0]] = exc
        elif valid:
            for i, outcome in zip(valid, await self._post_specs(specs, valid, isolate=True), strict=True):
                outcomes[i] = outcome
        return cast(list[Transaction | LedgerError], outcomes)

    async def _post_specs(
        self, specs: Sequence[TransactionSpec], chosen: Sequence[int], *, isolate: bool
    ) -> list[Transaction | LedgerError]:
        """Post `specs[i]` for each i of `chosen`, in order; their outcomes.

        With `isolate`, the specs are already shape-checked (malformed ones were left out, and so were
        their accounts). Without it, each is checked as it is planned, while PostgreSQL writes the ones
        before it, and the first refusal is raised and nothing is written. Keys are expected to be new,
        so the first attempt does not look them up: the unique index on keys refuses a key already used.
        After such a refusal, or any refusal while planning (which a replay applied twice can cause), the
        keys are looked up and everything is planned again, replays included.
        """
        ordered = sorted({e.account_id for i in chosen for e in specs[i].entries})
        keys: list[str] = []
        while True:
            locked = await self._begin(ordered, keys)
            missing = [a for a in ordered if a not in locked.accounts]
            if missing and not isolate:
                raise AccountNotFound(missing)
            try:
                results = await self._plan_and_write(specs, chosen, locked, isolate, set(missing))
            except Replan:
                if not isolate:
                    # The keys go to the database now: the specs not reached by planning are checked first.
                    for i in chosen:
                        check_shape(specs[i])
                keys = [specs[i].key for i in chosen]
                continue
            return [results[i] for i in chosen]

    async def _plan_and_write(
        self,
        specs: Sequence[TransactionSpec],
        chosen: Sequence[int],
        locked: Locked,
        isolate: bool,
        missing: set[UUID],
    ) -> dict[int, Transaction | LedgerError]:
        """Outcomes by index; `missing` (accounts that do not exist) is empty unless `isolate`."""
        stored = await self._load_by_keys([specs[i].key for i in chosen if specs[i].key in locked.existing_keys])
        results: dict[int, Transaction | LedgerError] = {}
        first_by_key: dict[str, int] = {}
        new: list[int] = []
        for i in chosen:
            spec = specs[i]
            try:
                previous = stored.get(spec.key)
                if previous is not None:
                    results[i] = replay(previous, spec_fingerprint(spec))
                    continue
                first = first_by_key.setdefault(spec.key, i)
                if first != i:
                    if spec_fingerprint(specs[first]) != spec_fingerprint(spec):
                        raise IdempotencyConflict(spec.key)
                    continue
                if missing and (unknown := [e.account_id for e in spec.entries if e.account_id in missing]):
                    raise AccountNotFound(unknown)
                new.append(i)
            except LedgerError as exc:
                if not isolate:
                    raise
                results[i] = exc
        if new:
            await write_new(await self._driver_connection(), Batch(locked), specs, new, results, isolate)
        for i in chosen:
            if i not in results:
                original = results[first_by_key[specs[i].key]]
                results[i] = original if isinstance(original, LedgerError) else as_replay(original)
        return results

    async def post_pending(
        self,
        pending_id: UUID,
        key: str,
        amount: int | None = None,
        *,
        references: Mapping[str, str] | None = None,
        description: str | None = None,
    ) -> Transaction:
        """Post a pending transaction in full (`amount=None`) or in part; the unposted rest is released.

        A partial amount applies to two-entry pending transactions: it is debited from the debited
        account and credited to the credited one, and must not exceed the reserved amount. References
        and description default to the pending transaction's.
        """
        return await self._resolve(
            pending_id, key, Phase.POST_PENDING, amount=amount, references=references, description=description
        )

    async def void_pending(
        self,
        pending_id: UUID,
        key: str,
        *,
        references: Mapping[str, str] | None = None,
        description: str | None = None,
    ) -> Transaction:
        """Release a pending transaction's reservation without posting anything."""
        return await self._resolve(
            pending_id, key, Phase.VOID_PENDING, amount=None, references=references, description=description
        )

    async def reverse(
        self,
        tx_id: UUID,
        key: str,
        *,
        kind: str = "reversal",
        references: Mapping[str, str] | None = None,
        description: str | None = None,
    ) -> Transaction:
        """Post the exact opposite of a posted transaction (once); balance flags still apply."""
        return await self._resolve(
            tx_id, key, Phase.POSTED, amount=None, kind=kind, references=references, description=description
        )

    async def _resolve(
        self,
        target_id: UUID,
        key: str,
        phase: Phase,
        *,
        amount: int | None,
        kind: str | None = None,
        references: Mapping[str, str] | None,
        description: str | None,
    ) -> Transaction:
        check_text("key", key, 1, 200)
        target = (await self._load_by_ids([target_id])).get(target_id)
        if target is None:
            raise TransactionNotFound(target_id)
        reversing = phase is Phase.POSTED
        if reversing and target.phase not in _POSTING_PHASES:
            raise NotReversible(target_id)
        if not reversing and target.phase is not Phase.PENDING:
            raise NotPending(target_id)
        entries, release = resolution_entries(target, phase, amount)
        references = dict(target.references if references is None else references)
        description = target.description if description is None else description
        check_strings(key, kind or "", references, description)
        return await self._post_one(
            key=key,
            kind=kind if kind is not None else target.kind,
            phase=phase,
            references=references,
            description=description,
            entries=entries,
            pending_id=None if reversing else target_id,
            reverses_id=target_id if reversing else None,
            release=release,
        )

    # ------------------------------------------------------------------------------------ lock & write

    async def _post_one(
        self,
        *,
        key: str,
        kind: str,
        phase: Phase,
        references: Mapping[str, str],
        description: str,
        entries: Sequence[EntrySpec],
        pending_id: UUID | None = None,
        reverses_id: UUID | None = None,
        release: Sequence[EntrySpec] = (),
    ) -> Transaction:
        """One transaction through `ledger.post_one`: one round trip, nothing written if refused."""
        sync = self._conn.sync_connection
        if sync is not None and sync.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            raise LedgerError(_AUTOCOMMIT)
        tx_id = new_id()
        refs = dict(references)
        # Through SQLAlchemy, so that its transaction is begun on the driver.
        result = await self._conn.exec_driver_sql(
            POST_ONE_SQL,
            (
                tx_id,
                key,
                kind,
                phase.value,
                pending_id,
                reverses_id,
                json.dumps(refs, ensure_ascii=False),
                description,
                [e.account_id for e in entries],
                [e.amount for e in entries],
                [e.account_id for e in release],
                [e.amount for e in release],
                self._preferred_stripe(),
            ),
        )
        row = result.one()
        await self._check_in_transaction()
        if row.tx_chain is not None:
            self._remember_stripe(row.tx_chain)
        outcome = row.result
        if outcome == "posted":
            posted = phase in _POSTING_PHASES
            return Transaction(
                id=tx_id,
                key=key,
                kind=kind,
                phase=phase,
                currency=row.tx_currency,
                entries=[
                    Entry(e.account_id, code, e.amount, posted, seq, balance)
                    for e, code, seq, balance in zip(
                        entries, row.entry_codes, row.entry_seqs, row.entry_balances, strict=True
                    )
                ],
                references=MappingProxyType(refs),
                description=description,
                posted_at=row.tx_posted_at,
                chain=row.tx_chain,
                seq=row.tx_seq,
                prev_hash=bytes(row.tx_prev_hash),
                hash=bytes(row.tx_hash),
                pending_id=pending_id,
                reverses_id=reverses_id,
            )
        if outcome == "exists":
            wanted = request_fingerprint(kind, phase, pending_id, reverses_id, entries, refs, description)
            return replay((await self._load_by_keys([key]))[key], wanted)
        if outcome == "resolved":
            target = pending_id or reverses_id
            assert target is not None
            raise AlreadyReversed(target) if reverses_id else PendingAlreadyResolved(target)
        if outcome == "insufficient":
            raise InsufficientFunds(row.bad_account, row.bad_code, key)
        if outcome == "missing":
            raise AccountNotFound([row.bad_account])
        if outcome == "overflow":
            raise AmountOutOfRange(f"transaction {key!r} would take account {row.bad_code!r} past 2^62")
        raise CurrencyMismatch(f"transaction {key!r} mixes currencies")

    async def _begin(self, account_ids: list[UUID], keys: list[str]) -> Locked:
        # Through SQLAlchemy, so that its transaction is begun on the driver before any direct use.
        result = await self._conn.exec_driver_sql(BEGIN_SQL, (account_ids, keys, self._preferred_stripe()))
        row = result.one()
        await self._check_in_transaction()
        self._remember_stripe(row.chain)
        return Locked.from_row(row, keys_checked=bool(keys))

    async def _check_in_transaction(self) -> None:
        driver = await self._driver_connection()
        if not driver.is_in_transaction():
            raise LedgerError(_AUTOCOMMIT)

    async def _driver_connection(self) -> asyncpg.Connection:
        # Looked up each time: the caller's connection may have been replaced after an error.
        driver = (await self._conn.get_raw_connection()).driver_connection
        if not isinstance(driver, asyncpg.Connection):
            raise LedgerError("the ledger needs an asyncpg connection")
        return driver

    # ------------------------------------------------------------------------------------------ stripe

    def _preferred_stripe(self) -> int:
        """The stripe the current database transaction holds, else this instance's preference.

        `ledger.post_one` and `ledger.begin_posting` take the preferred stripe first when no other
        transaction holds it (a row this transaction locked is never skipped), so passing the held one
        keeps a unit of work of many postings on one stripe instead of locking a new one per posting,
        which would starve other writers of stripes and let them block while holding account locks.
        """
        held = self._conn.info.get(_HELD_STRIPE)
        transaction = self._current_transaction()
        if held is not None and transaction is not None and held[0]() is transaction:
            return int(held[1])
        return self._stripe

    def _remember_stripe(self, chain: int) -> None:
        transaction = self._current_transaction()
        if transaction is not None:
            self._conn.info[_HELD_STRIPE] = (weakref.ref(transaction), chain)

    def _current_transaction(self) -> object | None:
        sync = self._conn.sync_connection
        return None if sync is None else sync.get_transaction()
