"""Bulk posting, step 3: the planned rows streamed with COPY while later transactions are still planned.

Inside a savepoint, so that a failure (a refusal, a key already used, a lost race) leaves nothing behind;
one statement then moves the locked accounts' counters and the stripe head (`ledger._plan.ADVANCE_SQL`).
"""

from __future__ import annotations

import asyncio
import gc
from collections import deque
from collections.abc import Sequence
from typing import Any

import asyncpg

from ledger._plan import ADVANCE_SQL, Batch, Replan
from ledger._requests import check_shape
from ledger.errors import LedgerError
from ledger.types import Transaction, TransactionSpec

TX_COPY_COLUMNS = (
    "id",
    "key",
    "kind",
    "phase",
    "pending_id",
    "reverses_id",
    "currency",
    "refs",
    "description",
    "posted_at",
    "chain",
    "seq",
    "prev_hash",
    "hash",
)
ENTRY_COPY_COLUMNS = (
    "tx_id",
    "idx",
    "account_id",
    "amount",
    "currency",
    "posted",
    "posted_at",
    "account_seq",
    "balance_after",
)

#: Transactions per COPY statement of a bulk posting. Planned rows go to the writer as soon as it waits
#: for work (at least MIN_COPY_CHUNK of them, so that PostgreSQL is never idle while rows are ready and
#: the statements are not tiny), and at COPY_CHUNK at the latest. YIELD_EVERY is how often planning lets
#: the writer task run: the writer needs a turn to start each COPY and another once PostgreSQL has
#: answered it, and PostgreSQL waits until it gets them.
MIN_COPY_CHUNK = 100
COPY_CHUNK = 4000
YIELD_EVERY = 25

#: Bulk postings from this many transactions on plan with the cyclic garbage collector paused.
GC_PAUSE_THRESHOLD = 1000


async def write_new(
    driver: asyncpg.Connection,
    batch: Batch,
    specs: Sequence[TransactionSpec],
    new: list[int],
    results: dict[int, Transaction | LedgerError],
    isolate: bool,
) -> None:
    """Plan `specs[i]` for each i of `new` into `batch` and stream them, each outcome into `results`.

    With `isolate`, a refused transaction gets its error in `results` and the others are written; without
    it, the first refusal is raised and nothing is written. Raises `Replan` when the keys were not looked
    up and one may be in use.
    """
    try:
        async with driver.transaction():
            pipeline = CopyPipeline(driver)
            collecting = len(new) >= GC_PAUSE_THRESHOLD and gc.isenabled()
            if collecting:
                # Planning allocates a few objects per row and keeps them all: the cyclic collector
                # would traverse them again and again (it doubled the CPU cost per transaction).
                gc.disable()
            try:
                for n, i in enumerate(new, start=1):
                    spec = specs[i]
                    if not isolate:
                        check_shape(spec)
                    try:
                        results[i] = batch.append(spec)
                    except LedgerError as exc:
                        if not batch.locked.keys_checked:
                            raise Replan from exc
                        if not isolate:
                            raise
                        results[i] = exc
                    if n % YIELD_EVERY == 0:
                        planned = len(batch.transactions)
                        if planned >= COPY_CHUNK or (planned >= MIN_COPY_CHUNK and pipeline.waiting):
                            pipeline.push(batch.take())
                        await pipeline.turn()
                pipeline.push(batch.take())
                await pipeline.close()
            except BaseException:
                await pipeline.abort()
                raise
            finally:
                if collecting:
                    gc.enable()
            await driver.execute(ADVANCE_SQL, *batch.advance_arguments())
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "transactions_key_key":
            raise Replan from exc
        raise


class CopyPipeline:
    """Streams planned rows to PostgreSQL with COPY from a task, while the caller plans the next ones.

    The caller `push`es chunks and calls `turn()` now and then so the writer task can advance (send a
    chunk, read PostgreSQL's answer, start the next COPY); a writer failure surfaces at the next `turn`.
    """

    def __init__(self, driver: asyncpg.Connection) -> None:
        self._driver = driver
        self._chunks: deque[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._writing = False
        self._task = asyncio.create_task(self._run())

    @property
    def waiting(self) -> bool:
        """The writer has sent everything pushed and waits for more."""
        return not self._writing and not self._chunks

    def push(self, chunk: tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]) -> None:
        if chunk[0]:
            self._chunks.append(chunk)
            self._wake.set()

    async def turn(self) -> None:
        await asyncio.sleep(0)
        if self._task.done():
            self._task.result()

    async def close(self) -> None:
        """Wait until everything pushed is written; raises the writer's error if any."""
        self._closing = True
        self._wake.set()
        await self._task

    async def abort(self) -> None:
        """Drop what is not sent yet and wait for the COPY in flight to end (the savepoint is rolled back)."""
        self._closing = True
        self._chunks.clear()
        self._wake.set()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        driver = self._driver
        while True:
            while self._chunks:
                self._writing = True
                transactions, entries = self._chunks.popleft()
                await driver.copy_records_to_table(
                    "transactions", schema_name="ledger", columns=TX_COPY_COLUMNS, records=transactions
                )
                await driver.copy_records_to_table(
                    "entries", schema_name="ledger", columns=ENTRY_COPY_COLUMNS, records=entries
                )
            self._writing = False
            if self._closing:
                return
            self._wake.clear()
            await self._wake.wait()
