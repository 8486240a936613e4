"""Statement lines in, findings out: COPY for the upload, set-based SQL for the matching.

What "in the ledger" means for provider P: an entitlement of a programme whose provider is P, with a
disbursement posting in the ledger (kind `disbursement`, posted by `accounting.service.disburse` when the provider
issued it; its key is `prog:{programme}:disbursement:{entitlement}:issued`). Its ledger amount and currency
are that posting's (the total, should an entitlement have been disbursed more than once), its date the
last posting's UTC day. Later movements (redemption, return of an expired voucher) do not change what
the provider issued, so they do not enter the comparison.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from cbi_service.accounting.service import DISBURSEMENT
from cbi_service.kit.db import read_snapshot
from cbi_service.kit.repository import Repository
from cbi_service.reconciliation.models import CATEGORIES, Reconciliation, ReconciliationBreak
from cbi_service.reconciliation.statement import Line

LINE_COLUMNS = (
    "reconciliation_id",
    "line_no",
    "entitlement_ref",
    "entitlement_id",
    "provider_ref",
    "amount_minor",
    "currency",
    "value_date",
)

# The next chunk of lines in file order, each with its entitlement's disbursements (found through the
# unique index on ledger keys). A line counts against an entitlement only if no earlier line of the
# statement named it: a repeated line is missing_in_ledger. A line matches when amount, currency and, if
# the line states one, provider_ref agree; any other difference is a mismatch (`differences` in the report).
MATCH_CHUNK_SQL = """
WITH chunk AS (
    SELECT l.line_no, l.entitlement_id, l.amount_minor, l.currency, l.provider_ref
      FROM reconciliation_lines l
     WHERE l.reconciliation_id = :rid AND l.line_no > :after
     ORDER BY l.line_no
     LIMIT :size
), ledger AS (
    SELECT e.id AS entitlement_id, e.provider_ref, d.*
      FROM entitlements e
      JOIN programmes p ON p.id = e.programme_id AND p.provider = :provider
     CROSS JOIN LATERAL (
           SELECT (array_agg(t.id ORDER BY t.posted_at DESC, t.seq DESC))[1] AS tx_id,
                  min(t.currency) AS currency,
                  max(t.posted_at) AS posted_at,
                  sum((SELECT sum(x.amount) FROM ledger.entries x WHERE x.tx_id = t.id AND x.amount > 0))::bigint
                      AS amount_minor
             FROM ledger.transactions t
            WHERE t.key >= ('prog:' || e.programme_id || ':' || :kind || ':' || e.id || ':') COLLATE "C"
              AND t.key < ('prog:' || e.programme_id || ':' || :kind || ':' || e.id || ';') COLLATE "C"
              AND t.kind = :kind
     ) d
     WHERE e.id IN (SELECT entitlement_id FROM chunk) AND d.tx_id IS NOT NULL
)
INSERT INTO reconciliation_items
    (reconciliation_id, category, line_no, entitlement_id, ledger_transaction_id, ledger_amount_minor,
     ledger_currency, ledger_posted_at, ledger_provider_ref)
SELECT :rid,
       CASE
           WHEN d.tx_id IS NULL OR EXISTS (
               SELECT 1 FROM reconciliation_lines o
                WHERE o.reconciliation_id = :rid AND o.entitlement_id = c.entitlement_id
                  AND o.line_no < c.line_no
           ) THEN 'missing_in_ledger'
           WHEN d.amount_minor = c.amount_minor AND d.currency = c.currency
                AND (c.provider_ref IS NULL OR c.provider_ref IS NOT DISTINCT FROM d.provider_ref) THEN 'matched'
           ELSE 'amount_mismatch'
       END,
       c.line_no, c.entitlement_id, d.tx_id, d.amount_minor, d.currency, d.posted_at, d.provider_ref
  FROM chunk c
  LEFT JOIN ledger d ON d.entitlement_id = c.entitlement_id
ON CONFLICT DO NOTHING
RETURNING category
"""

# The provider's disbursements of the period (found through the ledger's posted_at index) that no line
# of the statement names.
UNMATCHED_SQL = """
WITH posted AS (
    SELECT (t.refs ->> 'entitlement_id')::uuid AS entitlement_id, t.id, t.currency, t.posted_at, t.seq,
           (SELECT sum(x.amount) FROM ledger.entries x WHERE x.tx_id = t.id AND x.amount > 0) AS amount_minor
      FROM ledger.transactions t
     WHERE t.kind = :kind AND t.posted_at >= :start AND t.posted_at < :end
), ledger AS (
    SELECT e.id AS entitlement_id, e.provider_ref,
           (array_agg(d.id ORDER BY d.posted_at DESC, d.seq DESC))[1] AS tx_id,
           min(d.currency) AS currency, max(d.posted_at) AS posted_at, sum(d.amount_minor)::bigint AS amount_minor
      FROM posted d
      JOIN entitlements e ON e.id = d.entitlement_id
      JOIN programmes p ON p.id = e.programme_id AND p.provider = :provider
     GROUP BY e.id, e.provider_ref
)
INSERT INTO reconciliation_items
    (reconciliation_id, category, entitlement_id, ledger_transaction_id, ledger_amount_minor, ledger_currency,
     ledger_posted_at, ledger_provider_ref)
