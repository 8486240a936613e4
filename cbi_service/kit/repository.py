"""What every repository repeats: a row by its id (or its 404), a new row, and a keyset page.

A domain's repository subclasses `Repository[Model]` and names its `model`; its own queries sit beside
these. Pages follow `kit.pagination`: the router decodes the cursor and `page_of` trims the extra row.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from cbi_service.kit.errors import NotFound
from cbi_service.kit.models import Base

M = TypeVar("M", bound=Base)
R = TypeVar("R")


class Repository(Generic[M]):
    model: type[M]
    #: The 404's title when `require` finds nothing ("Programme not found.").
    not_found: ClassVar[str] = "Not found."
    #: Columns the database fills in on INSERT (timestamps, defaults) that `add` reads back.
    server_set: ClassVar[tuple[str, ...]] = ()

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def _id(self) -> ColumnElement[Any]:
        return self.model.__table__.c.id

    async def get(self, ident: uuid.UUID, *, for_update: bool = False, populate_existing: bool = False) -> M | None:
        """The row, or None. `populate_existing` refreshes an instance the session already holds from the row
        read: a locking get needs it when the row was loaded before the lock, or it keeps the stale values."""
        stmt = select(self.model).where(self._id == ident)
        if for_update:
            stmt = stmt.with_for_update()
        if populate_existing:
            stmt = stmt.execution_options(populate_existing=True)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def require(self, ident: uuid.UUID, *, for_update: bool = False, populate_existing: bool = False) -> M:
        """The row, or the 404 that says which kind of thing was not found."""
        row = await self.get(ident, for_update=for_update, populate_existing=populate_existing)
        if row is None:
            raise NotFound(self.not_found)
        return row

    async def add(self, row: M) -> M:
        """Insert now (services only flush), so the row has its id and `server_set` columns."""
        self.session.add(row)
        await self.session.flush()
        if self.server_set:
            await self.session.refresh(row, list(self.server_set))
        return row

    async def page(
        self,
        stmt: Select[R],
        after: Any,
        limit: int,
        *,
        key: ColumnElement[Any] | InstrumentedAttribute[Any] | None = None,
        descending: bool = False,
    ) -> Sequence[R]:
        """The rows of `stmt` after the cursor's `after`, in `key` order (the id by default; `descending` for
        the newest first of time-ordered ids), one more than `limit`: `page_of` trims that one and makes the
        next cursor from the last row kept."""
        column = self._id if key is None else key
        if after is not None:
            stmt = stmt.where(column < after if descending else column > after)
        order = column.desc() if descending else column
        return (await self.session.execute(stmt.order_by(order).limit(limit + 1))).scalars().all()
