"""The ledger: accounts, balanced append-only transactions, two-phase transfers, balances and the chain.

`Ledger` works on a caller-supplied `AsyncConnection` and never commits: postings become durable with the
caller's transaction, together with whatever else the caller wrote. A single posting is one round trip
(`ledger.post_one` in the database); a bulk posting locks its accounts once and streams its rows with COPY
(see `ledger._posting`). Refusals (flags, idempotency conflicts, resolved pendings) write nothing and leave
the caller's transaction usable.

Concurrency: accounts are always locked in id order within one call, so postings never deadlock on each
other. A caller that makes several postings in one database transaction holds the locks of the earlier
ones while taking the later ones; callers doing that concurrently on overlapping accounts should touch
them in a consistent order. Every posting also locks one chain stripe until the database transaction
ends; later postings of the same transaction reuse the stripe it already holds (remembered on the
connection, whichever `Ledger` instance posts), so a long unit of work holds one stripe, not one per call.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import secrets
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, cast
from uuid import UUID

import asyncpg
from sqlalchemy import ARRAY, Text, Uuid, any_, bindparam, func, literal, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger import schema
from ledger._posting import (
    ADVANCE_SQL,
    BEGIN_SQL,
    COPY_CHUNK,
    MAX_AMOUNT,
    MIN_COPY_CHUNK,
    POST_ONE_SQL,
    YIELD_EVERY,
    Batch,
    CopyPipeline,
    Locked,
    new_id,
)
from ledger.chain import GENESIS_HASH, format_timestamp
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
from ledger.verify import ExportRow, Problem, Report, Verifier

_MAX_ENTRIES = 1000
_GC_PAUSE_THRESHOLD = 1000
_POSTING_PHASES = (Phase.POSTED, Phase.POST_PENDING)
_AUTOCOMMIT = "the ledger only writes inside the caller's transaction (this connection autocommits)"
#: Key in the connection's `info` of (weak reference to the database transaction, stripe it holds).
_HELD_STRIPE = "ledger.held_stripe"
_MAX_SEQ = 2**63 - 1


class _Replan(Exception):
    """A posting planned without looking its keys up met a key already used (posted earlier, or by a
    concurrent writer), or was refused, perhaps only for applying a replay twice: look the keys up and plan
    again."""


class Ledger:
    """Double-entry ledger operations on one connection, inside the caller's transaction."""

    def __init__(self, conn: AsyncConnection, *, stripe: int | None = None) -> None:
        """`stripe` is the chain stripe this instance tries first in a database transaction that holds
        none yet (random by default, which spreads concurrent writers); any free stripe is taken when it
        is busy, and a transaction that already holds one keeps appending to it."""
        self._conn = conn
        self._stripe = secrets.randbelow(1 << 15) if stripe is None else stripe

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

    # ----------------------------------------------------------------------------------------- accounts

    async def create_account(
        self,
        code: str,
        currency: str,
        kind: AccountKind | str,
        *,
        flags: AccountFlags = AccountFlags.NONE,
        metadata: Mapping[str, Any] | None = None,
    ) -> Account:
        """Create the account, or return the existing one with this code if it matches.

        Raises AccountConflict when the code exists with another currency, kind or flags.
        """
        kind = AccountKind(kind)
        if not isinstance(code, str) or not 1 <= len(code) <= 200 or "\x00" in code:
            raise InvalidAccount("an account code is 1 to 200 characters, without NUL")
        if not (len(currency) == 3 and currency.isascii() and currency.isalpha() and currency.isupper()):
            raise InvalidAccount(f"currency must be an ISO 4217 code, got {currency!r}")
        if flags == AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS:
            raise InvalidAccount("an account cannot be limited both ways")
        a = schema.accounts
        stmt = (
            pg_insert(a)
            .values(
                id=new_id(),
                code=code,
                currency=currency,
                kind=kind.value,
                flags=int(flags),
                metadata=dict(metadata or {}),
            )
            .on_conflict_do_nothing(index_elements=[a.c.code])
            .returning(*_ACCOUNT_COLUMNS)
        )
        row = (await self._conn.execute(stmt)).first()
        if row is None:
            row = (await self._conn.execute(select(*_ACCOUNT_COLUMNS).where(a.c.code == code))).one()
            if (row.currency, row.kind, row.flags) != (currency, kind.value, int(flags)):
                raise AccountConflict(code)
        return _account(row)

    async def get_account(self, account_id: UUID) -> Account:
        a = schema.accounts
        row = (await self._conn.execute(select(*_ACCOUNT_COLUMNS).where(a.c.id == account_id))).first()
        if row is None:
            raise AccountNotFound([account_id])
        return _account(row)

    async def get_accounts_by_code(self, codes: Sequence[str]) -> dict[str, Account]:
        """The accounts among `codes` that exist, by code."""
        a = schema.accounts
        stmt = select(*_ACCOUNT_COLUMNS).where(a.c.code == any_(_array(list(codes), Text)))
        return {row.code: _account(row) for row in await self._conn.execute(stmt)}

    async def list_accounts(
        self,
        *,
        after: UUID | None = None,
        limit: int = 50,
        code_prefix: str | None = None,
        currency: str | None = None,
        kind: AccountKind | str | None = None,
    ) -> AccountPage:
        """Accounts in id order (creation order), keyset-paginated by `after`."""
        a = schema.accounts
        stmt = select(*_ACCOUNT_COLUMNS).order_by(a.c.id).limit(limit + 1)
        if after is not None:
            stmt = stmt.where(a.c.id > after)
        if code_prefix:
            stmt = stmt.where(a.c.code.startswith(code_prefix, autoescape=True))
        if currency is not None:
            stmt = stmt.where(a.c.currency == currency)
        if kind is not None:
            stmt = stmt.where(a.c.kind == AccountKind(kind).value)
        items = [_account(row) for row in await self._conn.execute(stmt)]
        more = len(items) > limit
        items = items[:limit]
        return AccountPage(items, items[-1].id if more else None)

    # ------------------------------------------------------------------------------------------ posting

    async def post(self, spec: TransactionSpec) -> Transaction:
        """Post one transaction (or reserve it, if `spec.pending`); idempotent by `spec.key`."""
        _check_shape(spec)
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
                _check_shape(spec)
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
            except _Replan:
                if not isolate:
                    # The keys go to the database now: the specs not reached by planning are checked first.
                    for i in chosen:
                        _check_shape(specs[i])
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
                    results[i] = _replay(previous, _spec_fingerprint(spec))
                    continue
                first = first_by_key.setdefault(spec.key, i)
                if first != i:
                    if _spec_fingerprint(specs[first]) != _spec_fingerprint(spec):
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
            await self._write_many(Batch(locked), specs, new, results, isolate)
        for i in chosen:
            if i not in results:
                original = results[first_by_key[specs[i].key]]
                results[i] = original if isinstance(original, LedgerError) else _as_replay(original)
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
        _check_text("key", key, 1, 200)
        target = (await self._load_by_ids([target_id])).get(target_id)
        if target is None:
            raise TransactionNotFound(target_id)
        reversing = phase is Phase.POSTED
        if reversing and target.phase not in _POSTING_PHASES:
            raise NotReversible(target_id)
        if not reversing and target.phase is not Phase.PENDING:
            raise NotPending(target_id)
        entries, release = _resolution_entries(target, phase, amount)
        references = dict(target.references if references is None else references)
        description = target.description if description is None else description
        _check_strings(key, kind or "", references, description)
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
            wanted = _request_fingerprint(kind, phase, pending_id, reverses_id, entries, refs, description)
            return _replay((await self._load_by_keys([key]))[key], wanted)
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

    async def _write_many(
        self,
        batch: Batch,
        specs: Sequence[TransactionSpec],
        new: list[int],
        results: dict[int, Transaction | LedgerError],
        isolate: bool,
    ) -> None:
        """Plan and stream the new transactions inside a savepoint, so a failure leaves nothing behind."""
        driver = await self._driver_connection()
        try:
            async with driver.transaction():
                pipeline = CopyPipeline(driver)
                collecting = len(new) >= _GC_PAUSE_THRESHOLD and gc.isenabled()
                if collecting:
                    # Planning allocates a few objects per row and keeps them all: the cyclic collector
                    # would traverse them again and again (it doubled the CPU cost per transaction).
                    gc.disable()
                try:
                    for n, i in enumerate(new, start=1):
                        spec = specs[i]
                        if not isolate:
                            _check_shape(spec)
                        try:
                            results[i] = batch.append(spec)
                        except LedgerError as exc:
                            if not batch.locked.keys_checked:
                                raise _Replan from exc
                            if not isolate:
                                raise
                            results[i] = exc
                        if n % YIELD_EVERY == 0:
                            planned = len(batch.transactions)
                            if planned >= COPY_CHUNK or (planned >= MIN_COPY_CHUNK and pipeline.waiting):
                                pipeline.push(batch.take())
                            await pipeline.turn()
                    pipeline.push(batch.take())
                    await pipeline.close()
                except BaseException:
                    await pipeline.abort()
                    raise
                finally:
                    if collecting:
                        gc.enable()
                await driver.execute(ADVANCE_SQL, *batch.advance_arguments())
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "transactions_key_key":
                raise _Replan from exc
            raise

    async def _driver_connection(self) -> asyncpg.Connection:
        # Looked up each time: the caller's connection may have been replaced after an error.
        driver = (await self._conn.get_raw_connection()).driver_connection
        if not isinstance(driver, asyncpg.Connection):
            raise LedgerError("the ledger needs an asyncpg connection")
        return driver

    # ------------------------------------------------------------------------------------ transactions

    async def get_transaction(self, tx_id: UUID) -> Transaction:
        found = await self._load_by_ids([tx_id])
        if tx_id not in found:
            raise TransactionNotFound(tx_id)
        return found[tx_id]

    async def get_transaction_by_key(self, key: str) -> Transaction | None:
        return (await self._load_by_keys([key])).get(key)

    async def _load_by_keys(self, keys: list[str]) -> dict[str, Transaction]:
        if not keys:
            return {}
        rows = await self._load(schema.transactions.c.key == any_(_array(keys, Text)))
        return {tx.key: tx for tx in rows}

    async def _load_by_ids(self, ids: list[UUID]) -> dict[UUID, Transaction]:
        rows = await self._load(schema.transactions.c.id == any_(_array(ids, Uuid)))
        return {tx.id: tx for tx in rows}

    async def _load(self, condition: Any) -> list[Transaction]:
        t, e, a = schema.transactions, schema.entries, schema.accounts
        stmt = (
            select(
                *_TX_COLUMNS,
                e.c.account_id,
                a.c.code,
                e.c.amount,
                e.c.posted.label("entry_posted"),
                e.c.account_seq,
                e.c.balance_after,
            )
            .select_from(t.join(e, e.c.tx_id == t.c.id).join(a, a.c.id == e.c.account_id))
            .where(condition)
            .order_by(t.c.id, e.c.idx)
        )
        out: dict[UUID, Transaction] = {}
        for row in await self._conn.execute(stmt):
            tx = out.get(row.id)
            if tx is None:
                tx = out[row.id] = _transaction(row)
            tx.entries.append(
                Entry(row.account_id, row.code, row.amount, row.entry_posted, row.account_seq, row.balance_after)
            )
        return list(out.values())

    # ---------------------------------------------------------------------------------------- balances

    async def balance(self, account_id: UUID, as_of: datetime | None = None) -> Balance:
        """Posted balance and outstanding reservations, now or as they stood at `as_of`."""
        a, e, t = schema.accounts, schema.entries, schema.transactions
        if as_of is None:
            current = (await self.balances([account_id])).get(account_id)
            if current is None:
                raise AccountNotFound([account_id])
            return current
        currency = (await self._conn.execute(select(a.c.currency).where(a.c.id == account_id))).scalar()
        if currency is None:
            raise AccountNotFound([account_id])
        posted = (
            await self._conn.execute(
                select(e.c.balance_after)
                .where(e.c.account_id == account_id, e.c.posted_at <= as_of)
                .order_by(e.c.posted_at.desc(), e.c.account_seq.desc())
                .limit(1)
            )
        ).scalar()
        resolution = t.alias("resolution")
        unresolved = ~(
            select(resolution.c.id).where(resolution.c.pending_id == t.c.id, resolution.c.posted_at <= as_of).exists()
        )
        sums = (
            await self._conn.execute(
                select(
                    func.coalesce(func.sum(-e.c.amount).filter(e.c.amount < 0), 0).label("debits"),
                    func.coalesce(func.sum(e.c.amount).filter(e.c.amount > 0), 0).label("credits"),
                )
                .select_from(e.join(t, t.c.id == e.c.tx_id))
                .where(
                    e.c.account_id == account_id,
                    e.c.posted_at <= as_of,
                    t.c.phase == Phase.PENDING.value,
                    unresolved,
                )
            )
        ).one()
        return Balance(account_id, currency, posted or 0, int(sums.debits), int(sums.credits))

    async def balances(self, account_ids: Sequence[UUID]) -> dict[UUID, Balance]:
        """Current balances of several accounts in one query (unknown ids are left out)."""
        a = schema.accounts
        stmt = select(a.c.id, a.c.currency, a.c.posted, a.c.pending_debits, a.c.pending_credits).where(
            a.c.id == any_(_array(list(account_ids), Uuid))
        )
        return {
            row.id: Balance(row.id, row.currency, row.posted, row.pending_debits, row.pending_credits)
            for row in await self._conn.execute(stmt)
        }

    async def sum_posted(self, account_id: UUID, *, key_prefix: str, kind: str | None = None) -> int:
        """Sum of the account's posted entries in the transactions whose key starts with `key_prefix` (and,
        if given, of this `kind`).

        Found through the unique index on keys, so it costs what those transactions cost, however long the
        account's history: meant for callers whose keys name what they group (e.g. one programme's returns).
        """
        t, e = schema.transactions, schema.entries
        low, high = _key_range(key_prefix)
        stmt = (
            select(func.coalesce(func.sum(e.c.amount), 0))
            .select_from(t.join(e, e.c.tx_id == t.c.id))
            .where(t.c.key >= low, t.c.key < high, e.c.account_id == account_id, e.c.posted)
        )
        if kind is not None:
            stmt = stmt.where(t.c.kind == kind)
        return int((await self._conn.execute(stmt)).scalar_one())

    async def entries(self, account_id: UUID, cursor: str | None = None, limit: int = 50) -> EntryPage:
        """An account's entries oldest first, each with the posted balance right after it."""
        e, t = schema.entries, schema.transactions
        stmt = (
            select(
                e.c.tx_id,
                t.c.key,
                t.c.kind,
                t.c.phase,
                e.c.amount,
                e.c.currency,
                e.c.posted,
                e.c.posted_at,
                e.c.account_seq,
                e.c.balance_after,
                t.c.refs,
                t.c.description,
            )
            .select_from(e.join(t, t.c.id == e.c.tx_id))
            .where(e.c.account_id == account_id)
            .order_by(e.c.posted_at, e.c.account_seq)
            .limit(limit + 1)
        )
        if cursor is not None:
            at, seq = _decode_cursor(cursor)
            stmt = stmt.where(tuple_(e.c.posted_at, e.c.account_seq) > tuple_(literal(at), literal(seq)))
        items = [
            AccountEntry(
                tx_id=row.tx_id,
                tx_key=row.key,
                kind=row.kind,
                phase=Phase(row.phase),
                amount=row.amount,
                currency=row.currency,
                posted=row.posted,
                posted_at=row.posted_at,
                account_seq=row.account_seq,
                balance_after=row.balance_after,
                references=row.refs,
                description=row.description,
            )
            for row in await self._conn.execute(stmt)
        ]
        more = len(items) > limit
        items = items[:limit]
        last = items[-1] if more else None
        return EntryPage(items, None if last is None else _encode_cursor(last.posted_at, last.account_seq))

    async def trial_balance(self, as_of: datetime | None = None, *, code_prefix: str | None = None) -> TrialBalance:
        """Every account's posted balance (now, or as of a time), ordered by code."""
        a, e = schema.accounts, schema.entries
        if as_of is None:
            balance: Any = a.c.posted
        else:
            balance = func.coalesce(
                select(e.c.balance_after)
                .where(e.c.account_id == a.c.id, e.c.posted_at <= as_of)
                .order_by(e.c.posted_at.desc(), e.c.account_seq.desc())
                .limit(1)
                .scalar_subquery(),
                0,
            )
        stmt = select(a.c.id, a.c.code, a.c.kind, a.c.currency, balance.label("balance")).order_by(a.c.code)
        if code_prefix:
            stmt = stmt.where(a.c.code.startswith(code_prefix, autoescape=True))
        lines = [
            TrialBalanceLine(row.id, row.code, AccountKind(row.kind), row.currency, row.balance)
            for row in await self._conn.execute(stmt)
        ]
        return TrialBalance(as_of, lines)

    # ------------------------------------------------------------------------------------------ chain

    async def export_rows(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> AsyncIterator[ExportRow]:
        """Every entry with its transaction's chain fields, in time order, for `start <= posted_at < end`."""
        t, e, a = schema.transactions, schema.entries, schema.accounts
        stmt = (
            select(
                t.c.id,
                t.c.key,
                t.c.kind,
                t.c.phase,
                func.coalesce(t.c.pending_id, t.c.reverses_id).label("related_id"),
                t.c.chain,
                t.c.seq,
                t.c.posted_at,
                t.c.prev_hash,
                t.c.hash,
                a.c.code,
                e.c.amount,
                e.c.currency,
                t.c.refs,
            )
            .select_from(t.join(e, e.c.tx_id == t.c.id).join(a, a.c.id == e.c.account_id))
            .order_by(t.c.posted_at, t.c.chain, t.c.seq, e.c.idx)
        )
        if start is not None:
            stmt = stmt.where(t.c.posted_at >= start)
        if end is not None:
            stmt = stmt.where(t.c.posted_at < end)
        result = await self._conn.stream(stmt.execution_options(yield_per=5000))
        async for row in result:
            yield ExportRow(
                transaction_id=str(row.id),
                key=row.key,
                kind=row.kind,
                phase=row.phase,
                related_id=None if row.related_id is None else str(row.related_id),
                chain=row.chain,
                seq=row.seq,
                posted_at=format_timestamp(row.posted_at),
                prev_hash=bytes(row.prev_hash),
                hash=bytes(row.hash),
                account_code=row.code,
                amount_minor=row.amount,
                currency=row.currency,
                references=row.refs,
            )

    async def verify_chain(self, start: datetime | None = None, end: datetime | None = None) -> Report:
        """Recompute every hash and link in the database (or a time window) as an auditor would offline.

        Over the whole ledger it also checks that each stripe's head is its last transaction, which a
        removed tail would break, and that every account's counters are what its entries add up to
        (`verify_balances`, reported as the first mismatch).
        """
        verifier = Verifier()
        async for row in self.export_rows(start, end):
            if not verifier.add(row):
                break
        report = verifier.finish()
        if report.problem is not None or start is not None or end is not None:
            return report
        c = schema.chains
        for head in await self._conn.execute(select(c.c.chain, c.c.seq, c.c.head_hash).order_by(c.c.chain)):
            last_seq, last_hash = verifier.heads.get(head.chain, (0, GENESIS_HASH))
            if (last_seq, last_hash) != (head.seq, bytes(head.head_hash)):
                report.problem = Problem(
                    report.rows,
                    None,
                    f"chain {head.chain} head (seq {head.seq}) does not match its last transaction (seq {last_seq})",
                )
                return report
        mismatches = await self.verify_balances()
        if mismatches:
            first = mismatches[0]
            report.problem = Problem(
                report.rows,
                None,
                f"account {first.code}: {first.counter} is {first.recorded}, its entries give {first.computed}"
                + (f" ({len(mismatches) - 1} more)" if len(mismatches) > 1 else ""),
            )
        return report

    async def verify_balances(self) -> list[BalanceMismatch]:
        """Re-add every account's entries and compare with the counters that balances are read from.

        Checks the posted balance (sum of posted entries), the open reservations (entries of pending
        transactions not yet resolved), the entry count, and every entry's running balance. The database
        refuses counter changes that come without entries; this finds what went around it (e.g. triggers
        disabled by a superuser). One pass over all entries: an audit, not something to run per request.
        """
        found: list[BalanceMismatch] = []
        for row in await self._conn.execute(_VERIFY_BALANCES):
            checks = (
                ("posted", row.posted, row.sum_posted),
                ("pending_debits", row.pending_debits, row.open_debits),
                ("pending_credits", row.pending_credits, row.open_credits),
                # numbered 1..n without gaps: the count and the last number both equal the counter
                ("entry_seq", row.entry_seq, row.entries if row.entries != row.entry_seq else row.last_seq),
                ("balance_after", row.bad_balance_after, row.bad_running),
            )
            for counter, recorded, computed in checks:
                if recorded is not None and int(recorded) != int(computed):
                    found.append(BalanceMismatch(row.id, row.code, counter, int(recorded), int(computed)))
        return found


# ---------------------------------------------------------------------------------------------- helpers

# Counters against entries, per account; `bad_*` is the first entry (by account_seq) whose running
# balance is wrong, if any.
_VERIFY_BALANCES = text(
    """
    WITH sums AS (
        SELECT e.account_id, coalesce(sum(e.amount) FILTER (WHERE e.posted), 0) AS sum_posted,
               count(*) AS entries, max(e.account_seq) AS last_seq
          FROM ledger.entries e
         GROUP BY e.account_id
    ), open_pending AS (
        SELECT e.account_id, coalesce(sum(-e.amount) FILTER (WHERE e.amount < 0), 0) AS open_debits,
               coalesce(sum(e.amount) FILTER (WHERE e.amount > 0), 0) AS open_credits
          FROM ledger.entries e
          JOIN ledger.transactions t ON t.id = e.tx_id
         WHERE t.phase = 'pending'
           AND NOT EXISTS (SELECT 1 FROM ledger.transactions r WHERE r.pending_id = t.id)
         GROUP BY e.account_id
    ), running AS (
        SELECT DISTINCT ON (x.account_id) x.account_id, x.balance_after, x.running
          FROM (SELECT e.account_id, e.account_seq, e.balance_after,
                       coalesce(sum(e.amount) FILTER (WHERE e.posted)
                                OVER (PARTITION BY e.account_id ORDER BY e.account_seq ROWS UNBOUNDED PRECEDING),
                                0) AS running
                  FROM ledger.entries e) x
         WHERE x.balance_after <> x.running
         ORDER BY x.account_id, x.account_seq
    )
    SELECT a.id, a.code, a.posted, a.pending_debits, a.pending_credits, a.entry_seq,
           coalesce(s.sum_posted, 0) AS sum_posted, coalesce(s.entries, 0) AS entries,
           coalesce(s.last_seq, 0) AS last_seq, coalesce(o.open_debits, 0) AS open_debits,
           coalesce(o.open_credits, 0) AS open_credits,
           r.balance_after AS bad_balance_after, coalesce(r.running, 0) AS bad_running
      FROM ledger.accounts a
      LEFT JOIN sums s ON s.account_id = a.id
      LEFT JOIN open_pending o ON o.account_id = a.id
      LEFT JOIN running r ON r.account_id = a.id
     WHERE a.posted <> coalesce(s.sum_posted, 0)
        OR a.pending_debits <> coalesce(o.open_debits, 0)
        OR a.pending_credits <> coalesce(o.open_credits, 0)
        OR a.entry_seq <> coalesce(s.entries, 0)
        OR a.entry_seq <> coalesce(s.last_seq, 0)
        OR r.account_id IS NOT NULL
     ORDER BY a.code
    """
)

_ACCOUNT_COLUMNS = (
    schema.accounts.c.id,
    schema.accounts.c.code,
    schema.accounts.c.currency,
    schema.accounts.c.kind,
    schema.accounts.c.flags,
    schema.accounts.c.metadata,
    schema.accounts.c.created_at,
)

_TX_COLUMNS = (
    schema.transactions.c.id,
    schema.transactions.c.key,
    schema.transactions.c.kind,
    schema.transactions.c.phase,
    schema.transactions.c.currency,
    schema.transactions.c.refs,
    schema.transactions.c.description,
    schema.transactions.c.posted_at,
    schema.transactions.c.chain,
    schema.transactions.c.seq,
    schema.transactions.c.prev_hash,
    schema.transactions.c.hash,
    schema.transactions.c.pending_id,
    schema.transactions.c.reverses_id,
)


def _array(values: list[Any], item_type: type[Text] | type[Uuid[Any]]) -> Any:
    return bindparam(None, values, type_=ARRAY(item_type()))


def _account(row: Any) -> Account:
    return Account(
        id=row.id,
        code=row.code,
        currency=row.currency,
        kind=AccountKind(row.kind),
        flags=AccountFlags(row.flags),
        metadata=row.metadata,
        created_at=row.created_at,
    )


def _transaction(row: Any) -> Transaction:
    return Transaction(
        id=row.id,
        key=row.key,
        kind=row.kind,
        phase=Phase(row.phase),
        currency=row.currency,
        entries=[],
        references=row.refs,
        description=row.description,
        posted_at=row.posted_at,
        chain=row.chain,
        seq=row.seq,
        prev_hash=bytes(row.prev_hash),
        hash=bytes(row.hash),
        pending_id=row.pending_id,
        reverses_id=row.reverses_id,
    )


def _check_text(name: str, value: object, shortest: int, longest: int) -> None:
    if not isinstance(value, str) or not shortest <= len(value) <= longest or "\x00" in value:
        raise InvalidTransaction(f"{name} must be text of {shortest} to {longest} characters, without NUL")


def _check_strings(key: str, kind: str, references: Mapping[str, str], description: str) -> None:
    _check_text("key", key, 1, 200)
    _check_text("kind", kind, 0, 100)
    _check_text("description", description, 0, 1000)
    for k, v in references.items():
        _check_text("a reference name", k, 1, 100)
        _check_text("a reference value", v, 0, 1000)


def _check_shape(spec: TransactionSpec) -> None:
    """Validation that needs no database; a malformed spec is refused before any of its rows is queued."""
    _check_strings(spec.key, spec.kind, spec.references, spec.description)
    entries = spec.entries
    if not 2 <= len(entries) <= _MAX_ENTRIES:
        raise InvalidTransaction(f"transaction {spec.key!r} needs 2 to {_MAX_ENTRIES} entries")
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


def _resolution_entries(
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


def _request_fingerprint(
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
    return _request_fingerprint(
        tx.kind, tx.phase, tx.pending_id, tx.reverses_id, tx.entries, tx.references, tx.description
    )


def _spec_fingerprint(spec: TransactionSpec) -> tuple[Any, ...]:
    phase = Phase.PENDING if spec.pending else Phase.POSTED
    return _request_fingerprint(spec.kind, phase, None, None, spec.entries, spec.references, spec.description)


def _replay(previous: Transaction, wanted: tuple[Any, ...]) -> Transaction:
    if _fingerprint(previous) != wanted:
        raise IdempotencyConflict(previous.key)
    return _as_replay(previous)


def _as_replay(tx: Transaction) -> Transaction:
    return dataclasses.replace(tx, replayed=True)


def _key_range(prefix: str) -> tuple[str, str]:
    """[low, high) bounds of the keys starting with `prefix`: keys compare bytewise (COLLATE "C"), and UTF-8
    keeps code point order, so the upper bound is the prefix with its last character's successor."""
    if not prefix:
        raise ValueError("a key prefix cannot be empty")
    last = ord(prefix[-1])
    if last >= 0x10FFFF:
        raise ValueError("a key prefix cannot end with U+10FFFF")
    following = 0xE000 if 0xD7FF <= last < 0xE000 else last + 1
    return prefix, prefix[:-1] + chr(following)


def _encode_cursor(posted_at: datetime, seq: int) -> str:
    return f"{posted_at.isoformat()}~{seq}"


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    """Refuses anything `_encode_cursor` cannot have produced, including values the database cannot
    compare with (a sequence beyond a bigint, a time that leaves Python's range once converted to UTC)."""
    try:
        at, seq = cursor.rsplit("~", 1)
        value = datetime.fromisoformat(at)
        if value.tzinfo is None:
            raise ValueError("naive timestamp")
        value = value.astimezone(UTC)
        if not (seq.isascii() and seq.isdigit() and len(seq) <= 19 and int(seq) <= _MAX_SEQ):
            raise ValueError("sequence out of range")
        return value, int(seq)
    except (ValueError, OverflowError) as exc:
        raise InvalidCursor("invalid cursor") from exc
