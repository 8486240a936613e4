"""Group commit: `Ledger.post_each` posts or refuses each transaction on its own; `PostingWriter` commits
concurrent callers' postings together, each caller getting its own outcome."""

from __future__ import annotations

import asyncio
import random
from uuid import UUID, uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ledger import (
    AccountKind,
    AccountNotFound,
    CurrencyMismatch,
    IdempotencyConflict,
    InsufficientFunds,
    Ledger,
    LedgerError,
    PostingWriter,
    Transaction,
    UnbalancedTransaction,
)
from ledger.types import EntrySpec, TransactionSpec
from tests.ledger.support import counter_mismatches, create_wallet, transaction_count, transfer, unbalanced_transactions


async def _setup(engine: AsyncEngine) -> tuple[UUID, UUID, UUID, UUID]:
    """A source account, a wallet that may not be overdrawn (holding 100), a third USD account, one in EUR."""
    async with engine.begin() as conn:
        ledger = Ledger(conn)
        source = (await ledger.create_account("source", "USD", AccountKind.EQUITY)).id
        wallet = await create_wallet(ledger, "USD")
        other = (await ledger.create_account("other", "USD", AccountKind.ASSET)).id
        euro = (await ledger.create_account("euro", "EUR", AccountKind.ASSET)).id
        await ledger.post(transfer("fund", source, wallet, 100))
    return source, wallet, other, euro


async def test_post_each_refuses_transactions_one_by_one(engine: AsyncEngine) -> None:
    source, wallet, other, euro = await _setup(engine)
    specs = [
        transfer("a", wallet, other, 60),
        transfer("b", wallet, other, 60),  # the wallet holds 40 after "a"
        transfer("c", wallet, other, 40),
        transfer("d", source, euro, 5),
        transfer("e", source, uuid4(), 5),
        TransactionSpec("f", [EntrySpec(source, -5), EntrySpec(other, 4)]),
        transfer("fund", source, wallet, 100),  # replays the committed original
        transfer("fund", source, wallet, 99),  # same key, other input
        transfer("a", wallet, other, 60),  # repeated within the call: a replay of the first
    ]
    async with engine.begin() as conn:
        outcomes = await Ledger(conn).post_each(specs)
    a, b, c, d, e, f, fund, fund_changed, a_again = outcomes
    assert isinstance(a, Transaction)
    assert not a.replayed
    assert isinstance(b, InsufficientFunds)
    assert isinstance(c, Transaction)
    assert c.entries[0].balance_after == 0
    assert isinstance(d, CurrencyMismatch)
    assert isinstance(e, AccountNotFound)
    assert isinstance(f, UnbalancedTransaction)
    assert isinstance(fund, Transaction)
    assert fund.replayed
    assert isinstance(fund_changed, IdempotencyConflict)
    assert isinstance(a_again, Transaction)
    assert a_again.replayed
    assert a_again.id == a.id
    async with engine.connect() as conn:
        ledger = Ledger(conn)
        assert (await ledger.balance(wallet)).posted == 0
        assert (await ledger.balance(other)).posted == 100
        assert await transaction_count(conn) == 3
        assert await counter_mismatches(conn) == []
        assert (await ledger.verify_chain()).ok


async def test_post_each_with_every_transaction_refused_writes_nothing(engine: AsyncEngine) -> None:
    source, wallet, other, euro = await _setup(engine)
    async with engine.begin() as conn:
        outcomes = await Ledger(conn).post_each([transfer("x", wallet, other, 101), transfer("y", source, euro, 1)])
    assert [type(o) for o in outcomes] == [InsufficientFunds, CurrencyMismatch]
    async with engine.connect() as conn:
        assert await transaction_count(conn) == 1
        assert await counter_mismatches(conn) == []


async def test_writer_commits_concurrent_postings_together(engine: AsyncEngine) -> None:
    source, _wallet, other, _ = await _setup(engine)
    accounts = [source, other]
    expected = {source: -100, other: 0}

    async def caller(worker: int, writer: PostingWriter) -> None:
        rnd = random.Random(worker)
        for n in range(20):
            debit, credit = rnd.sample(accounts, 2)
            amount = rnd.randint(1, 50)
            tx = await writer.post(transfer(f"w{worker}-{n}", debit, credit, amount))
            assert not tx.replayed
            expected[debit] -= amount
            expected[credit] += amount

    async with PostingWriter(engine) as writer:
        await asyncio.gather(*(caller(w, writer) for w in range(16)))
    async with engine.connect() as conn:
        ledger = Ledger(conn)
        assert {a: (await ledger.balance(a)).posted for a in accounts} == expected
        assert await transaction_count(conn) == 1 + 16 * 20
        # Fewer database transactions than postings: concurrent postings shared commits.
        commits = await conn.scalar(text("SELECT count(DISTINCT xmin::text) FROM ledger.transactions"))
        assert commits < 16 * 20
        assert await unbalanced_transactions(conn) == []
        assert await counter_mismatches(conn) == []
        assert (await ledger.verify_chain()).ok


async def test_writer_gives_each_caller_its_own_refusal(engine: AsyncEngine) -> None:
    _, wallet, other, _ = await _setup(engine)

    async def spend(writer: PostingWriter, n: int) -> bool:
        try:
            await writer.post(transfer(f"spend-{n}", wallet, other, 30))
        except InsufficientFunds:
            return False
        return True

    async with PostingWriter(engine) as writer:
        outcomes = await asyncio.gather(*(spend(writer, n) for n in range(10)))
        # The same key again, concurrently: posted once, the others are replays of it.
        again = await asyncio.gather(*(writer.post(transfer("spend-0", wallet, other, 30)) for _ in range(5)))
    assert sum(outcomes) == 3
    assert all(tx.replayed for tx in again)
    assert len({tx.id for tx in again}) == 1
    async with engine.connect() as conn:
        assert (await Ledger(conn).balance(wallet)).posted == 10


async def test_writer_hands_a_failed_database_transaction_to_all_its_callers(engine: AsyncEngine) -> None:
    source, _, other, _ = await _setup(engine)
    unreachable = create_async_engine(engine.url.set(database=f"missing_{uuid4().hex}"))
    try:
        async with PostingWriter(unreachable) as writer:
            outcomes = await asyncio.gather(
                *(writer.post(transfer(f"lost-{n}", source, other, 1)) for n in range(5)), return_exceptions=True
            )
    finally:
        await unreachable.dispose()
    assert all(isinstance(o, Exception) and not isinstance(o, LedgerError) for o in outcomes)
    async with engine.connect() as conn:
        assert await transaction_count(conn) == 1


async def test_a_closed_writer_refuses_postings(engine: AsyncEngine) -> None:
    source, _, other, _ = await _setup(engine)
    writer = PostingWriter(engine)
    await writer.aclose()
    with pytest.raises(LedgerError, match="closed"):
        await writer.post(transfer("late", source, other, 1))
    with pytest.raises(ValueError, match="max_batch"):
        PostingWriter(engine, max_batch=0)
