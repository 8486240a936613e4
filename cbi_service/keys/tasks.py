"""The rotation's job: `service.run_rotation`, handing the job back at a stop between batches."""

from __future__ import annotations

import uuid

from cbi_service.jobs.service import JobContext, job_handler
from cbi_service.keys.service import ROTATE_JOB, run_rotation


@job_handler(ROTATE_JOB)
async def rotate(ctx: JobContext) -> None:
    await run_rotation(ctx.session_factory, uuid.UUID(ctx.payload["rotation_id"]), ctx.checkpoint)
