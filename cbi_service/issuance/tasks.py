"""Job handlers of issuance: the lanes that send a released batch, and the sweep that keeps them going.

Loading this module (the worker's `HANDLER_MODULES`) also hands `start_issuance` to `batches`, which calls
it in the release transaction.
"""

from __future__ import annotations

import uuid

from cbi_service.batches.service import when_released
from cbi_service.issuance import service
from cbi_service.jobs.service import JobContext, job_handler

SWEEP_EVERY_SECONDS = 2

when_released(service.start_issuance)


@job_handler(service.ISSUE_JOB)
async def issue_batch(ctx: JobContext) -> None:
    await service.run_lane(
        ctx.session_factory, ctx.state.settings, uuid.UUID(ctx.payload["batch_id"]), int(ctx.payload["lane"])
    )


@job_handler(service.SWEEP_JOB, every_seconds=SWEEP_EVERY_SECONDS)
async def sweep(ctx: JobContext) -> None:
    await service.sweep(ctx.session_factory, ctx.state.settings)
