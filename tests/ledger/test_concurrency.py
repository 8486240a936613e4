"""Concurrent postings on separate connections: totals stay exact, no deadlock reaches a caller, keys post once."""

from __future__ import annotations

import asyncio
import random
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import (
    AccountFlags,
    AccountKind,
    IdempotencyConflict,
    InsufficientFunds,
    Ledger,
    PendingAlreadyResolved,
    Transaction,
    TransactionSpec,
)
from tests.ledger.support import counter_mismatches, create_wallet, transaction_count, transfer, unbalanced_transactions


async def _accounts(engine: AsyncEngine, count: int, flags: AccountFlags = AccountFlags.NONE) -> list[UUID]:
    async with engine.begin() as conn:
        ledger = Ledger(conn)
        return [
            (await ledger.create_account(f"acc-{i}", "USD", AccountKind.ASSET, flags=flags)).id for i in range(count)
        ]


async def _post(engine: AsyncEngine, spec: TransactionSpec) -> Transaction:
    async with engine.begin() as conn:
        return await Ledger(conn).post(spec)


async def test_opposite_transfers_on_the_same_accounts_settle_exactly(engine: AsyncEngine) -> None:
    accounts = await _accounts(engine, 4)
    expected = dict.fromkeys(accounts, 0)

    async def single_worker(worker: int) -> None:
        rnd = random.Random(worker)
        for n in range(25):
            # Each worker moves money both ways between the same few accounts, as tasks do in production.
            source, target = rnd.sample(accounts, 2)
            amount = rnd.randint(1, 100)
            await _post(engine, transfer(f"s{worker}-{n}", source, target, amount))
            expected[source] -= amount
            expected[target] += amount

    async def bulk_worker(worker: int) -> None:
        rnd = random.Random(1000 + worker)
        for n in range(4):
            specs = []
            for i in range(30):
                source, target = rnd.sample(accounts, 2)
                specs.append(transfer(f"b{worker}-{n}-{i}", source, target, rnd.randint(1, 100)))
            async with engine.begin() as conn:
                await Ledger(conn).post_many(specs)
            for spec in specs:
                for entry in spec.entries:
                    expected[entry.account_id] += entry.amount

    await asyncio.gather(*(single_worker(w) for w in range(12)), *(bulk_worker(w) for w in range(3)))
    async with engine.connect() as conn:
        ledger = Ledger(conn)
        assert {a: (await ledger.balance(a)).posted for a in accounts} == expected
        assert await transaction_count(conn) == 12 * 25 + 3 * 4 * 30
        assert await unbalanced_transactions(conn) == []
        assert await counter_mismatches(conn) == []
        assert (await ledger.verify_chain()).ok


