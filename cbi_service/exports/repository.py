"""Reads ledger entries for an export in one consistent snapshot, formatted by PostgreSQL.

The database renders every text column (ids, hex digests, the decimal amount, RFC 3339 times), so a CSV
export is a plain `COPY (SELECT ...) TO STDOUT` and the other formats read the same rows through a
server-side cursor: no per-row formatting in Python, and memory bounded by one batch either way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cbi_service.exports.rows import SPREADSHEET_TEXT_COLUMNS, amount_exponent
from cbi_service.kit.cells import neutralised_sql
from cbi_service.kit.db import read_snapshot

BATCH_ROWS = 5_000
COPY_QUEUE = 8

# $1..$3: currency digits (code, exponent, 10^exponent); the filters follow as $4, $5, ... The ORDER BY is
# the chain order within each stripe (posted_at never decreases along a stripe, seq breaks ties).
_SELECT = """
SELECT t.id::text AS transaction_id,
       {key} AS "key",
       {kind} AS kind,
       {phase} AS phase,
       coalesce(t.pending_id, t.reverses_id)::text AS related_id,
       {description} AS description,
       t.refs::text AS "references",
       to_char(t.posted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS posted_at,
       t.chain,
       t.seq,
       encode(t.prev_hash, 'hex') AS prev_hash,
       encode(t.hash, 'hex') AS hash,
       e.idx AS entry,
       {account_code} AS account_code,
       CASE
           WHEN d.exponent = 0 THEN e.amount::text
           ELSE CASE WHEN e.amount < 0 THEN '-' ELSE '' END || (abs(e.amount) / d.scale)::text || '.'
                || lpad((abs(e.amount) % d.scale)::text, d.exponent, '0')
       END AS amount,
       {currency} AS currency,
       e.amount AS amount_minor
  FROM ledger.transactions t
  JOIN ledger.entries e ON e.tx_id = t.id
  JOIN ledger.accounts a ON a.id = e.account_id
  JOIN unnest($1::text[], $2::int[], $3::bigint[]) AS d(currency, exponent, scale) ON d.currency = e.currency
"""
_TEXT = {
    "key": "t.key",
    "kind": "t.kind",
    "phase": "t.phase",
    "description": "t.description",
    "account_code": "a.code",
    "currency": "e.currency",
}
_FROM = "t.posted_at >= ${}"
_TO = "t.posted_at < ${}"
_TOUCHING = """EXISTS (
    SELECT 1 FROM ledger.entries x JOIN ledger.accounts y ON y.id = x.account_id
     WHERE x.tx_id = t.id AND starts_with(y.code, ${}))"""
_ORDER = " ORDER BY t.posted_at, t.chain, t.seq, e.idx"

# What an export of the same filters holds, for its manifest: its transactions in export order, and its
# entries' totals per currency.
_HEADS = """
SELECT t.id::text, t.chain, t.seq,
       to_char(t.posted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       encode(t.prev_hash, 'hex'), encode(t.hash, 'hex')
  FROM ledger.transactions t{where}
 ORDER BY t.posted_at, t.chain, t.seq
"""
_TOTALS = """
SELECT e.currency, count(*),
       coalesce(sum(-e.amount) FILTER (WHERE e.amount < 0), 0)::text,
       coalesce(sum(e.amount) FILTER (WHERE e.amount > 0), 0)::text
  FROM ledger.transactions t
  JOIN ledger.entries e ON e.tx_id = t.id{where}
 GROUP BY e.currency
"""
_NOW = "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"


@dataclass(frozen=True)
class ExportQuery:
    """`start <= posted_at < end`; with `account_prefix`, whole transactions touching such an account."""

    start: datetime | None
    end: datetime | None
    account_prefix: str | None
    #: Text for spreadsheets (CSV and XLSX exports): `SPREADSHEET_TEXT_COLUMNS` neutralised in SQL.
    for_spreadsheets: bool = False

    def sql(self) -> tuple[str, list[Any]]:
        """The statement and its arguments after the three digits arrays."""
        select = _SELECT.format(**{c: neutralised_sql(e) if self.for_spreadsheets else e for c, e in _TEXT.items()})
        where, args = self.where(first=4)
        return select + where + _ORDER, args

    def where(self, *, first: int) -> tuple[str, list[Any]]:
        """The WHERE clause on `ledger.transactions t` (empty without filters), its parameters numbered from
        `$first`, and their values."""
        conditions: list[str] = []
        args: list[Any] = []
        for fragment, value in ((_FROM, self.start), (_TO, self.end), (_TOUCHING, self.account_prefix)):
            if value is not None:
                conditions.append(fragment.format(first + len(args)))
                args.append(value)
        return (f" WHERE {' AND '.join(conditions)}" if conditions else ""), args


@contextlib.asynccontextmanager
async def _snapshot(engine: AsyncEngine) -> AsyncIterator[tuple[asyncpg.Connection, list[Any]]]:
    """The driver connection of a read snapshot (`read_snapshot`), and the digits arrays."""
    async with read_snapshot(engine) as conn:
        # Through SQLAlchemy first, so that the transaction is begun on the driver connection.
        currencies = list((await conn.execute(text("SELECT DISTINCT currency FROM ledger.accounts"))).scalars())
        exponents = [amount_exponent(c) for c in currencies]
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert isinstance(driver, asyncpg.Connection)
        yield driver, [currencies, exponents, [10**e for e in exponents]]


async def copy_csv(engine: AsyncEngine, query: ExportQuery) -> AsyncGenerator[bytes, None]:
    """The export as CSV (RFC 4180, header line first) straight from PostgreSQL's COPY.

    COPY pushes its output into a small bounded queue that the response drains: when the client reads
    slowly, the queue fills and COPY waits, so memory stays at a few chunks.
    """
    sql, args = query.sql()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(COPY_QUEUE)
    async with _snapshot(engine) as (driver, digits):

        async def keep(chunk: bytes | bytearray | memoryview) -> None:
            await queue.put(bytes(chunk))

        async def produce() -> None:
            try:
                await driver.copy_from_query(
                    sql,
                    *digits,
                    *args,
                    output=keep,
                    format="csv",
                    header=True,
                    force_quote=list(SPREADSHEET_TEXT_COLUMNS) if query.for_spreadsheets else None,
                )
            except asyncio.CancelledError:
                raise
            except BaseException:
                await queue.put(None)  # wake the reader, which then finds the error in the task
                raise
            await queue.put(None)

        task = asyncio.create_task(produce())
        try:
            while (chunk := await queue.get()) is not None:
                yield chunk
            await task
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def fetch_batches(engine: AsyncEngine, query: ExportQuery) -> AsyncGenerator[list[asyncpg.Record], None]:
    """The export's rows (fields in `COLUMNS` order) in batches, through a server-side cursor."""
    sql, args = query.sql()
    async with _snapshot(engine) as (driver, digits):
        cursor = await driver.cursor(sql, *digits, *args)
        while batch := await cursor.fetch(BATCH_ROWS):
            yield batch


@dataclass(frozen=True)
class WindowReader:
    """The manifest's reads of one snapshot: when it was taken, the transactions and the totals."""

    driver: asyncpg.Connection
    taken_at: str
    query: ExportQuery

    async def transaction_batches(self) -> AsyncGenerator[list[asyncpg.Record], None]:
        """(id, chain, seq, posted_at, prev_hash, hash) of each transaction, in export order."""
        where, args = self.query.where(first=1)
        cursor = await self.driver.cursor(_HEADS.format(where=where), *args)
        while batch := await cursor.fetch(BATCH_ROWS):
            yield batch

    async def currency_totals(self) -> list[asyncpg.Record]:
        """(currency, entries, debits, credits) with the sums as decimal text (they may pass 64 bits)."""
        where, args = self.query.where(first=1)
        return list(await self.driver.fetch(_TOTALS.format(where=where), *args))


@contextlib.asynccontextmanager
async def window_snapshot(engine: AsyncEngine, query: ExportQuery) -> AsyncIterator[WindowReader]:
    async with read_snapshot(engine) as conn:
        taken_at = (await conn.execute(text(_NOW))).scalar_one()  # begins the transaction on the driver connection
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert isinstance(driver, asyncpg.Connection)
        yield WindowReader(driver, taken_at, query)
