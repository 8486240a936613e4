"""Batch persistence. Filling and freezing a batch are set-based SQL so 100,000 beneficiaries take one
statement each, and the one-live-entitlement-per-programme-cycle rule is enforced by the partial unique
index `uq_entitlements_live_per_cycle` (INSERT ... ON CONFLICT DO NOTHING), never by a prior read."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import ARRAY, Uuid, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.batches.models import BatchApproval, BatchExclusion, PaymentBatch
from cbi_service.entitlements.models import LIVE_PREDICATE

_UUIDS = ARRAY(Uuid())
ANALYZE_AFTER_ROWS = 1000

_AMOUNT = """
    CASE WHEN CAST(:flat AS bigint) IS NOT NULL THEN CAST(:flat AS bigint)
         ELSE LEAST(CAST(:base AS bigint) + CAST(:per_member AS bigint) * b.household_size,
                    COALESCE(CAST(:cap AS bigint), 9223372036854775807))
    END
"""
_INSERT = f"""
    INSERT INTO entitlements (id, batch_id, programme_id, beneficiary_id, cycle, currency, amount_minor)
    SELECT cbi_uuid7(), CAST(:batch AS uuid), CAST(:programme AS uuid), b.id, CAST(:cycle AS text),
           CAST(:currency AS text), {_AMOUNT}
      FROM beneficiaries b
     WHERE b.id IN (SELECT eligible.id FROM eligible)
     ORDER BY b.id
    ON CONFLICT (programme_id, cycle, beneficiary_id) WHERE {LIVE_PREDICATE} DO NOTHING
"""  # noqa: S608 - constant fragments, values bound
_ELIGIBLE_ENROLLED = """
    eligible AS (
        SELECT b.id FROM enrolments en JOIN beneficiaries b ON b.id = en.beneficiary_id
         WHERE en.programme_id = :programme AND b.status = 'active'
    )
"""
_FILL_ENROLLED = f"WITH {_ELIGIBLE_ENROLLED} {_INSERT}"
_FILL_LISTED = f"""
    WITH requested AS (SELECT DISTINCT unnest(:ids) AS id),
    candidates AS (
        SELECT r.id, b.id IS NOT NULL AS found, b.status, en.id IS NOT NULL AS enrolled
          FROM requested r
          LEFT JOIN beneficiaries b ON b.id = r.id
          LEFT JOIN enrolments en ON en.beneficiary_id = r.id AND en.programme_id = :programme
    ),
    refused AS (
        INSERT INTO batch_exclusions (batch_id, beneficiary_id, reason)
        SELECT CAST(:batch AS uuid), c.id,
               CASE WHEN NOT c.found THEN 'not_found' WHEN NOT c.enrolled THEN 'not_enrolled' ELSE 'not_active' END
          FROM candidates c
         WHERE NOT (c.found AND c.enrolled AND c.status = 'active')
    ),
    eligible AS (SELECT c.id FROM candidates c WHERE c.found AND c.enrolled AND c.status = 'active')
    {_INSERT}
"""  # noqa: S608 - constant fragments, values bound
_ALREADY_PAID = f"""
    INSERT INTO batch_exclusions (batch_id, beneficiary_id, reason, entitlement_id)
    SELECT CAST(:batch AS uuid), held.beneficiary_id, 'already_paid_in_cycle', held.id
      FROM entitlements held
     WHERE held.programme_id = :programme AND held.cycle = :cycle AND held.{LIVE_PREDICATE}
       AND held.batch_id <> :batch
       AND held.beneficiary_id IN (SELECT eligible.id FROM eligible)
    ON CONFLICT (batch_id, beneficiary_id) DO NOTHING
"""  # noqa: S608 - constant fragments, values bound
_CANCEL_INACTIVE = """
    WITH gone AS (
        UPDATE entitlements e SET status = 'cancelled', updated_at = now()
          FROM beneficiaries b
         WHERE e.batch_id = :batch AND e.status = 'pending'
           AND b.id = e.beneficiary_id AND b.status <> 'active'
        RETURNING e.id, e.beneficiary_id
    ),
    history AS (
        INSERT INTO entitlement_events (id, entitlement_id, from_status, to_status, actor, detail)
        SELECT cbi_uuid7(), gone.id, 'pending', 'cancelled', CAST(:actor AS text),
               '{"reason": "beneficiary not active"}'
          FROM gone
    )
    INSERT INTO batch_exclusions (batch_id, beneficiary_id, reason)
    SELECT CAST(:batch AS uuid), gone.beneficiary_id, 'not_active' FROM gone
    ON CONFLICT (batch_id, beneficiary_id) DO UPDATE SET reason = 'not_active', entitlement_id = NULL
"""
_REPRICE = f"""
    UPDATE entitlements e SET amount_minor = {_AMOUNT}, updated_at = now()
      FROM beneficiaries b
     WHERE e.batch_id = :batch AND e.status = 'pending' AND b.id = e.beneficiary_id
       AND e.amount_minor <> {_AMOUNT}
"""  # noqa: S608 - constant fragments, values bound
_CANCEL_PENDING = """
    WITH gone AS (
        UPDATE entitlements SET status = 'cancelled', updated_at = now()
         WHERE batch_id = :batch AND status = 'pending'
        RETURNING id, amount_minor
    ),
    history AS (
        INSERT INTO entitlement_events (id, entitlement_id, from_status, to_status, actor, detail)
        SELECT cbi_uuid7(), gone.id, 'pending', 'cancelled', CAST(:actor AS text), CAST(:detail AS jsonb) FROM gone
    )
    SELECT count(*), COALESCE(sum(amount_minor), 0) FROM gone
