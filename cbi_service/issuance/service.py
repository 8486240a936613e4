"""The issuance worker: sends a released batch's entitlements to its provider, exactly once.

The outbox is the entitlements table itself: a `pending` entitlement of a `processing` batch is work to do.
A lane job claims a chunk with `FOR UPDATE SKIP LOCKED`, sends it to the provider and, in the same
transaction, records the provider's acceptance (`submitted` + provider_ref), or, for a provider that issues
in its answer (the built-in `paper_voucher`), the issue itself with its disbursement. Entitlements whose
beneficiary is no longer active are withheld from the chunk and cancelled in that same transaction
(`withhold_from_inactive`). So
- several lanes, in one worker or many, never hold the same entitlement: none is sent twice at once;
- a crash between the provider's acceptance and our commit leaves the chunk `pending` and unlocked; it
  is sent again under the same idempotency key (the entitlement id) and the provider, which deduplicates
  by key, answers with the first acceptance instead of paying again;
- transient faults (timeouts, connection errors, 5xx, 429) are retried with exponential backoff and
  jitter, a whole chunk at a time and never holding row locks while waiting; a 4xx refusal is final and
  fails the chunk's entitlements (their reservation goes back to the budget; they can be retried);
- a chunk of vouchers that drew a voucher code already taken is rolled back and issued again, with new
  codes.

A batch has at most `LANES` lanes alive at once, whichever workers run them: lane n holds the
session-level advisory lock (batch, n) on a connection of its own for as long as it runs. A worker that
dies loses its connection and with it the lock, so the periodic sweep, which starts a lane job for every
free lane of a processing batch with pending entitlements, resumes its work within seconds instead of
waiting for the dead worker's job lease to lapse. The sweep also completes batches whose last entitlements
were settled concurrently, and asks the provider about entitlements that stayed `submitted` longer than
`provider_status_poll_seconds` — the safety net for provider events that never arrived. A provider that
answers by signed callback messages (G2P Connect) is asked in bulk (`disburse/txn/status`), its answers
coming back through the webhook inbox.

`retry_entitlement` and `cancel_entitlement` are the API's operations on one entitlement (roles: finance or
programme_officer); both talk to the programme's provider while the entitlements state machine holds the
row lock, so the provider's answer and our state commit together. The job handlers are in `tasks`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_random_exponential

from adapters.providers.base import (
    CallbackProvider,
    IssueInstruction,
    IssueOutcome,
    PermanentProviderError,
    ProviderAdapter,
    ProviderError,
    StatusOutcome,
    TransientProviderError,
)
from cbi_service.audit.service import record_audit
from cbi_service.auth.roles import Principal
from cbi_service.batches import service as batches
from cbi_service.batches.models import RELEASED_STATUSES
from cbi_service.beneficiaries.repository import BeneficiaryRepository
from cbi_service.entitlements import service as entitlements
from cbi_service.entitlements.models import Entitlement
from cbi_service.entitlements.schemas import EntitlementOut
from cbi_service.issuance.metrics import CHUNKS, INSTRUCTIONS, provider_call
from cbi_service.issuance.providers import get_provider
from cbi_service.issuance.repository import IssuanceRepository, try_lock_lane, unlock_lane
from cbi_service.jobs.service import enqueue
from cbi_service.kit.errors import AppError, Conflict
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


class ProviderUnavailable(AppError):
    status, title, slug = 503, "Service Unavailable", "provider-unavailable"


class ProviderRefused(AppError):
    status, title, slug = 502, "Bad Gateway", "provider-refused"


async def start_issuance(session: AsyncSession, batch_id: uuid.UUID) -> None:
    """Called in the release transaction: the lanes exist if and only if the release commits."""
    for lane in range(LANES):
        await enqueue(session, ISSUE_JOB, {"batch_id": str(batch_id), "lane": lane})


async def run_lane(
    session_factory: async_sessionmaker[AsyncSession], settings: Settings, batch_id: uuid.UUID, lane: int
) -> None:
    """One lane: nothing to do if another live lane holds this lane's lock."""
    engine: AsyncEngine = session_factory.kw["bind"]
    async with engine.connect() as connection:
        holder = await connection.execution_options(isolation_level="AUTOCOMMIT")
        if not await try_lock_lane(holder, batch_id, lane):
            return
        try:
            await _send_all(session_factory, settings, batch_id)
        finally:
            await unlock_lane(holder, batch_id, lane)


