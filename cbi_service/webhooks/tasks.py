"""Job handlers of the webhook domain: apply the inbox, retry unmatched events."""

from __future__ import annotations

from cbi_service.jobs.service import JobContext, job_handler
from cbi_service.webhooks import service
from cbi_service.webhooks.repository import WebhookRepository

APPLY_EVERY_SECONDS = 1.0
APPLY_MAX_SECONDS = 30.0
REMATCH_EVERY_SECONDS = 15.0


@job_handler("webhooks.apply", every_seconds=APPLY_EVERY_SECONDS)
async def apply_inbox(ctx: JobContext) -> None:
    """Stored events are applied within about a second; a long backlog is worked off in 30-second runs."""
    await service.drain(ctx.session_factory, max_seconds=APPLY_MAX_SECONDS)


@job_handler("webhooks.rematch", every_seconds=REMATCH_EVERY_SECONDS)
async def rematch_unmatched(ctx: JobContext) -> None:
    async with ctx.session_factory.begin() as session:
        await WebhookRepository(session).requeue_matched()
