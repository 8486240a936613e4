"""The background half of a reconciliation: match lines chunk by chunk, then close the period.

Each chunk is one transaction that inserts its findings and advances the counts and `lines_done`
together, with the reconciliation row locked; a worker that dies mid-way leaves a consistent state and the
retried job resumes after the last committed line (findings are unique per line, so nothing is counted
twice); a worker asked to stop hands the job back between chunks. The last step lists the period's
disbursements no line named and completes the report.
"""

from __future__ import annotations

import uuid
from collections import Counter

from sqlalchemy import func

from cbi_service.audit.service import record_audit
from cbi_service.jobs.service import JobContext, JobInterrupted, job_handler
from cbi_service.kit.timeutil import day_bounds
from cbi_service.reconciliation.models import Reconciliation
from cbi_service.reconciliation.repository import ReconciliationRepository
from cbi_service.reconciliation.service import JOB_ATTEMPTS, JOB_KIND

CHUNK_LINES = 10_000


def _count(reconciliation: Reconciliation, found: Counter[str]) -> None:
    for category, number in found.items():
        setattr(reconciliation, category, getattr(reconciliation, category) + number)


async def _step(ctx: JobContext, reconciliation_id: uuid.UUID) -> bool:
    """Reconcile the next chunk, or finish; False once there is nothing left to do."""
    async with ctx.session_factory.begin() as session:
        repo = ReconciliationRepository(session)
        reconciliation = await repo.get(reconciliation_id, for_update=True)
        if reconciliation is None or reconciliation.status != "running":
            return False
        if reconciliation.lines_done < reconciliation.lines_total:
            found = await repo.match_chunk(reconciliation, CHUNK_LINES)
            if not found:
                raise RuntimeError(f"{reconciliation.lines_done} of {reconciliation.lines_total} lines, none left")
            _count(reconciliation, found)
            reconciliation.lines_done += sum(found.values())
            return True
        start, end = day_bounds(reconciliation.period_start, reconciliation.period_end)
        reconciliation.missing_in_statement += await repo.insert_unmatched(reconciliation, start, end)
        reconciliation.status = "completed"
        reconciliation.finished_at = func.now()
        await session.flush()
        await record_audit(
            session,
            None,
            "reconciliation.completed",
            "reconciliation",
            reconciliation.id,
            {"status": "running"},
            {
                "status": "completed",
                "matched": reconciliation.matched,
                "amount_mismatch": reconciliation.amount_mismatch,
                "missing_in_ledger": reconciliation.missing_in_ledger,
                "missing_in_statement": reconciliation.missing_in_statement,
            },
        )
        return False


async def _fail(ctx: JobContext, reconciliation_id: uuid.UUID, error: Exception) -> None:
    async with ctx.session_factory.begin() as session:
        reconciliation = await ReconciliationRepository(session).get(reconciliation_id, for_update=True)
        if reconciliation is None or reconciliation.status != "running":
            return
        reconciliation.status = "failed"
        reconciliation.error = f"reconciliation stopped after {ctx.attempt} attempts: {type(error).__name__}"
        reconciliation.finished_at = func.now()
        await session.flush()
        await record_audit(
            session, None, "reconciliation.failed", "reconciliation", reconciliation.id, {"status": "running"}, None
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