SELECT :rid, 'missing_in_statement', d.entitlement_id, d.tx_id, d.amount_minor, d.currency, d.posted_at,
       d.provider_ref
  FROM ledger d
 WHERE NOT EXISTS (
       SELECT 1 FROM reconciliation_lines l
        WHERE l.reconciliation_id = :rid AND l.entitlement_id = d.entitlement_id
 )
 ORDER BY d.posted_at, d.entitlement_id
ON CONFLICT DO NOTHING
RETURNING category
"""

ITEMS_SQL = """
SELECT i.line_no, coalesce(l.entitlement_ref, i.entitlement_id::text) AS entitlement_ref,
       l.provider_ref, l.amount_minor, l.currency, l.value_date,
       i.ledger_transaction_id, i.ledger_amount_minor, i.ledger_currency, i.ledger_posted_at, i.ledger_provider_ref
  FROM reconciliation_items i
  LEFT JOIN reconciliation_lines l ON l.reconciliation_id = i.reconciliation_id AND l.line_no = i.line_no
 WHERE i.reconciliation_id = :rid AND i.category = :category
 ORDER BY i.line_no NULLS LAST, i.id
"""


class ReconciliationRepository(Repository[Reconciliation]):
    model = Reconciliation
    not_found = "Reconciliation not found."
    server_set = ("created_at", "status", "lines_done")

    async def copy_lines(self, reconciliation_id: uuid.UUID, lines: Sequence[Line]) -> None:
        """COPY one batch of lines on the session's own connection (inside its transaction)."""
        raw = await (await self.session.connection()).get_raw_connection()
        driver = raw.driver_connection
        assert isinstance(driver, asyncpg.Connection)
        await driver.copy_records_to_table(
            "reconciliation_lines",
            records=[
                (
                    reconciliation_id,
                    line.line_no,
                    line.entitlement_ref,
                    line.entitlement_id,
                    line.provider_ref,
                    line.amount_minor,
                    line.currency,
                    line.value_date,
                )
                for line in lines
            ],
            columns=LINE_COLUMNS,
        )

    async def stamp_finished(self, reconciliation: Reconciliation) -> None:
        """`finished_at` from the database's clock, like `created_at`."""
        reconciliation.finished_at = func.now()
        await self.session.flush()

    async def match_chunk(self, reconciliation: Reconciliation, size: int) -> Counter[str]:
        """Findings for the next `size` lines after the last line already reconciled."""
        after = (
            await self.session.execute(
                text("SELECT coalesce(max(line_no), 0) FROM reconciliation_items WHERE reconciliation_id = :rid"),
                {"rid": reconciliation.id},
            )
        ).scalar_one()
        result = await self.session.execute(
            text(MATCH_CHUNK_SQL),
            {
                "rid": reconciliation.id,
                "after": after,
                "size": size,
                "provider": reconciliation.provider,
                "kind": DISBURSEMENT,
            },
        )
        return Counter(row.category for row in result)

    async def insert_unmatched(self, reconciliation: Reconciliation, start: datetime, end: datetime) -> int:
        result = await self.session.execute(
            text(UNMATCHED_SQL),
            {
                "rid": reconciliation.id,
                "provider": reconciliation.provider,
                "kind": DISBURSEMENT,
                "start": start,
                "end": end,
            },
        )
        return len(result.all())


async def stream_items(
    engine: AsyncEngine, reconciliation_id: uuid.UUID
) -> AsyncGenerator[tuple[str, Sequence[Any]], None]:
    """(category, batch of item rows) for every category in turn, starting each category with an empty batch,
    from one read snapshot (`read_snapshot`)."""
    async with read_snapshot(engine) as conn:
        for category in CATEGORIES:
            yield category, []
            result = await conn.stream(
                text(ITEMS_SQL).execution_options(yield_per=5000),
                {"rid": reconciliation_id, "category": category},
            )
            async for batch in result.partitions(5000):
                yield category, batch


class BreakRepository(Repository[ReconciliationBreak]):
    model = ReconciliationBreak

    async def insert(self, values: dict[str, Any]) -> uuid.UUID | None:
        """Insert a break; None when it is already kept (its event, or another report of the same load)."""
        stmt = insert(ReconciliationBreak).values(values).on_conflict_do_nothing().returning(ReconciliationBreak.id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list(
        self, *, after_id: uuid.UUID | None, limit: int, provider: str | None, kind: str | None
    ) -> Sequence[ReconciliationBreak]:
        stmt = select(ReconciliationBreak)
        if provider is not None:
            stmt = stmt.where(ReconciliationBreak.provider == provider)
        if kind is not None:
            stmt = stmt.where(ReconciliationBreak.kind == kind)
        return await self.page(stmt, after_id, limit)