async def _send_all(session_factory: async_sessionmaker[AsyncSession], settings: Settings, batch_id: uuid.UUID) -> None:
    async with session_factory() as session:
        programme = await IssuanceRepository(session).programme_of_processing(batch_id)
    if programme is None:
        return
    provider = get_provider(settings, programme.provider)

    while True:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type((TransientProviderError, entitlements.VoucherCodeTaken)),
            wait=wait_random_exponential(multiplier=0.25, max=4),
            stop=stop_after_delay(RETRY_BUDGET_SECONDS),
            reraise=True,
        )
        sent = 0
        async for attempt in retrying:
            with attempt:
                sent = await send_chunk(session_factory, provider, programme, batch_id)
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
        claimed = await entitlements.claim_pending(session, batch_id, provider.chunk_size)
        if not claimed:
            return 0
        chunk = await withhold_from_inactive(session, provider, claimed, source=source)
        if not chunk:
            return len(claimed)
        try:
            with provider_call(provider.name, "issue"):
                outcomes = await provider.issue([instruction_of(e, programme) for e in chunk])
        except PermanentProviderError as exc:
            log.error("provider_refused_chunk", provider=provider.name, status=exc.status_code, size=len(chunk))
            CHUNKS.labels(provider.name, "refused").inc()
            INSTRUCTIONS.labels(provider.name, "refused").inc(len(chunk))
            reason = f"provider refused the request: {exc.error_code or exc.status_code}"
            for entitlement in chunk:
                await entitlements.mark_failed(session, entitlement.id, reason, False, source=source)
            return len(claimed)
        CHUNKS.labels(provider.name, "answered").inc()
        accepted_count = sum(o.accepted for o in outcomes)
        INSTRUCTIONS.labels(provider.name, "accepted").inc(accepted_count)
        INSTRUCTIONS.labels(provider.name, "declined").inc(len(outcomes) - accepted_count)
        accepted = await entitlements.mark_submitted(
            session,
            [(o.entitlement_id, o.provider_ref) for o in outcomes if o.accepted and o.issued is None],
            source=source,
        )
        issued_now = [issued_of(o) for o in outcomes if o.accepted and o.issued is not None]
        issued = await entitlements.mark_issued_many(session, issued_now, source=source) if issued_now else {}
        applied = sum(transition.applied for transition in issued.values())
        for outcome in outcomes:
            if not outcome.accepted:
                reason = outcome.error_message or outcome.error_code or "declined"
                await entitlements.mark_failed(
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
            {"provider": provider.name, "sent": len(chunk), "accepted": len(accepted) + applied, "issued": applied},
        )
        return len(claimed)


def issued_of(outcome: IssueOutcome) -> entitlements.Issued:
    """An outcome the provider issued in its answer (with its reference), as the state machine's confirmation."""
    assert outcome.issued is not None
    assert outcome.provider_ref is not None
    return entitlements.Issued(
        outcome.entitlement_id,
        outcome.provider_ref,
        voucher_code=outcome.issued.voucher_code,
        voucher_token=outcome.issued.voucher_token,
        expires_at=outcome.issued.expires_at,
    )


def instruction_of(entitlement: Entitlement, programme: Programme) -> IssueInstruction:
    """What the provider gets: amounts and pseudonymous references only, never a name or document."""
    return IssueInstruction(
        entitlement_id=entitlement.id,
        beneficiary_ref=str(entitlement.beneficiary_id),
        amount_minor=entitlement.amount_minor,
        currency=entitlement.currency,
        programme_ref=str(programme.id),
        voucher_validity_days=programme.voucher_validity_days,
    )


