"""Batch persistence: batches, their approvals and exclusions. Recording who was left out is set-based SQL,
so 100,000 beneficiaries take one statement each; the entitlements themselves are written by
`entitlements` (see its repository)."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ARRAY, Uuid, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from cbi_service.batches.models import BatchApproval, BatchExclusion, PaymentBatch
from cbi_service.entitlements.models import LIVE_PREDICATE, OPEN_STATUSES, Entitlement
from cbi_service.entitlements.repository import ELIGIBLE_ENROLLED, ELIGIBLE_LISTED
from cbi_service.kit.repository import Repository

_UUIDS = ARRAY(Uuid())

_REFUSED = """
    WITH requested AS (SELECT DISTINCT unnest(:ids) AS id),
    candidates AS (
        SELECT r.id, b.id IS NOT NULL AS found, b.status, en.id IS NOT NULL AS enrolled
          FROM requested r
          LEFT JOIN beneficiaries b ON b.id = r.id
          LEFT JOIN enrolments en ON en.beneficiary_id = r.id AND en.programme_id = :programme
    )
    INSERT INTO batch_exclusions (batch_id, beneficiary_id, reason)
    SELECT CAST(:batch AS uuid), c.id,
           CASE WHEN NOT c.found THEN 'not_found' WHEN NOT c.enrolled THEN 'not_enrolled' ELSE 'not_active' END
      FROM candidates c
     WHERE NOT (c.found AND c.enrolled AND c.status = 'active')
"""
_ALREADY_PAID = f"""
    INSERT INTO batch_exclusions (batch_id, beneficiary_id, reason, entitlement_id)
    SELECT CAST(:batch AS uuid), held.beneficiary_id, 'already_paid_in_cycle', held.id
      FROM entitlements held
     WHERE held.programme_id = :programme AND held.cycle = :cycle AND held.{LIVE_PREDICATE}
       AND held.batch_id <> :batch
       AND held.beneficiary_id IN (SELECT eligible.id FROM eligible)
    ON CONFLICT (batch_id, beneficiary_id) DO NOTHING
"""  # noqa: S608 - constant fragments, values bound
_INACTIVE = """
    INSERT INTO batch_exclusions (batch_id, beneficiary_id, reason)
    SELECT CAST(:batch AS uuid), gone.id, 'not_active' FROM unnest(:ids) AS gone(id)
    ON CONFLICT (batch_id, beneficiary_id) DO UPDATE SET reason = 'not_active', entitlement_id = NULL
"""


class BatchRepository(Repository[PaymentBatch]):
    model = PaymentBatch
    not_found = "Payment batch not found."
    server_set = ("created_at", "status", "updated_at")

    async def list(
        self, *, after_id: uuid.UUID | None, limit: int, programme_id: uuid.UUID | None, status: str | None
    ) -> Sequence[PaymentBatch]:
        stmt = select(PaymentBatch)
        if programme_id is not None:
            stmt = stmt.where(PaymentBatch.programme_id == programme_id)
        if status is not None:
            stmt = stmt.where(PaymentBatch.status == status)
        return await self.page(stmt, after_id, limit)

    async def exclude_refused(self, batch: PaymentBatch, beneficiary_ids: Sequence[uuid.UUID]) -> None:
        """Record the listed people who cannot be paid: not found, not enrolled or not active."""
        stmt = text(_REFUSED).bindparams(bindparam("ids", type_=_UUIDS))
        await self.session.execute(
            stmt, {"batch": batch.id, "programme": batch.programme_id, "ids": list(beneficiary_ids)}
        )

    async def exclude_already_paid(self, batch: PaymentBatch, beneficiary_ids: Sequence[uuid.UUID] | None) -> None:
        """Record the eligible people left out because another batch already pays them this cycle."""
        params: dict[str, Any] = {"batch": batch.id, "programme": batch.programme_id, "cycle": batch.cycle}
        if beneficiary_ids is None:
            stmt = text(f"WITH {ELIGIBLE_ENROLLED} {_ALREADY_PAID}")
        else:
            stmt = text(f"WITH {ELIGIBLE_LISTED} {_ALREADY_PAID}").bindparams(bindparam("ids", type_=_UUIDS))
            params["ids"] = list(beneficiary_ids)
        await self.session.execute(stmt, params)

    async def exclude_inactive(self, batch_id: uuid.UUID, beneficiary_ids: Sequence[uuid.UUID]) -> None:
        """Record the people dropped at submit because they are no longer active."""
        if beneficiary_ids:
            stmt = text(_INACTIVE).bindparams(bindparam("ids", type_=_UUIDS))
            await self.session.execute(stmt, {"batch": batch_id, "ids": list(beneficiary_ids)})

    async def refresh_totals(self, batch: PaymentBatch, count: int, total: int) -> None:
        """Put the pending entitlements' count and total, and the exclusions' count, on the batch row."""
        excluded = await self.session.scalar(
            select(func.count()).select_from(BatchExclusion).where(BatchExclusion.batch_id == batch.id)
        )
        batch.beneficiary_count, batch.total_minor, batch.excluded_count = count, total, int(excluded or 0)

    async def status(self, batch_id: uuid.UUID, *, for_update: bool = False) -> str | None:
        stmt = select(PaymentBatch.status).where(PaymentBatch.id == batch_id)
        if for_update:
            stmt = stmt.with_for_update()
        return await self.session.scalar(stmt)

    async def complete_done(self, batch_id: uuid.UUID | None = None) -> Sequence[uuid.UUID]:
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

    async def reopen(self, batch_id: uuid.UUID) -> None:
        """A retried entitlement is open again, so its completed batch is processing again."""
        await self.session.execute(
            update(PaymentBatch)
            .where(PaymentBatch.id == batch_id, PaymentBatch.status == "completed")
            .values(status="processing", completed_at=None, updated_at=func.now())
        )

    async def exclude_after_release(self, batch_id: uuid.UUID, left_out: Sequence[tuple[uuid.UUID, uuid.UUID]]) -> None:
        """Record (beneficiary, cancelled entitlement) pairs left out of a released batch, counted on its row."""
        if not left_out:
            return
        rows = [
            {"batch_id": batch_id, "beneficiary_id": beneficiary_id, "reason": "not_active", "entitlement_id": e}
            for beneficiary_id, e in left_out
        ]
        inserted = await self.session.execute(
            pg_insert(BatchExclusion)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["batch_id", "beneficiary_id"])
            .returning(BatchExclusion.beneficiary_id)
        )
        await self.session.execute(
            update(PaymentBatch)
            .where(PaymentBatch.id == batch_id)
            .values(excluded_count=PaymentBatch.excluded_count + len(inserted.all()), updated_at=func.now())
        )

    async def add_approval(self, approval: BatchApproval) -> None:
        self.session.add(approval)
        await self.session.flush()

    async def approvals(self, batch_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, builtins.list[BatchApproval]]:
        found: dict[uuid.UUID, builtins.list[BatchApproval]] = {batch_id: [] for batch_id in batch_ids}
        if batch_ids:
            stmt = select(BatchApproval).where(BatchApproval.batch_id.in_(batch_ids)).order_by(BatchApproval.id)
            for row in (await self.session.execute(stmt)).scalars():
                found[row.batch_id].append(row)
        return found

    async def exclusions(self, batch_id: uuid.UUID, limit: int) -> builtins.list[BatchExclusion]:
        stmt = (
            select(BatchExclusion)
            .where(BatchExclusion.batch_id == batch_id)
            .order_by(BatchExclusion.beneficiary_id)
            .limit(limit)
        )
        return list((await self.session.execute(stmt)).scalars())
