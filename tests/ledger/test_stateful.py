"""Property-based: random sequences of ledger operations against a simple in-memory model.

After every step: every transaction sums to zero, each account's counters equal its entries (balance =
credits - debits), flagged accounts never break their flag, the model agrees with the database, and the
hash chain verifies. A refused operation must leave every balance unchanged.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar
from uuid import UUID

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ledger import (
    AccountFlags,
    AccountKind,
    IdempotencyConflict,
    InsufficientFunds,
    Ledger,
    LedgerError,
    PendingAlreadyResolved,
    Phase,
    Transaction,
    TransactionSpec,
)
from tests.ledger.support import (
    balances_snapshot,
    counter_mismatches,
    flag_violations,
    transfer,
    unbalanced_transactions,
)

T = TypeVar("T")
FLAGS = (
    AccountFlags.NONE,
    AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS,
    AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS,
    AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS,
)
account_index = st.integers(0, len(FLAGS) - 1)
amounts = st.integers(1, 60)
machine_numbers = itertools.count()


@dataclass
class Model:
    """Expected counters per account: [posted, pending_debits, pending_credits]."""

    flags: list[AccountFlags]
    counters: list[list[int]] = field(default_factory=list)

    def apply(self, moves: list[tuple[int, int, int]], phase: str, release: list[tuple[int, int]]) -> bool:
        """Apply (account, amount, _) moves; False and no change if a flag would break."""
        trial = [list(c) for c in self.counters]
        for account, amount in release:
            trial[account][1 if amount < 0 else 2] -= abs(amount)
        for account, amount, _ in moves:
            if phase in ("posted", "post_pending"):
                trial[account][0] += amount
            elif phase == "pending":
                trial[account][1 if amount < 0 else 2] += abs(amount)
        for account, _, _ in moves:
            posted, debits, credits = trial[account]
            flags = self.flags[account]
            if flags & AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS and posted - debits < 0:
                return False
            if flags & AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS and posted + credits > 0:
                return False
        self.counters = trial
        return True


class LedgerMachine(RuleBasedStateMachine):
    engine: ClassVar[AsyncEngine]
    loop: ClassVar[asyncio.AbstractEventLoop]

    def __init__(self) -> None:
        super().__init__()
        self.prefix = f"m{next(machine_numbers)}"
        self.keys = itertools.count()
        self.accounts: list[UUID] = []
        self.model = Model(list(FLAGS))
        self.pending: dict[UUID, Transaction] = {}
        self.resolved: list[UUID] = []
        self.reversible: dict[UUID, Transaction] = {}
        self.done: list[tuple[TransactionSpec, Transaction]] = []

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)

    def key(self) -> str:
        return f"{self.prefix}-{next(self.keys)}"

    async def _in_transaction(self, operation: Any) -> Any:
        async with self.engine.begin() as conn:
            return await operation(Ledger(conn))

    def execute(self, operation: Any) -> Any:
        """Run one ledger call in its own database transaction; a refused call must change nothing."""
        before = self.run(self._snapshot())
        try:
            return self.run(self._in_transaction(operation))
        except LedgerError:
            assert self.run(self._snapshot()) == before
            raise

    async def _snapshot(self) -> dict[str, tuple[int, int, int]]:
        async with self.engine.connect() as conn:
            return await balances_snapshot(conn)

    def moves(self, tx: Transaction) -> list[tuple[int, int, int]]:
        return [(self.accounts.index(e.account_id), e.amount, 0) for e in tx.entries]

    @initialize()
    def open_accounts(self) -> None:
        async def create(ledger: Ledger) -> list[UUID]:
            return [
                (await ledger.create_account(f"{self.prefix}:{i}", "COP", AccountKind.ASSET, flags=flags)).id
                for i, flags in enumerate(FLAGS)
            ]

        self.accounts = self.execute(create)
        self.model.counters = [[0, 0, 0] for _ in FLAGS]

    def _record(self, spec: TransactionSpec, tx: Transaction) -> None:
        self.done.append((spec, tx))
        if tx.phase is Phase.PENDING:
            self.pending[tx.id] = tx
        else:
            self.reversible[tx.id] = tx

    @rule(source=account_index, destination=account_index, amount=amounts, pending=st.booleans())
    def post(self, source: int, destination: int, amount: int, pending: bool) -> None:
        if source == destination:
            return
        spec = transfer(self.key(), self.accounts[source], self.accounts[destination], amount, pending=pending)
        moves = [(source, -amount, 0), (destination, amount, 0)]
        expected = self.model.apply(moves, "pending" if pending else "posted", [])
        try:
            tx = self.execute(lambda ledger: ledger.post(spec))
        except InsufficientFunds:
            assert not expected
            return
        assert expected
        self._record(spec, tx)

    @rule(transfers=st.lists(st.tuples(account_index, account_index, amounts), min_size=1, max_size=6))
    def post_many(self, transfers: list[tuple[int, int, int]]) -> None:
        specs = [transfer(self.key(), self.accounts[s], self.accounts[t], a) for s, t, a in transfers if s != t]
        if not specs:
            return
        saved = [list(c) for c in self.model.counters]
        expected = all(self.model.apply([(s, -a, 0), (t, a, 0)], "posted", []) for s, t, a in transfers if s != t)
        if not expected:
            self.model.counters = saved
        try:
            done = self.execute(lambda ledger: ledger.post_many(specs))
        except InsufficientFunds:
            assert not expected
            return
        assert expected
        for spec, tx in zip(specs, done, strict=True):
            self._record(spec, tx)

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), partial=st.booleans())
    def post_pending(self, data: st.DataObject, partial: bool) -> None:
        pending = data.draw(st.sampled_from(sorted(self.pending)))
        hold = self.pending[pending]
        reserved = abs(hold.entries[0].amount)
        amount = data.draw(st.integers(1, reserved)) if partial else None
        moves = [(i, amt if amount is None else (amount if amt > 0 else -amount), 0) for i, amt, _ in self.moves(hold)]
        released = [(i, amt) for i, amt, _ in self.moves(hold)]
        assert self.model.apply(moves, "post_pending", released)
        tx = self.execute(lambda ledger: ledger.post_pending(pending, self.key(), amount))
        assert tx.phase is Phase.POST_PENDING
        del self.pending[pending]
        self.resolved.append(pending)
        self.reversible[tx.id] = tx

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def void_pending(self, data: st.DataObject) -> None:
        pending = data.draw(st.sampled_from(sorted(self.pending)))
        hold = self.pending.pop(pending)
        released = [(i, amt) for i, amt, _ in self.moves(hold)]
        assert self.model.apply(self.moves(hold), "void_pending", released)
        tx = self.execute(lambda ledger: ledger.void_pending(pending, self.key()))
        assert tx.phase is Phase.VOID_PENDING
        self.resolved.append(pending)

    @precondition(lambda self: self.resolved)
    @rule(data=st.data())
    def resolve_twice(self, data: st.DataObject) -> None:
        pending = data.draw(st.sampled_from(self.resolved))
        try:
            self.execute(lambda ledger: ledger.void_pending(pending, self.key()))
        except PendingAlreadyResolved:
            return
        raise AssertionError("a resolved pending transaction was resolved again")

    @precondition(lambda self: self.reversible)
    @rule(data=st.data())
    def reverse(self, data: st.DataObject) -> None:
        original = data.draw(st.sampled_from(sorted(self.reversible)))
        tx = self.reversible[original]
        moves = [(i, -amt, 0) for i, amt, _ in self.moves(tx)]
        expected = self.model.apply(moves, "posted", [])
        try:
            reversal = self.execute(lambda ledger: ledger.reverse(original, self.key()))
        except InsufficientFunds:
            assert not expected
            return
        assert expected
        assert reversal.reverses_id == original
        del self.reversible[original]

    @precondition(lambda self: self.done)
    @rule(data=st.data())
    def retry_same_key(self, data: st.DataObject) -> None:
        spec, original = data.draw(st.sampled_from(self.done))
        again = self.execute(lambda ledger: ledger.post(spec))
        assert again.replayed
        assert again.id == original.id
        assert again.hash == original.hash

    @precondition(lambda self: self.done)
    @rule(data=st.data())
    def reuse_key_for_other_input(self, data: st.DataObject) -> None:
        spec, _ = data.draw(st.sampled_from(self.done))
        changed = TransactionSpec(
            spec.key,
            [type(e)(e.account_id, e.amount * 2) for e in spec.entries],
            kind=spec.kind,
            pending=spec.pending,
        )
        try:
            self.execute(lambda ledger: ledger.post(changed))
        except IdempotencyConflict:
            return
        raise AssertionError("a key was reused for different input")

    @invariant()
    def ledger_is_consistent(self) -> None:
        if not self.accounts:
            return
        self.run(self._check())

    async def _check(self) -> None:
        async with self.engine.connect() as conn:
            assert await unbalanced_transactions(conn) == []
            assert await counter_mismatches(conn) == []
            assert await flag_violations(conn) == []
            ledger = Ledger(conn)
            for i, account in enumerate(self.accounts):
                balance = await ledger.balance(account)
                assert [balance.posted, balance.pending_debits, balance.pending_credits] == self.model.counters[i]
            report = await ledger.verify_chain()
            assert report.ok, report.problem
            assert (await ledger.trial_balance()).balanced


def _run_machine(url: URL) -> None:
    loop = asyncio.new_event_loop()
    engine = create_async_engine(url, pool_size=4)
    LedgerMachine.engine = engine
    LedgerMachine.loop = loop
    try:
        run_state_machine_as_test(
            LedgerMachine,
            settings=settings(
                max_examples=20,
                stateful_step_count=40,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
    finally:
        loop.run_until_complete(engine.dispose())
        loop.close()


async def test_random_operation_sequences_keep_every_invariant(engine: AsyncEngine) -> None:
    # Hypothesis drives synchronous rules: the machine gets its own event loop (and engine) in a thread.
    await asyncio.to_thread(_run_machine, engine.url)
