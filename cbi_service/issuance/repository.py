"""Issuance persistence: the lane locks, the programme a lane sends for, the lanes the sweep starts.

The entitlements a lane claims and records are read and written through `entitlements`, their owner.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from cbi_service.batches.models import PaymentBatch
from cbi_service.programmes.models import Programme

_LANE_LOCK = text("SELECT pg_try_advisory_lock(hashtext(:batch), :lane)")
_LANE_UNLOCK = text("SELECT pg_advisory_unlock(hashtext(:batch), :lane)")
_STALLED = text(
    """
    SELECT b.id::text, lane FROM payment_batches b CROSS JOIN generate_series(0, :lanes - 1) AS lane
     WHERE b.status = 'processing'
       AND EXISTS (SELECT 1 FROM entitlements e WHERE e.batch_id = b.id AND e.status = 'pending')
       AND NOT EXISTS (
            SELECT 1 FROM jobs j
             WHERE j.kind = :kind AND j.status = 'queued'
               AND j.payload->>'batch_id' = b.id::text AND (j.payload->>'lane')::int = lane)
       AND pg_try_advisory_xact_lock(hashtext(b.id::text), lane)
    """
)


async def try_lock_lane(holder: AsyncConnection, batch_id: uuid.UUID, lane: int) -> bool:
    """Take the session-level lock of (batch, lane) on `holder`, an autocommit connection; False if taken."""
    return bool(await holder.scalar(_LANE_LOCK, {"batch": str(batch_id), "lane": lane}))


async def unlock_lane(holder: AsyncConnection, batch_id: uuid.UUID, lane: int) -> None:
    await holder.execute(_LANE_UNLOCK, {"batch": str(batch_id), "lane": lane})


class IssuanceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def programme_of_processing(self, batch_id: uuid.UUID) -> Programme | None:
        """The programme of the batch if the batch is processing (a lane has nothing to send otherwise)."""
        return await self.session.scalar(
            select(Programme)
            .join(PaymentBatch, PaymentBatch.programme_id == Programme.id)
            .where(PaymentBatch.id == batch_id, PaymentBatch.status == "processing")
        )

    async def stalled_lanes(self, kind: str, lanes: int) -> Sequence[tuple[str, int]]:
        """(batch id, lane) of the processing batches' free lanes with pending entitlements and no queued
        `kind` job, each locked for this transaction so two sweeps never start the same lane."""
        rows = await self.session.execute(_STALLED, {"kind": kind, "lanes": lanes})
        return [(batch_id, lane) for batch_id, lane in rows.all()]