async def test_flagged_account_is_never_overdrawn_under_concurrency(engine: AsyncEngine) -> None:
    (source,) = await _accounts(engine, 1)
    async with engine.begin() as conn:
        wallet = await create_wallet(Ledger(conn), "USD")
    await _post(engine, transfer("fund", source, wallet, 1000))

    async def spend(n: int) -> bool:
        try:
            await _post(engine, transfer(f"spend-{n}", wallet, source, 30))
        except InsufficientFunds:
            return False
        return True

    outcomes = await asyncio.gather(*(spend(n) for n in range(50)))
    assert sum(outcomes) == 1000 // 30
    async with engine.connect() as conn:
        assert (await Ledger(conn).balance(wallet)).posted == 1000 - 30 * (1000 // 30)


async def test_same_key_posted_concurrently_posts_once(engine: AsyncEngine) -> None:
    first, second, third = await _accounts(engine, 3)
    spec = transfer("once", first, second, 5)
    results = await asyncio.gather(*(_post(engine, spec) for _ in range(10)))
    assert len({tx.id for tx in results}) == 1
    assert sum(not tx.replayed for tx in results) == 1
    # The same key on other accounts (so not serialised by account locks): the unique key decides.
    other = transfer("contested", second, third, 5)
    other_input = transfer("contested", first, third, 5)
    outcomes = await asyncio.gather(
        *(_post(engine, other) for _ in range(5)),
        *(_post(engine, other_input) for _ in range(5)),
        return_exceptions=True,
    )
    posted = [o for o in outcomes if isinstance(o, Transaction)]
    refused = [o for o in outcomes if isinstance(o, IdempotencyConflict)]
    assert len(posted) + len(refused) == 10
    assert len(refused) == 5
    assert sum(not tx.replayed for tx in posted) == 1
    async with engine.connect() as conn:
        assert await transaction_count(conn) == 2
        assert await counter_mismatches(conn) == []


async def test_same_bulk_posted_concurrently_posts_once(engine: AsyncEngine) -> None:
    accounts = await _accounts(engine, 6)
    rnd = random.Random(5)
    pairs = [rnd.sample(accounts, 2) for _ in range(500)]
    specs = [transfer(f"bulk-{i}", source, target, i % 9 + 1) for i, (source, target) in enumerate(pairs)]

    async def post_all(order: int) -> list[Transaction]:
        async with engine.begin() as conn:
            return await Ledger(conn).post_many(specs if order == 0 else list(reversed(specs)))

    results = await asyncio.gather(*(post_all(i % 2) for i in range(4)))
    fresh = [tx for batch in results for tx in batch if not tx.replayed]
    assert len(fresh) == 500
    assert len({tx.key for tx in fresh}) == 500
    async with engine.connect() as conn:
        assert await transaction_count(conn) == 500
        assert await counter_mismatches(conn) == []
        assert (await Ledger(conn).verify_chain()).ok


async def test_bulk_key_race_rolls_back_to_its_savepoint(engine: AsyncEngine) -> None:
    a, b, c, d = await _accounts(engine, 4)
    winner_started = asyncio.Event()

    async def winner() -> None:
        async with engine.begin() as conn:
            await Ledger(conn).post_many([transfer(f"k{i}", a, b, 1) for i in range(100)])
            winner_started.set()
            await asyncio.sleep(0.3)  # keep the keys uncommitted while the other bulk runs into them

    async def loser() -> str:
        await winner_started.wait()
        async with engine.begin() as conn:
            ledger = Ledger(conn)
            try:
                await ledger.post_many([transfer(f"k{i}", c, d, 1) for i in range(100)])
            except IdempotencyConflict:
                # The savepoint kept the caller's transaction usable.
                await ledger.post(transfer("after-conflict", c, d, 2))
                return "conflict"
        return "posted"

    _, outcome = await asyncio.gather(winner(), loser())
    assert outcome == "conflict"
    async with engine.connect() as conn:
        ledger = Ledger(conn)
        assert await transaction_count(conn) == 101
        assert (await ledger.balance(d)).posted == 2
        assert await counter_mismatches(conn) == []


async def test_a_pending_transaction_is_resolved_once_under_races(engine: AsyncEngine) -> None:
    source, target = await _accounts(engine, 2)
    hold = await _post(engine, transfer("hold", source, target, 50, pending=True))

    async def resolve(n: int) -> str:
        async with engine.begin() as conn:
            ledger = Ledger(conn)
            try:
                if n % 2:
                    await ledger.void_pending(hold.id, f"void-{n}")
                else:
                    await ledger.post_pending(hold.id, f"post-{n}", 10 + n)
            except PendingAlreadyResolved:
                return "refused"
        return "resolved"

    outcomes = await asyncio.gather(*(resolve(n) for n in range(10)))
    assert outcomes.count("resolved") == 1
    async with engine.connect() as conn:
        ledger = Ledger(conn)
        assert (await ledger.balance(source)).pending_debits == 0
        assert (await ledger.balance(target)).pending_credits == 0
        assert await counter_mismatches(conn) == []
