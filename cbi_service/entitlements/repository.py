from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.batches.models import PaymentBatch
from cbi_service.entitlements.models import OPEN_STATUSES, Entitlement, EntitlementEvent


class EntitlementRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, entitlement_id: uuid.UUID, *, for_update: bool = False) -> Entitlement | None:
        stmt = select(Entitlement).where(Entitlement.id == entitlement_id)
        if for_update:
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def lock_many(self, entitlement_ids: Sequence[uuid.UUID]) -> Sequence[Entitlement]:
        """Lock rows in id order (two chunks locking overlapping rows never deadlock)."""
        stmt = (
            select(Entitlement)
            .where(Entitlement.id.in_(entitlement_ids))
            .order_by(Entitlement.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def list(
        self,
        *,
        after_id: uuid.UUID | None,
        limit: int,
        batch_id: uuid.UUID | None,
        beneficiary_id: uuid.UUID | None,
        status: str | None,
    ) -> Sequence[Entitlement]:
        stmt = select(Entitlement)
        if after_id is not None:
            stmt = stmt.where(Entitlement.id > after_id)
        if batch_id is not None:
            stmt = stmt.where(Entitlement.batch_id == batch_id)
        if beneficiary_id is not None:
            stmt = stmt.where(Entitlement.beneficiary_id == beneficiary_id)
        if status is not None:
            stmt = stmt.where(Entitlement.status == status)
        stmt = stmt.order_by(Entitlement.id).limit(limit + 1)
        return (await self.session.execute(stmt)).scalars().all()

    async def history(self, entitlement_id: uuid.UUID) -> Sequence[EntitlementEvent]:
        stmt = (
            select(EntitlementEvent)
            .where(EntitlementEvent.entitlement_id == entitlement_id)
            .order_by(EntitlementEvent.id)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def count_events(self, entitlement_id: uuid.UUID, to_status: str) -> int:
        """How many times the entitlement moved to `to_status` (failures count against the retry budget)."""
        stmt = select(func.count()).where(
            EntitlementEvent.entitlement_id == entitlement_id, EntitlementEvent.to_status == to_status
        )
        return int((await self.session.execute(stmt)).scalar_one())

    async def add_events(self, rows: Iterable[dict[str, Any]]) -> None:
        values = list(rows)
        if values:
            await self.session.execute(insert(EntitlementEvent), values)

    async def counts_by_batch(self, batch_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
        if not batch_ids:
            return {}
        stmt = (
            select(Entitlement.batch_id, Entitlement.status, func.count())
            .where(Entitlement.batch_id.in_(batch_ids))
            .group_by(Entitlement.batch_id, Entitlement.status)
        )
        counts: dict[uuid.UUID, dict[str, int]] = {batch_id: {} for batch_id in batch_ids}
        for batch_id, status, count in (await self.session.execute(stmt)).all():
            counts[batch_id][status] = count
        return counts

    async def complete_done_batches(self, batch_id: uuid.UUID | None = None) -> Sequence[uuid.UUID]:
        """Conditional update: processing batches (or this one) with nothing left pending or submitted are
        completed; returns the ids it completed."""
        still_open = (
            select(Entitlement.id)
            .where(Entitlement.batch_id == PaymentBatch.id, Entitlement.status.in_(OPEN_STATUSES))
            .limit(1)
            .exists()
        )
        stmt = update(PaymentBatch).where(PaymentBatch.status == "processing", ~still_open)
        if batch_id is not None:
            stmt = stmt.where(PaymentBatch.id == batch_id)
        stmt = stmt.values(status="completed", completed_at=func.now(), updated_at=func.now())
        return (await self.session.execute(stmt.returning(PaymentBatch.id))).scalars().all()

    async def reopen_batch(self, batch_id: uuid.UUID) -> None:
        """A retried entitlement is open again, so its completed batch is processing again."""
        await self.session.execute(
            update(PaymentBatch)
            .where(PaymentBatch.id == batch_id, PaymentBatch.status == "completed")
            .values(status="processing", completed_at=None, updated_at=func.now())
        )