async def withhold_from_inactive(
    session: AsyncSession, provider: ProviderAdapter, chunk: Sequence[Entitlement], *, source: str
) -> list[Entitlement]:
    """The part of a claimed chunk that may be sent: only active beneficiaries are paid (§4).

    Called with the chunk's rows locked, in the transaction that will record the provider's acceptance. The
    beneficiaries are read `FOR SHARE`, so a deactivation either committed before (and is seen here) or
    waits until this transaction has recorded what was sent. The others are cancelled at the provider first
    (an earlier send whose answer was lost may have reached it) and then here: reservation released, batch
    exclusion `not_active` naming the entitlement. One the provider can no longer cancel has moved money
    already and is sent with the rest, so that its acceptance is recorded; one whose cancellation the
    provider refused outright fails, not retryable, so that a later confirmation still reaches the books.
    """
    statuses = await BeneficiaryRepository(session).statuses_for_share(sorted({e.beneficiary_id for e in chunk}))
    inactive = [e for e in chunk if statuses.get(e.beneficiary_id) != "active"]
    if not inactive:
        return list(chunk)
    withheld: set[uuid.UUID] = set()
    left_out: dict[uuid.UUID, list[tuple[uuid.UUID, uuid.UUID]]] = {}
    for entitlement in inactive:
        try:
            with provider_call(provider.name, "cancel"):
                outcome = await provider.cancel(entitlement.id, entitlement.provider_ref)
        except PermanentProviderError as exc:
            reason = (
                f"{entitlements.NOT_ACTIVE}; the provider refused its cancellation: {exc.error_code or exc.status_code}"
            )
            await entitlements.mark_failed(session, entitlement.id, reason, False, source=source)
            withheld.add(entitlement.id)
            continue
        if not outcome.cancelled:
            continue
        await entitlements.withhold(session, entitlement, source=source)
        withheld.add(entitlement.id)
        left_out.setdefault(entitlement.batch_id, []).append((entitlement.beneficiary_id, entitlement.id))
    for batch_id, pairs in left_out.items():
        await batches.exclude_after_release(session, batch_id, pairs)
    return [e for e in chunk if e.id not in withheld]


async def sweep(session_factory: async_sessionmaker[AsyncSession], settings: Settings) -> None:
    """Start a lane job for every free lane of a processing batch with pending entitlements, complete the
    batches settled concurrently, and ask the provider about overdue submissions."""
    async with session_factory.begin() as session:
        for batch_id, lane in await IssuanceRepository(session).stalled_lanes(ISSUE_JOB, LANES):
            log.info("issuance_lane_started", batch_id=batch_id, lane=lane)
            await enqueue(session, ISSUE_JOB, {"batch_id": batch_id, "lane": lane})
        await batches.complete_done_batches(session)
    await poll_overdue(session_factory, settings)


