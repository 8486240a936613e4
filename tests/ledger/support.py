"""Shared helpers for the ledger tests: direct SQL views of the invariants, independent of `Ledger`."""

from __future__ import annotations

from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger import AccountFlags, AccountKind, EntrySpec, Ledger, TransactionSpec


def transfer(
    key: str,
    source: UUID,
    target: UUID,
    amount: int,
    *,
    kind: str = "transfer",
    pending: bool = False,
    references: dict[str, str] | None = None,
    description: str = "",
) -> TransactionSpec:
    """Move `amount` from `source` (debited) to `target` (credited)."""
    return TransactionSpec(
        key,
        [EntrySpec(source, -amount), EntrySpec(target, amount)],
        kind=kind,
        references=references or {},
        description=description,
        pending=pending,
    )


async def create_wallet(ledger: Ledger, currency: str, code: str = "wallet") -> UUID:
    """A liability account that may not be overdrawn: its debits never exceed its credits."""
    account = await ledger.create_account(
        code, currency, AccountKind.LIABILITY, flags=AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
    )
    return account.id


async def unbalanced_transactions(conn: AsyncConnection) -> list[UUID]:
    rows = await conn.execute(text("SELECT tx_id FROM ledger.entries GROUP BY tx_id, currency HAVING sum(amount) <> 0"))
    return [r.tx_id for r in rows]


async def counter_mismatches(conn: AsyncConnection) -> list[str]:
    """Accounts whose counters disagree with their entries (posted sum, open reservations, running balance)."""
    rows = await conn.execute(
        text(
            """
            WITH open_pending AS (
                SELECT e.account_id,
                       sum(-e.amount) FILTER (WHERE e.amount < 0) AS debits,
                       sum(e.amount) FILTER (WHERE e.amount > 0) AS credits
                  FROM ledger.entries e
                  JOIN ledger.transactions t ON t.id = e.tx_id
                 WHERE t.phase = 'pending'
                   AND NOT EXISTS (SELECT 1 FROM ledger.transactions r WHERE r.pending_id = t.id)
                 GROUP BY e.account_id
            ), posted AS (
                SELECT account_id, sum(amount) AS total, count(*) AS n
                  FROM ledger.entries WHERE posted GROUP BY account_id
            ), running AS (
                SELECT account_id, bool_and(balance_after = coalesce(run, 0)) AS ok, count(*) AS n,
                       max(account_seq) AS last
                  FROM (SELECT account_id, balance_after, account_seq,
                               sum(amount) FILTER (WHERE posted)
                                   OVER (PARTITION BY account_id ORDER BY account_seq) AS run
                          FROM ledger.entries) x
                 GROUP BY account_id
            )
            SELECT a.code
              FROM ledger.accounts a
              LEFT JOIN open_pending o ON o.account_id = a.id
              LEFT JOIN posted p ON p.account_id = a.id
              LEFT JOIN running r ON r.account_id = a.id
             WHERE a.posted <> coalesce(p.total, 0)
                OR a.pending_debits <> coalesce(o.debits, 0)
                OR a.pending_credits <> coalesce(o.credits, 0)
                OR a.entry_seq <> coalesce(r.n, 0)
                OR a.entry_seq <> coalesce(r.last, 0)
                OR NOT coalesce(r.ok, true)
            """
        )
    )
    return [r.code for r in rows]


async def flag_violations(conn: AsyncConnection) -> list[str]:
    rows = await conn.execute(
        text(
            """
            SELECT code FROM ledger.accounts
             WHERE (flags & 1 <> 0 AND posted - pending_debits < 0)
                OR (flags & 2 <> 0 AND posted + pending_credits > 0)
            """
        )
    )
    return [r.code for r in rows]


async def balances_snapshot(conn: AsyncConnection) -> dict[str, tuple[int, int, int]]:
    rows = await conn.execute(text("SELECT code, posted, pending_debits, pending_credits FROM ledger.accounts"))
    return {r.code: (r.posted, r.pending_debits, r.pending_credits) for r in rows}


async def transaction_count(conn: AsyncConnection) -> int:
    return int((await conn.execute(text("SELECT count(*) FROM ledger.transactions"))).scalar_one())
