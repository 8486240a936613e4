"""The database itself refuses what would corrupt the ledger, whatever code writes (raw SQL here)."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import AccountFlags, AccountKind, Ledger
from tests.ledger.support import transfer

INSERT_TX = text(
    """
    INSERT INTO ledger.transactions (id, key, kind, phase, currency, posted_at, chain, seq, prev_hash, hash)
    VALUES (:id, :key, 'manual', 'posted', 'COP', '2026-01-01T00:00:00Z', 63, :seq,
            decode(repeat('00', 32), 'hex'), decode(repeat('11', 32), 'hex'))
    """
)
INSERT_ENTRY = text(
    """
    INSERT INTO ledger.entries (tx_id, idx, account_id, amount, currency, posted, posted_at, account_seq,
                                balance_after)
    VALUES (:tx, CAST(:idx AS smallint), :account, :amount, :currency, true, '2026-01-01T00:00:00Z',
            CAST(:idx AS bigint) + 1000, 0)
    """
)


async def _posted(engine: AsyncEngine) -> tuple[UUID, UUID, UUID]:
    async with engine.begin() as conn:
        ledger = Ledger(conn)
        source = (await ledger.create_account("source", "COP", AccountKind.EQUITY)).id
        target = (await ledger.create_account("target", "COP", AccountKind.LIABILITY)).id
        tx = await ledger.post(transfer("t", source, target, 10))
    return tx.id, source, target


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger.transactions SET description = 'changed'",
        "DELETE FROM ledger.transactions",
        "TRUNCATE ledger.transactions CASCADE",
        "UPDATE ledger.entries SET amount = amount * 2",
        "DELETE FROM ledger.entries",
        "TRUNCATE ledger.entries",
        "DELETE FROM ledger.accounts",
        "UPDATE ledger.accounts SET currency = 'USD'",
        "UPDATE ledger.accounts SET code = code || '-x'",
        "UPDATE ledger.accounts SET flags = 1",
        "UPDATE ledger.accounts SET entry_seq = 0",
        "DELETE FROM ledger.chains",
        "UPDATE ledger.chains SET seq = 0 WHERE seq > 0",
    ],
)
async def test_history_cannot_be_rewritten(engine: AsyncEngine, statement: str) -> None:
    await _posted(engine)
    with pytest.raises(DBAPIError, match=r"append-only|immutable"):
        async with engine.begin() as conn:
            await conn.execute(text(statement))


async def test_counters_stay_within_flags_even_for_raw_updates(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await Ledger(conn).create_account(
            "guarded", "COP", AccountKind.LIABILITY, flags=AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
        )
    with pytest.raises(DBAPIError, match="accounts_debits_within_credits"):
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE ledger.accounts SET posted = -1, entry_seq = entry_seq + 1 WHERE code = 'guarded'")
            )


@pytest.mark.parametrize(
    ("statement", "refusal"),
    [
        ("UPDATE ledger.accounts SET posted = posted + 5000000 WHERE code = 'target'", "move only with new entries"),
        ("UPDATE ledger.accounts SET pending_debits = 0 WHERE code = 'source'", "move only with new entries"),
        ("UPDATE ledger.accounts SET last_posted_at = 'infinity' WHERE code = 'target'", "move only with new entries"),
        (
            "UPDATE ledger.accounts SET posted = posted + 5000000, entry_seq = entry_seq + 1 WHERE code = 'target'",
            "not the running balance of its last entry",
        ),
        (
            "INSERT INTO ledger.accounts (id, code, currency, kind, posted) "
            "VALUES (gen_random_uuid(), 'rich', 'COP', 'asset', 5000000)",
            "move only with new entries",
        ),
    ],
)
async def test_balance_counters_cannot_be_set_apart_from_entries(
    engine: AsyncEngine, statement: str, refusal: str
) -> None:
    _, source, target = await _posted(engine)
    async with engine.begin() as conn:
        await Ledger(conn).post(transfer("held", source, target, 3, pending=True))
    with pytest.raises(DBAPIError, match=refusal):
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    async with engine.connect() as conn:
        balances = await Ledger(conn).balances([source, target])
        assert (balances[target].posted, balances[source].posted, balances[source].pending_debits) == (10, -10, 3)
        assert await Ledger(conn).verify_balances() == []


async def test_counters_changed_around_the_triggers_are_found_by_verification(engine: AsyncEngine) -> None:
    _, _, target = await _posted(engine)
    async with engine.begin() as conn:
        # Someone with superuser rights switches the triggers off for their session.
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(text("UPDATE ledger.accounts SET posted = posted + 5000000 WHERE code = 'target'"))
    async with engine.connect() as conn:
        ledger = Ledger(conn)
        mismatches = await ledger.verify_balances()
        assert [(m.account_id, m.counter, m.recorded, m.computed) for m in mismatches] == [
            (target, "posted", 5_000_010, 10)
        ]
        report = await ledger.verify_chain()
        assert report.problem is not None
        assert "account target: posted is 5000010, its entries give 10" in report.problem.reason


async def test_unbalanced_raw_insert_is_refused_at_commit(engine: AsyncEngine) -> None:
    _, source, target = await _posted(engine)
    tx = uuid4()
    async with engine.connect() as conn:
        await conn.execute(INSERT_TX, {"id": tx, "key": "raw-unbalanced", "seq": 1_000_000})
        await conn.execute(INSERT_ENTRY, {"tx": tx, "idx": 0, "account": source, "amount": -5, "currency": "COP"})
        await conn.execute(INSERT_ENTRY, {"tx": tx, "idx": 1, "account": target, "amount": 4, "currency": "COP"})
        # Nothing is refused yet: the check is deferred to the commit.
        assert (await conn.execute(text("SELECT count(*) FROM ledger.balance_checks"))).scalar_one() == 2
        with pytest.raises(DBAPIError, match="does not sum to zero"):
            await conn.commit()
    async with engine.connect() as conn:
        found = await conn.execute(text("SELECT count(*) FROM ledger.transactions WHERE id = :id"), {"id": tx})
        assert found.scalar_one() == 0


async def test_entries_balanced_across_statements_commit(engine: AsyncEngine) -> None:
    _, source, target = await _posted(engine)
    tx = uuid4()
    async with engine.begin() as conn:
        await conn.execute(INSERT_TX, {"id": tx, "key": "raw-balanced", "seq": 1_000_000})
        await conn.execute(INSERT_ENTRY, {"tx": tx, "idx": 0, "account": source, "amount": -5, "currency": "COP"})
        await conn.execute(INSERT_ENTRY, {"tx": tx, "idx": 1, "account": target, "amount": 5, "currency": "COP"})
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM ledger.balance_checks"))).scalar_one() == 0
        # The raw write went around the ledger: its hash is not the chain's, and verification says so.
        report = await Ledger(conn).verify_chain()
        assert not report.ok


@pytest.mark.parametrize(
    ("currency", "account_known", "tx_known"),
    [("USD", True, True), ("COP", False, True), ("COP", True, False)],
)
async def test_entries_must_match_account_and_transaction(
    engine: AsyncEngine, currency: str, account_known: bool, tx_known: bool
) -> None:
    _, source, _ = await _posted(engine)
    tx = uuid4()
    entry = {"tx": tx, "idx": 0, "account": source if account_known else uuid4(), "amount": -5, "currency": currency}
    async with engine.begin() as conn:
        if tx_known:
            await conn.execute(INSERT_TX, {"id": tx, "key": "raw", "seq": 1_000_000})
        with pytest.raises(DBAPIError, match=r"do not match|names no account"):
            await conn.execute(INSERT_ENTRY, entry)


@pytest.mark.parametrize(
    ("column", "names", "refusal"),
    [
        ("pending_id", "unknown", "not a pending transaction"),
        ("pending_id", "posted", "not a pending transaction"),
        ("reverses_id", "unknown", "not a posted transaction"),
    ],
)
async def test_resolution_and_reversal_name_a_transaction_of_the_right_phase(
    engine: AsyncEngine, column: str, names: str, refusal: str
) -> None:
    posted, _, _ = await _posted(engine)
    related = posted if names == "posted" else uuid4()
    phase = "post_pending" if column == "pending_id" else "posted"
    async with engine.begin() as conn:
        with pytest.raises(DBAPIError, match=refusal):
            await conn.execute(
                text(
                    f"""
                    INSERT INTO ledger.transactions (id, key, kind, phase, {column}, currency, posted_at, chain,
                                                     seq, prev_hash, hash)
                    VALUES (:id, 'raw-related', 'manual', :phase, :related, 'COP', now(), 63, 1000000,
                            decode(repeat('00', 32), 'hex'), decode(repeat('11', 32), 'hex'))
                    """
                ),
                {"id": uuid4(), "phase": phase, "related": related},
            )
