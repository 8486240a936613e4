"""Dedup's jobs: the sweep (`service.run_sweep` chunk by chunk, handing the job back at a stop between chunks)
and the periodic re-check of people an external registry could not answer for."""

from __future__ import annotations

import os
import uuid

import structlog

from cbi_service.dedup.registries import recheck_registries, registries_for
from cbi_service.dedup.service import SWEEP_ATTEMPTS, SWEEP_JOB, SweepRun, fail_sweep, run_sweep
from cbi_service.dedup.settings import get_dedup_settings
from cbi_service.jobs.service import JobContext, JobInterrupted, job_handler

log = structlog.get_logger(__name__)

RECHECK_JOB = "dedup.registry_recheck"
#: How often the people waiting for a registry that could not answer are asked about again: a registry back
#: up is noticed within this (its circuit breaker, if open, lets the first call through after its own wait).
RECHECK_EVERY_SECONDS = 60


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


@job_handler(RECHECK_JOB, every_seconds=RECHECK_EVERY_SECONDS)
async def registry_recheck(ctx: JobContext) -> None:
    registries = registries_for(ctx.state.settings.registries)
    if not registries:
        return
    done = await recheck_registries(ctx.session_factory, registries, checkpoint=ctx.checkpoint)
    if done.asked:
        log.info(
            "registry_recheck",
            asked=done.asked,
            answered=done.answered,
            flagged=done.flagged,
            referred=done.referred,
            unavailable=done.unavailable,
        )
