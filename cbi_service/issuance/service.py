"""The issuance worker: sends a released batch's entitlements to its provider, exactly once.

The outbox is the entitlements table itself: a `pending` entitlement of a `processing` batch is work to do.
A lane job claims a chunk with `FOR UPDATE SKIP LOCKED`, sends it to the provider and, in the same
transaction, records the provider's acceptance (`submitted` + provider_ref). Entitlements whose
beneficiary is no longer active are withheld from the chunk and cancelled in that same transaction
(`withhold_from_inactive`). So
- several lanes, in one worker or many, never hold the same entitlement: none is sent twice at once;
- a crash between the provider's acceptance and our commit leaves the chunk `pending` and unlocked; it
  is sent again under the same idempotency key (the entitlement id) and the provider, which deduplicates
  by key, answers with the first acceptance instead of paying again;
- transient faults (timeouts, connection errors, 5xx, 429) are retried with exponential backoff and
  jitter, a whole chunk at a time and never holding row locks while waiting; a 4xx refusal is final and
  fails the chunk's entitlements (their reservation goes back to the budget; they can be retried).

A batch has at most `LANES` lanes alive at once, whichever workers run them: lane n holds the
session-level advisory lock (batch, n) on a connection of its own for as long as it runs. A worker that
dies loses its connection and with it the lock, so the periodic sweep, which starts a lane job for every
free lane of a processing batch with pending entitlements, resumes its work within seconds instead of
waiting for the dead worker's job lease to lapse. The sweep also completes batches whose last entitlements
were settled concurrently, and asks the provider about entitlements that stayed `submitted` longer than
`provider_status_poll_seconds` — the safety net for provider events that never arrived.
"""

from __future__ import annotations

import asyncio
import uuid

import structlog
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_random_exponential

from adapters.providers.base import PermanentProviderError, ProviderAdapter, StatusOutcome, TransientProviderError
from cbi_service.audit.service import record_audit
from cbi_service.batches.models import PaymentBatch
from cbi_service.disbursement.providers import get_provider
from cbi_service.entitlements.models import Entitlement
from cbi_service.entitlements.service import (
    Issued,
    complete_done_batches,
    instruction_of,
    mark_failed,
    mark_issued_many,
    mark_submitted,
    withhold_from_inactive,
)
from cbi_service.jobs.service import JobContext, enqueue, job_handler
from cbi_service.kit.errors import Conflict
from cbi_service.kit.settings import Settings
from cbi_service.programmes.models import Programme

log = structlog.get_logger(__name__)

ISSUE_JOB = "disbursement.issue"
SWEEP_JOB = "disbursement.sweep"
LANES = 2
"""Lanes per batch; each sends chunk after chunk. Two keep a provider busy and leave worker slots free."""
RETRY_BUDGET_SECONDS = 120.0
"""How long one chunk keeps retrying transient faults before the job itself backs off."""
STATUS_POLL_LIMIT = 5000
STATUS_POLL_CONCURRENCY = 32


async def start_issuance(session: AsyncSession, batch_id: uuid.UUID) -> None:
    """Called in the release transaction: the lanes exist if and only if the release commits."""
    for lane in range(LANES):
        await enqueue(session, ISSUE_JOB, {"batch_id": str(batch_id), "lane": lane})


_LANE_LOCK = text("SELECT pg_try_advisory_lock(hashtext(:batch), :lane)")
_LANE_UNLOCK = text("SELECT pg_advisory_unlock(hashtext(:batch), :lane)")


@job_handler(ISSUE_JOB)
async def issue_batch(ctx: JobContext) -> None:
    """One lane: nothing to do if another live lane holds this lane's lock."""
    batch_id = uuid.UUID(ctx.payload["batch_id"])
    lane = {"batch": str(batch_id), "lane": int(ctx.payload["lane"])}
    engine: AsyncEngine = ctx.session_factory.kw["bind"]
    async with engine.connect() as connection:
        holder = await connection.execution_options(isolation_level="AUTOCOMMIT")
        if not await holder.scalar(_LANE_LOCK, lane):
            return
        try:
            await _run_lane(ctx, batch_id)
        finally:
            await holder.execute(_LANE_UNLOCK, lane)


async def _run_lane(ctx: JobContext, batch_id: uuid.UUID) -> None:
    async with ctx.session_factory() as session:
        programme = await session.scalar(
            select(Programme)
            .join(PaymentBatch, PaymentBatch.programme_id == Programme.id)
            .where(PaymentBatch.id == batch_id, PaymentBatch.status == "processing")
        )
    if programme is None:
        return
    provider = get_provider(ctx.state.settings, programme.provider)

    while True:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TransientProviderError),
            wait=wait_random_exponential(multiplier=0.25, max=4),
            stop=stop_after_delay(RETRY_BUDGET_SECONDS),
            reraise=True,
        )
        sent = 0
        async for attempt in retrying:
            with attempt:
                sent = await send_chunk(ctx.session_factory, provider, programme, batch_id)
        if sent == 0:
            return


