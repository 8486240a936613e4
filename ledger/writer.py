"""Group commit: independent postings of many concurrent callers share database transactions.

A database transaction per posting pays a BEGIN, a COMMIT with its WAL flush and the locks of the
accounts for every transfer; between hot accounts those locks serialise everything. `PostingWriter` keeps
one writer task: while it writes and commits one database transaction, the postings that arrive queue up,
and the next transaction takes them all (`Ledger.post_each`: accounts locked once, rows written in bulk,
each posting posted or refused on its own). Under load the fixed costs are shared by many transfers, the
batching that ledgers such as TigerBeetle are built on; with one caller at a time it is one posting per
commit. Every `post` returns only once its transaction is committed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.core import Ledger
from ledger.errors import LedgerError
from ledger.types import Transaction, TransactionSpec

_Waiting = tuple[TransactionSpec, "asyncio.Future[Transaction]"]


class PostingWriter:
    """Posts transactions that stand on their own, committing those of concurrent callers together.

    `post` returns what `Ledger.post` returns, once committed, or raises its refusal. A posting that must
    commit atomically with the caller's other writes goes through `Ledger(conn)` in the caller's own
    transaction instead. If the database transaction fails as a whole (a lost connection, a failed
    commit), every posting of it gets that error and its outcome is unknown: the caller retries with
    the same key, which either posts it or returns the committed original.
    """

    def __init__(self, engine: AsyncEngine, *, max_batch: int = 2000) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._engine = engine
        self._max_batch = max_batch
        self._waiting: deque[_Waiting] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def post(self, spec: TransactionSpec) -> Transaction:
        if self._closed:
            raise LedgerError("the posting writer is closed")
        future: asyncio.Future[Transaction] = asyncio.get_running_loop().create_future()
        self._waiting.append((spec, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._write())
        return await future

    async def aclose(self) -> None:
        """Refuse new postings and wait until those already queued are committed or refused."""
        self._closed = True
        if self._task is not None:
            await self._task

    async def __aenter__(self) -> PostingWriter:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _write(self) -> None:
        """Commit what is queued, a database transaction at a time, until nothing is."""
        waiting = self._waiting
        while waiting:
            group = [waiting.popleft() for _ in range(min(len(waiting), self._max_batch))]
            try:
                async with self._engine.begin() as conn:
                    outcomes = await Ledger(conn).post_each([spec for spec, _ in group])
            except asyncio.CancelledError:
                for _, future in (*group, *waiting):
                    future.cancel()
                waiting.clear()
                raise
            except Exception as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), outcome in zip(group, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, LedgerError):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
