"""Job handlers of entitlements: vouchers expire by themselves once their validity has run out."""

from __future__ import annotations

from cbi_service.entitlements import service
from cbi_service.jobs.service import JobContext, job_handler

EXPIRY_EVERY_SECONDS = 300.0


@job_handler("webhooks.expire_vouchers", every_seconds=EXPIRY_EVERY_SECONDS)
async def expire_vouchers(ctx: JobContext) -> None:
    """Expiry is also a provider event; whichever comes first wins and the other is a no-op.

    (The job kind keeps its first name: it is stored in the `jobs` table.)"""
    while True:
        found, _ = await service.expire_due_vouchers(ctx.session_factory)
        if found < service.EXPIRY_CHUNK:
            return
