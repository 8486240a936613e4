"""Posting, idempotency, two-phase transfers, reversals, balances and reads of the standalone ledger."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from uuid import UUID

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger import (
    AccountConflict,
    AccountFlags,
    AccountKind,
    AccountNotFound,
    AlreadyReversed,
    AmountOutOfRange,
    CurrencyMismatch,
    EntrySpec,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidAccount,
    InvalidCursor,
    InvalidTransaction,
    Ledger,
    LedgerError,
    NotPending,
    NotReversible,
    PendingAlreadyResolved,
    Phase,
    TransactionNotFound,
    TransactionSpec,
    UnbalancedTransaction,
)
from tests.ledger.support import (
    balances_snapshot,
    counter_mismatches,
    transaction_count,
    transfer,
    unbalanced_transactions,
)

NO_OVERDRAFT = AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS


async def _accounts(conn: AsyncConnection) -> tuple[Ledger, UUID, UUID, UUID]:
    """A funding source (may go negative) and two accounts that may not."""
    ledger = Ledger(conn)
    source = await ledger.create_account("donor", "COP", AccountKind.EQUITY)
    wallet = await ledger.create_account("wallet", "COP", AccountKind.LIABILITY, flags=NO_OVERDRAFT)
    other = await ledger.create_account("other", "COP", AccountKind.LIABILITY, flags=NO_OVERDRAFT)
    return ledger, source.id, wallet.id, other.id


async def test_create_account_is_idempotent_by_code(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        ledger = Ledger(conn)
        first = await ledger.create_account("a:1", "USD", "asset", metadata={"owner": "x"})
        again = await ledger.create_account("a:1", "USD", AccountKind.ASSET)
        assert again.id == first.id
        assert again.metadata == {"owner": "x"}
        with pytest.raises(AccountConflict):
            await ledger.create_account("a:1", "EUR", AccountKind.ASSET)
        with pytest.raises(AccountConflict):
            await ledger.create_account("a:1", "USD", AccountKind.ASSET, flags=NO_OVERDRAFT)
        with pytest.raises(InvalidAccount):
            await ledger.create_account("a:2", "usd", AccountKind.ASSET)
        with pytest.raises(InvalidAccount):
            await ledger.create_account("", "USD", AccountKind.ASSET)
        assert (await ledger.get_account(first.id)).code == "a:1"
        found = await ledger.get_accounts_by_code(["a:1", "missing"])
        assert list(found) == ["a:1"]
        with pytest.raises(AccountNotFound):
            await ledger.get_account(UUID(int=1))


async def test_concurrent_create_account_returns_one_account(engine: AsyncEngine) -> None:
    async def create() -> UUID:
        async with engine.begin() as conn:
            return (await Ledger(conn).create_account("same", "KES", AccountKind.ASSET)).id

    ids = await asyncio.gather(*(create() for _ in range(8)))
    assert len(set(ids)) == 1


async def test_post_moves_balances_and_replays_by_key(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        ledger, source, wallet, _ = await _accounts(conn)
        spec = transfer("fund-1", source, wallet, 150_000, kind="funding", references={"grant": "G-1"})
        tx = await ledger.post(spec)
        assert tx.phase is Phase.POSTED
        assert not tx.replayed
        assert [(e.account_id, e.amount, e.balance_after) for e in tx.entries] == [
            (source, -150_000, -150_000),
            (wallet, 150_000, 150_000),
        ]
        again = await ledger.post(spec)
        assert again.replayed
        assert again.id == tx.id
        assert again.hash == tx.hash
        assert dict(again.references) == {"grant": "G-1"}
        with pytest.raises(IdempotencyConflict):
            await ledger.post(transfer("fund-1", source, wallet, 150_001, kind="funding", references={"grant": "G-1"}))
        with pytest.raises(IdempotencyConflict):
            await ledger.post(transfer("fund-1", source, wallet, 150_000, kind="funding"))
        assert (await ledger.balance(wallet)).posted == 150_000
        assert (await ledger.balance(source)).posted == -150_000
        assert await transaction_count(conn) == 1
        assert (await ledger.get_transaction_by_key("fund-1")) is not None
        assert (await ledger.get_transaction(tx.id)).key == "fund-1"
        assert (await ledger.get_transaction_by_key("fund-2")) is None
        with pytest.raises(TransactionNotFound):
            await ledger.get_transaction(UUID(int=1))


async def test_invalid_transactions_are_refused_before_writing(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        ledger, source, wallet, _ = await _accounts(conn)
        usd = (await ledger.create_account("usd", "USD", AccountKind.ASSET)).id
        with pytest.raises(UnbalancedTransaction):
            await ledger.post(TransactionSpec("u", [EntrySpec(source, -5), EntrySpec(wallet, 4)]))
        with pytest.raises(InvalidTransaction):
            await ledger.post(TransactionSpec("one", [EntrySpec(source, 0)]))
        with pytest.raises(InvalidTransaction):
            await ledger.post(TransactionSpec("zero", [EntrySpec(source, 0), EntrySpec(wallet, 0)]))
        with pytest.raises(InvalidTransaction):
            await ledger.post(TransactionSpec("twice", [EntrySpec(source, -1), EntrySpec(source, 1)]))
        with pytest.raises(InvalidTransaction):
            await ledger.post(transfer("", source, wallet, 1))
        with pytest.raises(CurrencyMismatch):
            await ledger.post(transfer("fx", source, usd, 5))
        with pytest.raises(AccountNotFound):
            await ledger.post(transfer("ghost", source, UUID(int=7), 5))
        assert await transaction_count(conn) == 0


async def test_flags_refuse_overdraft_and_leave_balances_unchanged(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        ledger, source, wallet, other = await _accounts(conn)
        await ledger.post(transfer("fund", source, wallet, 100))
        before = await balances_snapshot(conn)
        with pytest.raises(InsufficientFunds) as refused:
            await ledger.post(transfer("spend", wallet, other, 101))
        assert refused.value.account_id == wallet
        assert await balances_snapshot(conn) == before
        await ledger.post(transfer("spend", wallet, other, 100))
        assert (await ledger.balance(wallet)).posted == 0

        ceiling = await ledger.create_account(
            "ceiling", "COP", AccountKind.ASSET, flags=AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS
        )
        with pytest.raises(InsufficientFunds):
            await ledger.post(transfer("up", source, ceiling.id, 1))
        await ledger.post(transfer("down", ceiling.id, source, 10))
        assert (await ledger.balance(ceiling.id)).posted == -10


async def test_pending_reserves_then_posts_in_part_and_releases_the_rest(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        ledger, source, wallet, other = await _accounts(conn)
        await ledger.post(transfer("fund", source, wallet, 100))
        hold = await ledger.post(transfer("hold", wallet, other, 80, pending=True, references={"batch": "b1"}))
        assert hold.phase is Phase.PENDING
        balance = await ledger.balance(wallet)
        assert (balance.posted, balance.pending_debits, balance.available) == (100, 80, 20)
        assert (await ledger.balance(other)).pending_credits == 80
        # The reservation cannot be spent twice.
        with pytest.raises(InsufficientFunds):
            await ledger.post(transfer("double-spend", wallet, other, 21))
        posted = await ledger.post_pending(hold.id, "hold-post", 30)
        assert posted.phase is Phase.POST_PENDING
        assert posted.pending_id == hold.id
        assert dict(posted.references) == {"batch": "b1"}
        assert [e.amount for e in posted.entries] == [-30, 30]
        wallet_balance, other_balance = await ledger.balance(wallet), await ledger.balance(other)
        assert (wallet_balance.posted, wallet_balance.pending_debits) == (70, 0)
        assert (other_balance.posted, other_balance.pending_credits) == (30, 0)
        # Resolution happens once; a retry with the same key replays, another key is refused.
        assert (await ledger.post_pending(hold.id, "hold-post", 30)).replayed
        with pytest.raises(IdempotencyConflict):
            await ledger.post_pending(hold.id, "hold-post", 31)
        with pytest.raises(PendingAlreadyResolved):
            await ledger.void_pending(hold.id, "hold-void")
        with pytest.raises(NotPending):
            await ledger.post_pending(posted.id, "not-pending")
        assert await counter_mismatches(conn) == []


async def test_void_releases_and_full_post_posts_everything(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        ledger, source, wallet, other = await _accounts(conn)
        await ledger.post(transfer("fund", source, wallet, 100))
        first = await ledger.post(transfer("h1", wallet, other, 60, pending=True))
        void = await ledger.void_pending(first.id, "h1-void")
        assert void.phase is Phase.VOID_PENDING
        assert [e.posted for e in void.entries] == [False, False]
        assert (await ledger.balance(wallet)).available == 100
        second = await ledger.post(transfer("h2", wallet, other, 100, pending=True))
        with pytest.raises(InvalidTransaction):
            await ledger.post_pending(second.id, "h2-too-much", 101)
        with pytest.raises(InvalidTransaction):
            await ledger.post_pending(second.id, "h2-zero", 0)
        await ledger.post_pending(second.id, "h2-post")
        assert (await ledger.balance(wallet)).posted == 0
        assert (await ledger.balance(other)).posted == 100
        with pytest.raises(TransactionNotFound):
            await ledger.void_pending(UUID(int=3), "nothing")
        assert await counter_mismatches(conn) == []
        assert await unbalanced_transactions(conn) == []


async def test_multi_entry_pending_posts_only_in_full(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        ledger, source, wallet, other = await _accounts(conn)
        split = await ledger.post(
            TransactionSpec("split", [EntrySpec(source, -10), EntrySpec(wallet, 7), EntrySpec(other, 3)], pending=True)
        )
        with pytest.raises(InvalidTransaction):
            await ledger.post_pending(split.id, "split-part", 5)
        await ledger.post_pending(split.id, "split-all")
        assert [(await ledger.balance(a)).posted for a in (source, wallet, other)] == [-10, 7, 3]


async def test_reverse_posts_the_opposite_once(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        ledger, source, wallet, other = await _accounts(conn)
        fund = await ledger.post(transfer("fund", source, wallet, 100))
        reversal = await ledger.reverse(fund.id, "fund-reversal", description="wrong grant")
        assert reversal.reverses_id == fund.id
        assert reversal.kind == "reversal"
        assert [e.amount for e in reversal.entries] == [100, -100]
        assert (await ledger.balance(wallet)).posted == 0
        assert (await ledger.reverse(fund.id, "fund-reversal", description="wrong grant")).replayed
        with pytest.raises(AlreadyReversed):
            await ledger.reverse(fund.id, "fund-reversal-2")
        # Reversing must respect flags too: the wallet would go negative.
        await ledger.post(transfer("fund-2", source, wallet, 50))
        spend = await ledger.post(transfer("spend", wallet, other, 50))
        await ledger.post(transfer("move-on", other, source, 50))
        with pytest.raises(InsufficientFunds):
            await ledger.reverse(spend.id, "spend-reversal")
        hold = await ledger.post(transfer("hold", source, wallet, 5, pending=True))
        with pytest.raises(NotReversible):
            await ledger.reverse(hold.id, "hold-reversal")


async def test_post_many_is_atomic_and_ordered(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        ledger, source, wallet, other = await _accounts(conn)
        # A later transaction may spend what an earlier one in the same call credited.
        done = await ledger.post_many(
            [transfer("m1", source, wallet, 10), transfer("m2", wallet, other, 10), transfer("m1", source, wallet, 10)]
        )
        assert [t.key for t in done] == ["m1", "m2", "m1"]
        assert done[2].replayed
        assert done[2].id == done[0].id
        assert [t.seq for t in done[:2]] == [done[0].seq, done[0].seq + 1]
        before = await balances_snapshot(conn)
        count = await transaction_count(conn)
        with pytest.raises(InsufficientFunds):
            await ledger.post_many([transfer("m3", source, wallet, 5), transfer("m4", wallet, other, 6)])
        with pytest.raises(IdempotencyConflict):
            await ledger.post_many([transfer("m5", source, wallet, 5), transfer("m5", source, wallet, 6)])
        assert await balances_snapshot(conn) == before
        assert await transaction_count(conn) == count
        replayed = await ledger.post_many([transfer("m2", wallet, other, 10), transfer("m6", source, other, 1)])
        assert [t.replayed for t in replayed] == [True, False]
        assert await ledger.post_many([]) == []


async def test_post_many_replays_keys_posted_by_earlier_calls(engine: AsyncEngine) -> None:
    """A bulk call first plans its keys as new. A key an earlier call posted is then met by the unique index
    on keys, or by a refusal (applied twice, `w2` would overdraw the wallet), and the call is planned again
    with that key as a replay."""
    async with engine.begin() as conn:
        ledger, source, wallet, other = await _accounts(conn)
        first = await ledger.post_many([transfer("w1", source, wallet, 7), transfer("w2", wallet, other, 7)])
    async with engine.begin() as conn:
        ledger = Ledger(conn)
        met_by_index = await ledger.post_many([transfer("w3", source, other, 1), transfer("w1", source, wallet, 7)])
        assert [(t.key, t.replayed) for t in met_by_index] == [("w3", False), ("w1", True)]
        met_by_refusal = await ledger.post_many([transfer("w2", wallet, other, 7), transfer("w4", source, other, 1)])
        assert [(t.key, t.replayed) for t in met_by_refusal] == [("w2", True), ("w4", False)]
        assert [met_by_index[1], met_by_refusal[0]] == [dataclasses.replace(t, replayed=True) for t in first]
        with pytest.raises(IdempotencyConflict):
            await ledger.post_many([transfer("w5", source, other, 1), transfer("w1", source, wallet, 8)])
        balances = await ledger.balances([source, wallet, other])
        assert {a: b.posted for a, b in balances.items()} == {source: -9, wallet: 0, other: 9}
        assert await transaction_count(conn) == 4


async def test_bulk_post_many_streams_thousands(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        ledger, source, wallet, other = await _accounts(conn)
        specs = [transfer(f"b{i}", source, wallet if i % 2 else other, i + 1) for i in range(5000)]
        done = await ledger.post_many(specs)
        assert len(done) == 5000
        assert len({t.id for t in done}) == 5000
        assert (await ledger.balance(source)).posted == -sum(range(1, 5001))
        assert await counter_mismatches(conn) == []
        assert (await ledger.verify_chain()).ok
    async with engine.begin() as conn:
        ledger = Ledger(conn)
        # The same batch again: every transaction is a replay and nothing is written.
        again = await ledger.post_many(specs)
        assert all(t.replayed for t in again)
        assert await transaction_count(conn) == 5000
        # A bulk failure late in the batch leaves nothing behind.
        with pytest.raises(InsufficientFunds):
            await ledger.post_many(
                [transfer(f"c{i}", source, wallet, 1) for i in range(4000)]
                + [transfer("c-overdraft", wallet, other, 10**12)]
            )
        assert await transaction_count(conn) == 5000
        assert await counter_mismatches(conn) == []
        # So does a malformed transaction met after thousands were streamed, and the caller's
        # transaction goes on.
        with pytest.raises(UnbalancedTransaction):
            await ledger.post_many(
                [transfer(f"d{i}", source, wallet, 1) for i in range(4000)]
                + [TransactionSpec("d-unbalanced", [EntrySpec(source, -2), EntrySpec(wallet, 1)])]
            )
        assert await transaction_count(conn) == 5000
        await ledger.post_many([transfer("d0", source, wallet, 1), transfer("d1", source, other, 1)])
        assert await transaction_count(conn) == 5002
        assert await counter_mismatches(conn) == []


async def test_post_many_checks_every_key_before_looking_them_up(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        ledger, source, wallet, other = await _accounts(conn)
        # The overdraft makes the call look its keys up in the database (it could be a replay): the
        # malformed key after it, never planned, must be refused as such, not sent to PostgreSQL.
        with pytest.raises(InvalidTransaction):
            await ledger.post_many([transfer("e-overdraft", wallet, other, 5), transfer("e-\x00", source, other, 1)])
        await ledger.post_many([transfer("e1", source, wallet, 1), transfer("e2", source, other, 1)])
        assert await transaction_count(conn) == 2


async def test_balance_as_of_and_trial_balance(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        ledger, source, wallet, other = await _accounts(conn)
        await ledger.post(transfer("t1", source, wallet, 100))
    async with engine.begin() as conn:
        ledger = Ledger(conn)
        hold = await ledger.post(transfer("t2", wallet, other, 40, pending=True))
    async with engine.begin() as conn:
        middle = datetime.now(UTC)
    async with engine.begin() as conn:
        ledger = Ledger(conn)
        await ledger.post_pending(hold.id, "t2-post")
        await ledger.post(transfer("t3", source, other, 5))
    async with engine.begin() as conn:
        ledger = Ledger(conn)
        then = await ledger.balance(wallet, as_of=middle)
        assert (then.posted, then.pending_debits, then.pending_credits) == (100, 40, 0)
        assert (await ledger.balance(other, as_of=middle)).pending_credits == 40
        now = await ledger.balance(wallet)
        assert (now.posted, now.pending_debits) == (60, 0)
        assert (await ledger.balance(wallet, as_of=datetime(2000, 1, 1, tzinfo=UTC))).posted == 0
        past = await ledger.trial_balance(as_of=middle)
        assert {line.code: line.balance for line in past.lines} == {"donor": -100, "other": 0, "wallet": 100}
        assert past.balanced
        assert past.totals() == {"COP": (100, 100)}
        current = await ledger.trial_balance()
        assert {line.code: line.balance for line in current.lines} == {"donor": -105, "other": 45, "wallet": 60}
        assert current.balanced


async def test_entries_paginate_with_running_balance(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        ledger, source, wallet, other = await _accounts(conn)
        for i in range(7):
            await ledger.post(transfer(f"in{i}", source, wallet, 10))
        await ledger.post(transfer("out", wallet, other, 25))
        seen = []
        cursor = None
        while True:
            page = await ledger.entries(wallet, cursor=cursor, limit=3)
            seen.extend(page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert [e.balance_after for e in seen] == [10, 20, 30, 40, 50, 60, 70, 45]
        assert [e.account_seq for e in seen] == list(range(1, 9))
        assert seen[-1].tx_key == "out"
        assert seen[-1].amount == -25
        with pytest.raises(InvalidCursor):
            await ledger.entries(wallet, cursor="not-a-cursor")


async def test_list_accounts_keyset_pagination_and_filters(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        ledger = Ledger(conn)
        for i in range(5):
            await ledger.create_account(f"prog:1:{i}", "COP", AccountKind.ASSET)
        await ledger.create_account("prog:2:0", "USD", AccountKind.EQUITY)
        await ledger.create_account("prog_1:0", "COP", AccountKind.ASSET)
        first = await ledger.list_accounts(limit=4, code_prefix="prog:1:")
        assert len(first.items) == 4
        assert first.next_after is not None
        rest = await ledger.list_accounts(limit=4, code_prefix="prog:1:", after=first.next_after)
        assert [a.code for a in first.items + rest.items] == [f"prog:1:{i}" for i in range(5)]
        assert rest.next_after is None
        assert [a.code for a in (await ledger.list_accounts(currency="USD")).items] == ["prog:2:0"]
        assert len((await ledger.list_accounts(kind="asset")).items) == 6


async def test_autocommit_connection_is_refused(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        _ledger, source, wallet, _ = await _accounts(conn)
        await conn.commit()
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        with pytest.raises(LedgerError, match="inside the caller's transaction"):
            await Ledger(auto).post(transfer("auto", source, wallet, 1))
        with pytest.raises(LedgerError, match="inside the caller's transaction"):
            await Ledger(auto).post_many([transfer("auto-1", source, wallet, 1), transfer("auto-2", source, wallet, 1)])
        assert await transaction_count(auto) == 0


async def test_amounts_and_balances_stay_within_bigint(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        ledger, source, wallet, other = await _accounts(conn)
        with pytest.raises(AmountOutOfRange):
            await ledger.post(transfer("huge", source, wallet, 2**53 + 1))
        # Bulk: 513 maximal transfers would take the source past 2^62.
        with pytest.raises(AmountOutOfRange):
            await ledger.post_many([transfer(f"max-{i}", source, wallet, 2**53) for i in range(513)])
        assert await transaction_count(conn) == 0
        # 512 of them take the source exactly to -2^62 (counters move only with entries, so through postings).
        await ledger.post_many([transfer(f"max-{i}", source, wallet, 2**53) for i in range(512)])
        assert (await ledger.balance(source)).posted == -(2**62)
        with pytest.raises(AmountOutOfRange):
            await ledger.post(transfer("past-limit", source, other, 1))
        assert await transaction_count(conn) == 512


@pytest.mark.parametrize(
    "cursor",
    [
        "2026-01-01T00:00:00+00:00~9223372036854775808",
        "2026-01-01T00:00:00+00:00~-1",
        "2026-01-01T00:00:00+00:00~ 1",
        "0001-01-01T00:00:00+14:00~1",
        "9999-12-31T23:00:00-14:00~1",
    ],
)
async def test_cursors_out_of_range_are_invalid_not_database_errors(engine: AsyncEngine, cursor: str) -> None:
    async with engine.begin() as conn:
        ledger, source, wallet, _ = await _accounts(conn)
        await ledger.post(transfer("in", source, wallet, 10))
        with pytest.raises(InvalidCursor):
            await ledger.entries(wallet, cursor=cursor)
        # The edges that are valid still read.
        page = await ledger.entries(wallet, cursor="0001-01-01T00:00:00+00:00~9223372036854775807")
        assert [e.tx_key for e in page.items] == ["in"]


async def test_sum_posted_adds_the_account_entries_of_a_key_range(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        ledger, source, wallet, other = await _accounts(conn)
        await ledger.post(transfer("ret:a:1", source, wallet, 10, kind="return"))
        await ledger.post(transfer("ret:a:2", source, wallet, 20, kind="return"))
        await ledger.post(transfer("ret:a:3", wallet, other, 5, kind="return"))
        await ledger.post(transfer("ret:a:4", source, wallet, 40, kind="other"))
        await ledger.post(transfer("ret:ab:1", source, wallet, 100, kind="return"))
        await ledger.post(transfer("ret:a;", source, wallet, 1000, kind="return"))
        await ledger.post(transfer("ret:a:pending", source, wallet, 7, kind="return", pending=True))
        assert await ledger.sum_posted(wallet, key_prefix="ret:a:", kind="return") == 25
        assert await ledger.sum_posted(wallet, key_prefix="ret:a:") == 65
        assert await ledger.sum_posted(other, key_prefix="ret:a:") == 5
        assert await ledger.sum_posted(wallet, key_prefix="nothing:") == 0


async def test_one_database_transaction_appends_to_one_stripe(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        _, source, wallet, other = await _accounts(conn)
    async with engine.connect() as conn, engine.connect() as observer:
        for attempt in range(2):
            await conn.begin()
            # A new Ledger per call, as services create them: the transaction still keeps one stripe.
            chains = {
                (await Ledger(conn).post(transfer(f"t{attempt}-{i}", source, wallet, 1))).chain for i in range(30)
            }
            bulk = await Ledger(conn).post_many([transfer(f"b{attempt}-{i}", source, other, 1) for i in range(3)])
            chains |= {tx.chain for tx in bulk}
            assert len(chains) == 1
            free = await observer.execute(
                text("SELECT count(*) FROM (SELECT chain FROM ledger.chains FOR UPDATE SKIP LOCKED) x")
            )
            assert free.scalar_one() == 63
            await observer.rollback()
            await conn.commit()
        assert (await Ledger(conn).verify_chain()).ok
