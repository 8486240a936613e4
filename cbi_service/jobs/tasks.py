"""Housekeeping the worker runs on a schedule: expired idempotency keys and old finished jobs."""

from __future__ import annotations

from cbi_service.jobs.repository import JobRepository
from cbi_service.jobs.service import JobContext, job_handler
from cbi_service.kit.idempotency import IdempotencyRepository

FINISHED_JOB_RETENTION_HOURS = 24 * 7


@job_handler("maintenance.purge", every_seconds=3600)
async def purge(ctx: JobContext) -> None:
    async with ctx.session_factory.begin() as session:
        await IdempotencyRepository(session).purge_expired()
        await JobRepository(session).purge_finished(FINISHED_JOB_RETENTION_HOURS)