"""


class BatchRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, batch: PaymentBatch) -> PaymentBatch:
        self.session.add(batch)
        await self.session.flush()
        await self.session.refresh(batch, ["created_at", "status", "updated_at"])
        return batch

    async def get(self, batch_id: uuid.UUID, *, for_update: bool = False) -> PaymentBatch | None:
        stmt = select(PaymentBatch).where(PaymentBatch.id == batch_id)
        if for_update:
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list(
        self, *, after_id: uuid.UUID | None, limit: int, programme_id: uuid.UUID | None, status: str | None
    ) -> Sequence[PaymentBatch]:
        stmt = select(PaymentBatch)
        if after_id is not None:
            stmt = stmt.where(PaymentBatch.id > after_id)
        if programme_id is not None:
            stmt = stmt.where(PaymentBatch.programme_id == programme_id)
        if status is not None:
            stmt = stmt.where(PaymentBatch.status == status)
        stmt = stmt.order_by(PaymentBatch.id).limit(limit + 1)
        return (await self.session.execute(stmt)).scalars().all()

    async def fill(self, batch: PaymentBatch, beneficiary_ids: Sequence[uuid.UUID] | None) -> None:
        """Create the batch's pending entitlements and record who was left out and why."""
        params = {**self._keys(batch), **_amount_params(batch)}
        if beneficiary_ids is None:
            inserted = await self.session.execute(text(_FILL_ENROLLED), params)
            eligible = _ELIGIBLE_ENROLLED
        else:
            listed = {**params, "ids": list(beneficiary_ids)}
            inserted = await self.session.execute(text(_FILL_LISTED).bindparams(bindparam("ids", type_=_UUIDS)), listed)
            eligible = """eligible AS (
                SELECT b.id FROM unnest(:ids) AS r(id) JOIN beneficiaries b ON b.id = r.id
                  JOIN enrolments en ON en.beneficiary_id = b.id AND en.programme_id = :programme
                 WHERE b.status = 'active')"""
            params = {**self._keys(batch), "ids": list(beneficiary_ids)}
        if cast(CursorResult[Any], inserted).rowcount >= ANALYZE_AFTER_ROWS:
            # A bulk load: until autovacuum gets to it (a minute or more), the planner would believe almost
            # no entitlement is pending and plan the issuance's per-chunk updates as scans of every pending
            # row, quadratic in the batch. ANALYZE counts this transaction's own new rows.
            await self.session.execute(text("ANALYZE entitlements"))
        stmt = text(f"WITH {eligible} {_ALREADY_PAID}")
        if beneficiary_ids is not None:
            stmt = stmt.bindparams(bindparam("ids", type_=_UUIDS))
        await self.session.execute(stmt, {k: v for k, v in params.items() if k in _ALREADY_PAID_KEYS})

    async def freeze(self, batch: PaymentBatch, actor: str) -> None:
        """At submit: drop beneficiaries no longer active and price the rest from current household sizes."""
        await self.session.execute(text(_CANCEL_INACTIVE), {"batch": batch.id, "actor": actor})
        if batch.amount_rule is not None:
            await self.session.execute(text(_REPRICE), {"batch": batch.id, **_amount_params(batch)})

    async def refresh_totals(self, batch: PaymentBatch) -> None:
        """Recount the pending entitlements and exclusions onto the batch row."""
        count, total = (
            await self.session.execute(
                text(
                    "SELECT count(*), COALESCE(sum(amount_minor), 0) FROM entitlements"
                    " WHERE batch_id = :batch AND status = 'pending'"
                ),
                {"batch": batch.id},
            )
        ).one()
        excluded = await self.session.scalar(
            select(func.count()).select_from(BatchExclusion).where(BatchExclusion.batch_id == batch.id)
        )
        batch.beneficiary_count, batch.total_minor, batch.excluded_count = int(count), int(total), int(excluded or 0)

    async def cancel_pending(self, batch_id: uuid.UUID, actor: str, reason: str) -> tuple[int, int]:
        """Cancel every still-pending entitlement; returns (how many, their total)."""
        detail = f'{{"reason": "{reason}"}}'
        count, total = (
            await self.session.execute(text(_CANCEL_PENDING), {"batch": batch_id, "actor": actor, "detail": detail})
        ).one()
        return int(count), int(total)

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

    async def follow_up_beneficiaries(self, batch_id: uuid.UUID) -> builtins.list[uuid.UUID]:
        stmt = text(
            "SELECT beneficiary_id FROM entitlements WHERE batch_id = :batch AND status IN ('failed', 'expired')"
            " ORDER BY beneficiary_id"
        )
        return list((await self.session.execute(stmt, {"batch": batch_id})).scalars())

    @staticmethod
    def _keys(batch: PaymentBatch) -> dict[str, Any]:
        return {
            "batch": batch.id,
            "programme": batch.programme_id,
            "cycle": batch.cycle,
            "currency": batch.currency,
        }


_ALREADY_PAID_KEYS = {"batch", "programme", "cycle", "ids"}


def _amount_params(batch: PaymentBatch) -> dict[str, int | None]:
    rule = batch.amount_rule or {}
    return {
        "flat": batch.amount_minor,
        "base": rule.get("base"),
        "per_member": rule.get("per_member"),
        "cap": rule.get("max"),
    }
