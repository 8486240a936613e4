from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert

from cbi_service.jobs.models import Job
from cbi_service.kit.repository import Repository


class JobRepository(Repository[Job]):
    model = Job

    async def insert(self, values: dict[str, Any]) -> uuid.UUID | None:
        """Insert a job; with a dedupe key, a live job with that key makes this a no-op (returns None)."""
        stmt = insert(Job).values(**values)
        if values.get("dedupe_key"):
            stmt = stmt.on_conflict_do_nothing(
                index_elements=["dedupe_key"],
                index_where=text("dedupe_key IS NOT NULL AND status IN ('queued','running')"),
            )
        return (await self.session.execute(stmt.returning(Job.id))).scalar_one_or_none()

    async def claim(self, worker_id: str, kinds: Sequence[str], limit: int, lease_seconds: float) -> Sequence[Job]:
        """Lease ready jobs (or jobs whose lease lapsed because a worker died) without blocking other workers."""
        ready = (
            select(Job.id)
            .where(
                Job.kind.in_(kinds),
                Job.run_at <= func.now(),
                or_(
                    Job.status == "queued",
                    (Job.status == "running") & (Job.locked_until < func.now()) & (Job.attempts < Job.max_attempts),
                ),
            )
            .order_by(Job.run_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        stmt = (
            update(Job)
            .where(Job.id.in_(ready.scalar_subquery()))
            .values(
                status="running",
                locked_by=worker_id,
                locked_until=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, lease_seconds),
                attempts=Job.attempts + 1,
            )
            .returning(Job)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def extend_lease(self, job_id: uuid.UUID, worker_id: str, lease_seconds: float) -> bool:
        stmt = (
            update(Job)
            .where(Job.id == job_id, Job.locked_by == worker_id, Job.status == "running")
            .values(locked_until=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, lease_seconds))
            .returning(Job.id)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none() is not None

    async def finish(self, job_id: uuid.UUID, worker_id: str) -> None:
        await self.session.execute(
            update(Job)
            .where(Job.id == job_id, Job.locked_by == worker_id)
            .values(status="done", locked_until=None, finished_at=func.now())
        )

    async def retry_later(self, job_id: uuid.UUID, worker_id: str, delay_seconds: float, error: str) -> None:
        await self.session.execute(
            update(Job)
            .where(Job.id == job_id, Job.locked_by == worker_id)
            .values(
                status="queued",
                locked_by=None,
                locked_until=None,
                last_error=error,
                run_at=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, delay_seconds),
            )
        )

    async def hand_back(self, job_id: uuid.UUID, worker_id: str) -> None:
        """Release a job its worker stopped at a safe point: ready at once, the attempt not counted."""
        await self.session.execute(
            update(Job)
            .where(Job.id == job_id, Job.locked_by == worker_id)
            .values(status="queued", locked_by=None, locked_until=None, run_at=func.now(), attempts=Job.attempts - 1)
        )

    async def fail(self, job_id: uuid.UUID, worker_id: str, error: str) -> None:
        await self.session.execute(
            update(Job)
            .where(Job.id == job_id, Job.locked_by == worker_id)
            .values(status="failed", locked_until=None, last_error=error, finished_at=func.now())
        )

    async def fail_abandoned(self) -> None:
        """Jobs whose lease lapsed on their last allowed attempt (their worker kept dying): give up on them."""
        await self.session.execute(
            update(Job)
            .where(Job.status == "running", Job.locked_until < func.now(), Job.attempts >= Job.max_attempts)
            .values(
                status="failed",
                locked_until=None,
                last_error="lease lapsed on the last attempt",
                finished_at=func.now(),
            )
        )

    async def after_seconds(self, seconds: float) -> datetime:
        """The database's now plus `seconds`: a periodic job's next run, on the clock leases are kept by."""
        stmt = select(func.now() + func.make_interval(0, 0, 0, 0, 0, 0, seconds))
        return (await self.session.execute(stmt)).scalar_one()

    async def recent(self, *, status: str | None, kind: str | None, limit: int) -> Sequence[Job]:
        """The newest jobs first, for operators looking at the queue."""
        stmt = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
        if status is not None:
            stmt = stmt.where(Job.status == status)
        if kind is not None:
            stmt = stmt.where(Job.kind == kind)
        return (await self.session.execute(stmt)).scalars().all()

    async def failed_ids(self, *, kind: str | None) -> Sequence[uuid.UUID]:
        stmt = select(Job.id).where(Job.status == "failed").order_by(Job.created_at, Job.id)
        if kind is not None:
            stmt = stmt.where(Job.kind == kind)
        return (await self.session.execute(stmt)).scalars().all()

    async def requeue_failed(self, job_id: uuid.UUID) -> Job | None:
        """A failed job ready again at once, its attempts counted from zero; None if it is not failed.

        The unique index on live dedupe keys refuses this (IntegrityError) while another live job holds the key.
        """
        stmt = (
            update(Job)
            .where(Job.id == job_id, Job.status == "failed")
            .values(status="queued", attempts=0, run_at=func.now(), locked_by=None, locked_until=None, finished_at=None)
            .returning(Job)
            .execution_options(populate_existing=True)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def purge_finished(self, older_than_hours: int) -> int:
        stmt = text("DELETE FROM jobs WHERE status = 'done' AND finished_at < now() - make_interval(hours => :h)")
        result = await self.session.execute(stmt, {"h": older_than_hours})
        return int(getattr(result, "rowcount", 0) or 0)
