"""The sweep's job: `service.run_sweep` chunk by chunk, handing the job back at a stop between chunks."""

from __future__ import annotations

import os
import uuid

from cbi_service.dedup.service import SWEEP_ATTEMPTS, SWEEP_JOB, SweepRun, fail_sweep, run_sweep
from cbi_service.dedup.settings import get_dedup_settings
from cbi_service.jobs.service import JobContext, JobInterrupted, job_handler


@job_handler(SWEEP_JOB)
async def sweep(ctx: JobContext) -> None:
    sweep_id = uuid.UUID(ctx.payload["sweep_id"])
    settings = get_dedup_settings()
    run = SweepRun(
        workers=settings.sweep_workers or os.cpu_count() or 1,
        spark_master=settings.spark_master,
        checkpoint=ctx.checkpoint,
    )
    try:
        await run_sweep(ctx.session_factory, sweep_id, run)
    except JobInterrupted:
        raise
    except Exception as exc:
        # Retried from the first chunk not done; after the last attempt the sweep reports failure, and what
        # its committed chunks found (pairs, adjudications) stands.
        if ctx.attempt >= SWEEP_ATTEMPTS:
            async with ctx.session_factory.begin() as session:
                await fail_sweep(session, sweep_id, f"stopped after repeated failures ({type(exc).__name__})")
        raise
