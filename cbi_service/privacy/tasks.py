"""Retention (§13): with CBI_PERSONAL_DATA_RETENTION_DAYS set, erase the data of people inactive that long."""

from __future__ import annotations

from cbi_service.jobs.service import JobContext, job_handler
from cbi_service.kit.settings import get_settings
from cbi_service.privacy.service import RETENTION_BATCH, erase_expired

RETENTION_JOB = "privacy.retention"


@job_handler(RETENTION_JOB, every_seconds=3600)
async def retention(ctx: JobContext) -> None:
    days = getattr(ctx.state, "settings", get_settings()).personal_data_retention_days
    if days is None:
        return
    while True:
        async with ctx.session_factory.begin() as session:
            erased = await erase_expired(session, days)
        ctx.checkpoint()
        if erased < RETENTION_BATCH:
            return
