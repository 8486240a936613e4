"""Group commit for the inbox: concurrent webhook requests share one INSERT and one COMMIT.

A provider gets its 2xx only after its event is committed, so every request waits for a commit; done one
transaction per request, the commits (and the pool checkouts, BEGINs and round trips around them) cost far
more than verifying and parsing the event. A writer lane takes whatever requests are waiting, stores them
with one `INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING` (a statement of its own, committed as
it completes: no BEGIN/COMMIT round trips), and answers each one. Alone, a request is written at once (no
added delay); under load, batches grow by themselves. A webhook-id found already stored is looked up
afterwards: ON CONFLICT waited for the row that holds it to commit, so it is visible.

A few lanes write at once, so a commit waiting for its WAL flush (slow while the worker is applying
events) does not hold every other request behind it. Each lane keeps one connection of the engine's pool
and speaks to it through the driver (one prepared statement, no ORM work per batch). If a batch fails,
its rows are written again one per statement, so a row that cannot be stored fails alone; a broken
connection is replaced once before a batch gives up.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cbi_service.webhooks.repository import InboxRow, find_stored, insert_rows

log = structlog.get_logger(__name__)

LANES = 3
MAX_BATCH = 500
_BROKEN_CONNECTION = (OSError, asyncpg.InterfaceError, asyncpg.InternalClientError, asyncpg.PostgresConnectionError)


@dataclass(frozen=True, slots=True)
class Stored:
    """The inbox row that holds this provider's webhook-id; `duplicate` if it was there before."""

    id: uuid.UUID
    status: str
    duplicate: bool


@dataclass(slots=True)
class _Waiting:
    row: InboxRow
    answer: asyncio.Future[Stored]


class InboxWriter:
    def __init__(self, engine: AsyncEngine, *, lanes: int = LANES) -> None:
        self._lanes = [_Lane(engine) for _ in range(lanes)]
        self._waiting: list[_Waiting] = []
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(lane), name=f"webhook-inbox-lane-{n}") for n, lane in enumerate(self._lanes)
        ]

    async def stop(self) -> None:
        """Write what is already waiting, then give the connections back."""
        self._closing = True
        self._wakeup.set()
        await asyncio.gather(*self._tasks)
        for lane in self._lanes:
            await lane.release()

    async def store(self, row: InboxRow) -> Stored:
        """Returns once the row (or an earlier one with its webhook-id) is committed."""
        if self._closing or not self._tasks or all(task.done() for task in self._tasks):
            raise RuntimeError("the webhook inbox is not accepting events")
        answer: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(row, answer))
        self._wakeup.set()
        return await answer

    async def _run(self, lane: _Lane) -> None:
        while True:
            if not self._waiting:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            await self._write(lane, batch)

    async def _write(self, lane: _Lane, batch: list[_Waiting]) -> None:
        try:
            results = await lane.commit([item.row for item in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0].answer, exc)
                return
            log.warning("webhook_inbox_batch_failed", size=len(batch), error=type(exc).__name__)
            for item in batch:
                await self._write(lane, [item])
            return
        for item, result in zip(batch, results, strict=True):
            _settle(item.answer, result)


class _Lane:
    """One writer connection, held for the app's lifetime."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection: AsyncConnection | None = None

    async def commit(self, rows: Sequence[InboxRow]) -> list[Stored]:
        """Store rows; a webhook-id already stored, or repeated within the batch, answers as a duplicate."""
        first: dict[tuple[str, str], InboxRow] = {}
        for row in rows:
            first.setdefault((row.provider, row.webhook_id), row)
        earlier = await self._store(list(first.values()))
        results = []
        for row in rows:
            key = (row.provider, row.webhook_id)
            if key in earlier:
                results.append(Stored(*earlier[key], duplicate=True))
            else:
                results.append(Stored(first[key].id, first[key].status, duplicate=first[key] is not row))
        return results

    async def _store(self, rows: list[InboxRow]) -> dict[tuple[str, str], tuple[uuid.UUID, str]]:
        """Insert `rows` (distinct keys); returns the rows found already stored, by key.

        A connection that broke while idle (server restart, network) is replaced once. Had the INSERT
        committed before the break, the second attempt finds those rows stored: reported as duplicates,
        they are still stored exactly once.
        """
        try:
            return await self._insert(rows)
        except _BROKEN_CONNECTION:
            await self.release(broken=True)
        try:
            return await self._insert(rows)
        except _BROKEN_CONNECTION:
            await self.release(broken=True)
            raise

    async def _insert(self, rows: list[InboxRow]) -> dict[tuple[str, str], tuple[uuid.UUID, str]]:
        driver = await self._driver()
        inserted = await insert_rows(driver, rows)
        keys = [(row.provider, row.webhook_id) for row in rows if row.id not in inserted]
        return await find_stored(driver, keys) if keys else {}

    async def _driver(self) -> asyncpg.Connection:
        if self._connection is None:
            self._connection = await self._engine.connect()
        raw = await self._connection.get_raw_connection()
        driver = raw.driver_connection
        assert isinstance(driver, asyncpg.Connection)
        return driver

    async def release(self, *, broken: bool = False) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if broken:
            await connection.invalidate()
        await connection.close()


def _settle(answer: asyncio.Future[Stored], result: Stored | BaseException) -> None:
    """Answer a waiting request unless it went away (its row is stored anyway: a redelivery is a duplicate)."""
    if answer.done():
        return
    if isinstance(result, BaseException):
        answer.set_exception(result)
    else:
        answer.set_result(result)
