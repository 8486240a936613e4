from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select

from cbi_service.kit.repository import Repository
from cbi_service.programmes.models import Programme


class ProgrammeRepository(Repository[Programme]):
    model = Programme
    not_found = "Programme not found."
    server_set = ("created_at",)

    async def list(
        self, *, after_id: uuid.UUID | None, limit: int, country: str | None, sector: str | None
    ) -> Sequence[Programme]:
        stmt = select(Programme)
        if country is not None:
            stmt = stmt.where(Programme.country == country)
        if sector is not None:
            stmt = stmt.where(Programme.sector == sector)
        return await self.page(stmt, after_id, limit)
