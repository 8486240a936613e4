from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from cbi_service.fx.models import FxRate
from cbi_service.kit.repository import Repository


class FxRateRepository(Repository[FxRate]):
    model = FxRate

    async def add_new(self, values: dict[str, Any]) -> FxRate | None:
        """The new rate, or None when the currency already has one for the month (the unique index decides,
        also between two requests at the same instant)."""
        stmt = (
            insert(FxRate)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[FxRate.currency, FxRate.month])
            .returning(FxRate)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def of_month(self, month: str, currencies: Collection[str]) -> Sequence[FxRate]:
        stmt = select(FxRate).where(FxRate.month == month, FxRate.currency.in_(sorted(currencies)))
        return (await self.session.execute(stmt)).scalars().all()

    async def list(
        self, *, after_id: uuid.UUID | None, limit: int, currency: str | None, month: str | None
    ) -> Sequence[FxRate]:
        stmt = select(FxRate)
        if currency is not None:
            stmt = stmt.where(FxRate.currency == currency)
        if month is not None:
            stmt = stmt.where(FxRate.month == month)
        return await self.page(stmt, after_id, limit)
