"""The background half of a reconciliation: match lines chunk by chunk, then close the period.

Each chunk is one transaction that inserts its findings and advances the counts and `lines_done`
together, with the reconciliation row locked; a worker that dies mid-way leaves a consistent state and the
retried job resumes after the last committed line (findings are unique per line, so nothing is counted
twice); a worker asked to stop hands the job back between chunks. The last step lists the period's
disbursements no line named and completes the report.
"""

from __future__ import annotations

import uuid

from cbi_service.jobs.service import JobContext, JobInterrupted, job_handler
from cbi_service.reconciliation import service
from cbi_service.reconciliation.service import JOB_ATTEMPTS, JOB_KIND


async def _step(ctx: JobContext, reconciliation_id: uuid.UUID) -> bool:
    """One committed unit of work: the next chunk, or the period's close; False once nothing is left."""
    async with ctx.session_factory.begin() as session:
        return await service.reconcile_next_chunk(session, reconciliation_id)


async def _fail(ctx: JobContext, reconciliation_id: uuid.UUID, error: Exception) -> None:
    async with ctx.session_factory.begin() as session:
        await service.fail_reconciliation(
            session, reconciliation_id, f"reconciliation stopped after {ctx.attempt} attempts: {type(error).__name__}"
        )


@job_handler(JOB_KIND)
async def run_reconciliation(ctx: JobContext) -> None:
    reconciliation_id = uuid.UUID(ctx.payload["reconciliation_id"])
    try:
        while await _step(ctx, reconciliation_id):
            ctx.checkpoint()
    except JobInterrupted:
        raise
    except Exception as exc:
        if ctx.attempt >= JOB_ATTEMPTS:
            await _fail(ctx, reconciliation_id, exc)
        raise
