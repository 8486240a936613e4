"""Group commit: the units of work of many concurrent requests carried out together, in one transaction.

A request that writes pays a BEGIN, a round trip per statement and a COMMIT with its WAL flush, and holds
the rows it locks (a programme's ledger accounts) until that commit: under load the fixed costs, not the
work, set the rate, and the locks make the requests take turns. `GroupCommit` keeps one writer task: while
it carries out and commits one group, the items that arrive queue up, and the next group takes them all
(`process` does them in a few bulk statements). With one caller at a time a group is one item. Up to
`writers` groups are carried out at once, each in its own transaction, so a group's statements before its
contended rows do not wait for the commit of the one before (what the rows lock still serialises). Every
`submit` returns once its group is committed, with its own outcome; if the group fails as a whole (a lost
connection, a failed commit), every item of it gets that error and nothing of it was written.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")


class GroupCommit(Generic[Item, Outcome]):
    """`process(session, items)` returns one outcome per item, in order; the session is committed after it."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        process: Callable[[AsyncSession, Sequence[Item]], Awaitable[Sequence[Outcome]]],
        *,
        max_group: int = 256,
        writers: int = 1,
    ) -> None:
        if max_group < 1 or writers < 1:
            raise ValueError("max_group and writers must be at least 1")
        self._sessions = sessions
        self._process = process
        self._max_group = max_group
        self._writers = writers
        self._waiting: deque[tuple[Item, asyncio.Future[Outcome]]] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def submit(self, item: Item) -> Outcome:
        if self._closed:
            raise RuntimeError("the group commit is closed")
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if len(self._tasks) < self._writers:
            # A context of its own: the writer outlives the request that started it and must not carry its
            # context variables (its request id) into the groups of others.
            task = asyncio.create_task(self._write(), context=contextvars.Context())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(future)

    async def aclose(self) -> None:
        """Refuse new items and wait until those queued are committed or failed."""
        self._closed = True
        if self._tasks:
            await asyncio.gather(*self._tasks)

    async def _write(self) -> None:
        waiting = self._waiting
        while waiting:
            group = [waiting.popleft() for _ in range(min(len(waiting), self._max_group))]
            try:
                async with self._sessions() as session, session.begin():
                    outcomes = await self._process(session, [item for item, _ in group])
                    if len(outcomes) != len(group):
                        raise RuntimeError("a group's process returned another number of outcomes than items")
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
                if not future.done():
                    future.set_result(outcome)
