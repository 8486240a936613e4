"""The database checked as an auditor checks an export: every hash and link of the chain, every stripe's
head, and every account's counters against its entries.

`export_rows` gives the rows an export holds (`ledger.verify.ExportRow`); `verify_chain` runs the offline
verifier (`ledger.verify`) over them, so the database and an exported file are judged by the same code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from sqlalchemy import func, select, text

from ledger import schema
from ledger._room import Room
from ledger.chain import GENESIS_HASH, format_timestamp
from ledger.types import BalanceMismatch
from ledger.verify import ExportRow, Problem, Report, Verifier


class Audit(Room):
    """The chain and the balances, re-derived from what is stored."""

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
