from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.programmes.models import Programme


class ProgrammeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, programme: Programme) -> Programme:
        self.session.add(programme)
        await self.session.flush()
        await self.session.refresh(programme, ["created_at"])
        return programme

    async def get(self, programme_id: uuid.UUID, *, for_update: bool = False) -> Programme | None:
        stmt = select(Programme).where(Programme.id == programme_id)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list(
        self, *, after_id: uuid.UUID | None, limit: int, country: str | None, sector: str | None
    ) -> Sequence[Programme]:
        stmt = select(Programme)
        if after_id is not None:
            stmt = stmt.where(Programme.id > after_id)
        if country is not None:
            stmt = stmt.where(Programme.country == country)
        if sector is not None:
            stmt = stmt.where(Programme.sector == sector)
        stmt = stmt.order_by(Programme.id).limit(limit + 1)
        return (await self.session.execute(stmt)).scalars().all()