async def send_chunk(
    session_factory: async_sessionmaker[AsyncSession],
    provider: ProviderAdapter,
    programme: Programme,
    batch_id: uuid.UUID,
) -> int:
    """Claim, send and record one chunk in one transaction; returns how many entitlements it held."""
    source = f"worker:{provider.name}"
    async with session_factory.begin() as session:
        claim = (
            select(Entitlement)
            .where(Entitlement.batch_id == batch_id, Entitlement.status == "pending")
            .order_by(Entitlement.id)
            .limit(provider.chunk_size)
            .with_for_update(skip_locked=True)
        )
        claimed = list((await session.execute(claim)).scalars())
        if not claimed:
            return 0
        chunk = await withhold_from_inactive(session, provider, claimed, source=source)
        if not chunk:
            return len(claimed)
        try:
            outcomes = await provider.issue([instruction_of(e, programme) for e in chunk])
        except PermanentProviderError as exc:
            log.error("provider_refused_chunk", provider=provider.name, status=exc.status_code, size=len(chunk))
            reason = f"provider refused the request: {exc.error_code or exc.status_code}"
            for entitlement in chunk:
                await mark_failed(session, entitlement.id, reason, False, source=source)
            return len(claimed)
        accepted = await mark_submitted(
            session, [(o.entitlement_id, o.provider_ref) for o in outcomes if o.accepted], source=source
        )
        for outcome in outcomes:
            if not outcome.accepted:
                reason = outcome.error_message or outcome.error_code or "declined"
                await mark_failed(
                    session,
                    outcome.entitlement_id,
                    reason,
                    outcome.retryable,
                    provider_ref=outcome.provider_ref,
                    source=source,
                )
        await record_audit(
            session,
            None,
            "payment_batch.chunk_sent",
            "payment_batch",
            batch_id,
            None,
            {"provider": provider.name, "sent": len(chunk), "accepted": len(accepted)},
        )
        return len(claimed)


_STALLED = text(
    """
    SELECT b.id::text, lane FROM payment_batches b CROSS JOIN generate_series(0, :lanes - 1) AS lane
     WHERE b.status = 'processing'
       AND EXISTS (SELECT 1 FROM entitlements e WHERE e.batch_id = b.id AND e.status = 'pending')
       AND NOT EXISTS (
            SELECT 1 FROM jobs j
             WHERE j.kind = :kind AND j.status = 'queued'
               AND j.payload->>'batch_id' = b.id::text AND (j.payload->>'lane')::int = lane)
       AND pg_try_advisory_xact_lock(hashtext(b.id::text), lane)
    """
)
_OVERDUE = text(
    """
    WITH due AS (
        SELECT id FROM entitlements
         WHERE status = 'submitted'
           AND COALESCE(checked_at, submitted_at) < now() - make_interval(secs => :after)
         ORDER BY submitted_at LIMIT :limit
           FOR UPDATE SKIP LOCKED
    )
    UPDATE entitlements e SET checked_at = now()
      FROM due, programmes p
     WHERE e.id = due.id AND p.id = e.programme_id
    RETURNING e.id, p.provider
    """
)


@job_handler(SWEEP_JOB, every_seconds=2)
async def sweep(ctx: JobContext) -> None:
    async with ctx.session_factory.begin() as session:
        for batch_id, lane in (await session.execute(_STALLED, {"kind": ISSUE_JOB, "lanes": LANES})).all():
            log.info("issuance_lane_started", batch_id=batch_id, lane=lane)
            await enqueue(session, ISSUE_JOB, {"batch_id": batch_id, "lane": lane})
        await complete_done_batches(session)
    await poll_overdue(ctx.session_factory, ctx.state.settings)


async def poll_overdue(session_factory: async_sessionmaker[AsyncSession], settings: Settings) -> int:
    """Ask the provider about entitlements submitted long ago with no event, and apply its answer.

    Each is asked at most once per poll period (`checked_at`), so a slow provider is not flooded.
    """
    params = {"after": settings.provider_status_poll_seconds, "limit": STATUS_POLL_LIMIT}
    async with session_factory.begin() as session:
        overdue = (await session.execute(_OVERDUE, params)).all()
    if not overdue:
        return 0
    adapters: dict[str, ProviderAdapter] = {}
    for provider_name in {row.provider for row in overdue}:
        try:
            adapters[provider_name] = get_provider(settings, provider_name)
        except Conflict:
            # Its entitlements wait for the provider to be configured again; the others are asked.
            log.warning("status_poll_provider_not_configured", provider=provider_name)
    limiter = asyncio.Semaphore(STATUS_POLL_CONCURRENCY)

    async def ask(entitlement_id: uuid.UUID, provider_name: str) -> tuple[str, StatusOutcome | None]:
        async with limiter:
            try:
                return provider_name, await adapters[provider_name].status(entitlement_id)
            except TransientProviderError:
                return provider_name, None

    answers = await asyncio.gather(*(ask(row.id, row.provider) for row in overdue if row.provider in adapters))
    issued: dict[str, list[Issued]] = {}
    failed: list[tuple[str, StatusOutcome]] = []
    for provider_name, answer in answers:
        if answer is None:
            continue
        if answer.status in ("issued", "redeemed", "expired") and answer.provider_ref:
            issued.setdefault(provider_name, []).append(
                Issued(
                    answer.entitlement_id,
                    answer.provider_ref,
                    card_token=answer.card_token,
                    card_last4=answer.card_last4,
                    voucher_code=answer.voucher_code,
                    expires_at=answer.expires_at,
                )
            )
        elif answer.status == "failed":
            failed.append((provider_name, answer))
    applied = 0
    async with session_factory.begin() as session:
        for provider_name, confirmations in issued.items():
            results = await mark_issued_many(session, confirmations, source=f"status:{provider_name}")
            applied += sum(result.applied for result in results.values())
        for provider_name, answer in failed:
            result = await mark_failed(
                session,
                answer.entitlement_id,
                answer.reason or "failed at the provider",
                bool(answer.retryable),
                provider_ref=answer.provider_ref,
                source=f"status:{provider_name}",
            )
            applied += result.applied
    return applied
