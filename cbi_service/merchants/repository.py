from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import cast

from sqlalchemy import Row, func, insert, select

from cbi_service.kit.repository import Repository
from cbi_service.merchants.models import Merchant, MerchantProgramme


class MerchantRepository(Repository[Merchant]):
    model = Merchant
    not_found = "Merchant not found."
    server_set = ("created_at",)

    async def add_programmes(self, merchant_id: uuid.UUID, programme_ids: Sequence[uuid.UUID]) -> None:
        rows = [{"merchant_id": merchant_id, "programme_id": programme_id} for programme_id in programme_ids]
        await self.session.execute(insert(MerchantProgramme), rows)

    async def programmes_of(self, merchant_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
        """Each merchant's programme ids, in id order."""
        stmt = (
            select(MerchantProgramme.merchant_id, MerchantProgramme.programme_id)
            .where(MerchantProgramme.merchant_id.in_(merchant_ids))
            .order_by(MerchantProgramme.merchant_id, MerchantProgramme.programme_id)
        )
        found: dict[uuid.UUID, list[uuid.UUID]] = {merchant_id: [] for merchant_id in merchant_ids}
        for merchant_id, programme_id in (await self.session.execute(stmt)).all():
            found[merchant_id].append(programme_id)
        return found

    async def refs(self, merchant_ids: Sequence[uuid.UUID]) -> Sequence[Row[uuid.UUID, str, str, list[uuid.UUID]]]:
        """(id, name, currency, programme ids) of each of the merchants, in one statement."""
        programmes = func.array_remove(func.array_agg(MerchantProgramme.programme_id), None)
        stmt = (
            select(Merchant.id, Merchant.name, Merchant.currency, programmes)
            .outerjoin(MerchantProgramme, MerchantProgramme.merchant_id == Merchant.id)
            .where(Merchant.id.in_(merchant_ids))
            .group_by(Merchant.id)
        )
        return cast(Sequence[Row[uuid.UUID, str, str, list[uuid.UUID]]], (await self.session.execute(stmt)).all())

    async def list(
        self, *, after_id: uuid.UUID | None, limit: int, programme_id: uuid.UUID | None, country: str | None
    ) -> Sequence[Merchant]:
        stmt = select(Merchant)
        if programme_id is not None:
            serves = select(MerchantProgramme.merchant_id).where(MerchantProgramme.programme_id == programme_id)
            stmt = stmt.where(Merchant.id.in_(serves))
        if country is not None:
            stmt = stmt.where(Merchant.country == country)
        return await self.page(stmt, after_id, limit)