async def poll_overdue(session_factory: async_sessionmaker[AsyncSession], settings: Settings) -> int:
    """Ask the provider about entitlements submitted long ago with no event, and apply its answer.

    Each is asked at most once per poll period (`checked_at`), so a slow provider is not flooded.
    """
    async with session_factory.begin() as session:
        overdue = await entitlements.claim_overdue(session, settings.provider_status_poll_seconds, STATUS_POLL_LIMIT)
    if not overdue:
        return 0
    adapters: dict[str, ProviderAdapter] = {}
    for provider_name in {provider_name for _, provider_name in overdue}:
        try:
            adapters[provider_name] = get_provider(settings, provider_name)
        except Conflict:
            # Its entitlements wait for the provider to be configured again; the others are asked.
            log.warning("status_poll_provider_not_configured", provider=provider_name)
    by_message = {name: adapter for name, adapter in adapters.items() if isinstance(adapter, CallbackProvider)}
    if by_message:
        await _request_statuses(by_message, overdue)
        overdue = [(e, name) for e, name in overdue if name not in by_message]
    limiter = asyncio.Semaphore(STATUS_POLL_CONCURRENCY)

    async def ask(entitlement_id: uuid.UUID, provider_name: str) -> tuple[str, StatusOutcome | None]:
        async with limiter:
            try:
                with provider_call(provider_name, "status"):
                    return provider_name, await adapters[provider_name].status(entitlement_id)
            except TransientProviderError:
                return provider_name, None

    answers = await asyncio.gather(*(ask(e, name) for e, name in overdue if name in adapters))
    issued: dict[str, list[entitlements.Issued]] = {}
    failed: list[tuple[str, StatusOutcome]] = []
    for provider_name, answer in answers:
        if answer is None:
            continue
        if answer.status in ("issued", "redeemed", "expired") and answer.provider_ref:
            issued.setdefault(provider_name, []).append(
                entitlements.Issued(
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
            results = await entitlements.mark_issued_many(session, confirmations, source=f"status:{provider_name}")
            applied += sum(result.applied for result in results.values())
        for provider_name, answer in failed:
            result = await entitlements.mark_failed(
                session,
                answer.entitlement_id,
                answer.reason or "failed at the provider",
                bool(answer.retryable),
                provider_ref=answer.provider_ref,
                source=f"status:{provider_name}",
            )
            applied += result.applied
    return applied


async def _request_statuses(adapters: Mapping[str, CallbackProvider], overdue: Sequence[tuple[uuid.UUID, str]]) -> None:
    """Ask providers that answer by signed callback (G2P Connect `disburse/txn/status`) about their overdue
    entitlements, a chunk per request: the answers arrive as callbacks and go through the inbox like any
    other. One that cannot be asked now is asked at the next poll period."""
    for provider_name, adapter in adapters.items():
        ids = [entitlement_id for entitlement_id, name in overdue if name == provider_name]
        for start in range(0, len(ids), adapter.chunk_size):
            try:
                with provider_call(provider_name, "status"):
                    await adapter.request_statuses(ids[start : start + adapter.chunk_size])
            except ProviderError as exc:
                log.warning("status_request_failed", provider=provider_name, error=exc.error_code or exc.status_code)
                break


async def retry_entitlement(
    session: AsyncSession, settings: Settings, principal: Principal, entitlement_id: uuid.UUID
) -> EntitlementOut:
    """failed → submitted: re-reserve the amount and send it again under the same idempotency key.

    The provider deduplicates by key and retries only what failed, so a retry can never pay twice. A
    provider outage answers 503 and leaves the entitlement failed (the whole transaction rolls back).
    """
    entitlement, programme = await entitlements.begin_retry(session, entitlement_id)
    provider = get_provider(settings, programme.provider)
    try:
        with provider_call(provider.name, "issue"):
            (outcome,) = await provider.issue([instruction_of(entitlement, programme)])
    except TransientProviderError as exc:
        raise ProviderUnavailable("The provider is unavailable; retry later with the same key.") from exc
    except ProviderError as exc:
        raise ProviderRefused(f"The provider refused the instruction: {exc.error_code or 'error'}.") from exc
    await batches.reopen_batch(session, entitlement.batch_id)
    return await entitlements.finish_retry(session, principal, entitlement, outcome, source=provider.name)


async def cancel_entitlement(
    session: AsyncSession, settings: Settings, principal: Principal, entitlement_id: uuid.UUID
) -> EntitlementOut:
    """Cancel before issue (a failed one included), or an unredeemed voucher; once a batch is released the
    provider confirms first.

    The batch row is locked before the entitlement while the batch is unreleased (the order batch
    transitions use), so a cancel can never slip between a submit's total and its freeze.
    """
    batch_status = await batches.status_for_change(session, await entitlements.batch_of(session, entitlement_id))
    assert batch_status is not None, "an entitlement's batch exists"
    if batch_status == "pending_approval":
        raise Conflict("The batch is awaiting approval: its list is frozen.")
    entitlement, programme = await entitlements.cancellable(session, entitlement_id)
    if batch_status in RELEASED_STATUSES:
        await _cancel_at_provider(settings, programme, entitlement)
    return await entitlements.cancel(session, principal, entitlement, programme, batch_status)


async def _cancel_at_provider(settings: Settings, programme: Programme, entitlement: Entitlement) -> None:
    provider = get_provider(settings, programme.provider)
    try:
        with provider_call(provider.name, "cancel"):
            outcome = await provider.cancel(entitlement.id, entitlement.provider_ref)
    except TransientProviderError as exc:
        raise ProviderUnavailable("The provider is unavailable; retry later with the same key.") from exc
    except ProviderError as exc:
        raise ProviderRefused(f"The provider refused the cancellation: {exc.error_code or 'error'}.") from exc
    if not outcome.cancelled:
        raise Conflict(f"The provider could not cancel it: the instruction is {outcome.status}.")
