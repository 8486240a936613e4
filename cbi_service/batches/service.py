"""Payment batches: maker-checker from draft to processing, and the follow-up of what did not arrive.

Every transition first locks the batch row (SELECT ... FOR UPDATE) and then checks its status, so two
concurrent approvals, releases or cancels serialise on the row and only the first one finds the status it
needs; the other answers 409. Approvers are distinct by a unique index, not by a prior read.
Segregation of duties: the creator never approves or rejects, and whoever releases has neither created
nor approved the batch.

A beneficiary holds at most one live entitlement (pending, submitted, issued or redeemed) per programme
and cycle; failed, expired and cancelled ones free the cycle, which is what lets a follow-up batch pay the
same cycle again. Amount rules price each entitlement as min(base + per_member × household_size, max),
recomputed at submit from the household sizes of that moment. The entitlements themselves are written by
`entitlements`, which this domain asks; batch completion, when the last entitlement settles, is this
domain's, called back by the state machine (`entitlements.service.when_batch_settles`).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.accounting import postings
from cbi_service.audit.service import record_audit
from cbi_service.auth.roles import Principal
from cbi_service.batches.models import RELEASED_STATUSES, UNRELEASED_STATUSES, BatchApproval, PaymentBatch
from cbi_service.batches.repository import BatchRepository
from cbi_service.batches.schemas import MAX_LISTED_EXCLUSIONS, ApprovalCreate, BatchCreate, BatchOut
from cbi_service.entitlements import service as entitlements
from cbi_service.kit.errors import Conflict, Forbidden, UnprocessableEntity
from cbi_service.programmes.models import Programme
from cbi_service.programmes.service import get_programme


async def create_batch(session: AsyncSession, principal: Principal, data: BatchCreate) -> BatchOut:
    programme = await get_programme(session, data.programme_id)
    _check_currency(programme, data.currency)
    batch = PaymentBatch(
        programme_id=programme.id,
        name=data.name,
        cycle=data.cycle,
        currency=programme.currency,
        amount_minor=data.amount.minor if data.amount is not None else None,
        amount_rule=data.amount_rule.minor() if data.amount_rule is not None else None,
        created_by=principal.id,
    )
    return await _create(session, principal, batch, data.beneficiary_ids, "payment_batch.created")


async def follow_up_batch(
    session: AsyncSession, principal: Principal, batch_id: uuid.UUID, name: str | None
) -> BatchOut:
    """A new draft for this batch's failed and expired entitlements whose beneficiaries are still active."""
    source = await BatchRepository(session).require(batch_id)
    if source.status not in RELEASED_STATUSES:
        raise Conflict(f"Only a released batch can be followed up; this one is {source.status}.")
    beneficiary_ids = await entitlements.to_follow_up(session, source.id)
    if not beneficiary_ids:
        raise Conflict("The batch has no failed or expired entitlements to follow up.")
    batch = PaymentBatch(
        programme_id=source.programme_id,
        name=name or f"{source.name} (follow-up)"[:200],
        cycle=source.cycle,
        currency=source.currency,
        amount_minor=source.amount_minor,
        amount_rule=source.amount_rule,
        follow_up_of=source.id,
        created_by=principal.id,
    )
    return await _create(session, principal, batch, beneficiary_ids, "payment_batch.follow_up_created")


async def _create(
    session: AsyncSession,
    principal: Principal,
    batch: PaymentBatch,
    beneficiary_ids: Sequence[uuid.UUID] | None,
    action: str,
) -> BatchOut:
    repo = BatchRepository(session)
    await repo.add(batch)
    if beneficiary_ids is not None:
        await repo.exclude_refused(batch, beneficiary_ids)
    await entitlements.create_pending(session, _terms(batch), beneficiary_ids)
    await repo.exclude_already_paid(batch, beneficiary_ids)
    await _refresh_totals(session, batch)
    await session.flush()
    await _audit(session, principal, action, batch, None)
    return await _view(session, batch)


async def submit_batch(session: AsyncSession, principal: Principal, batch_id: uuid.UUID) -> BatchOut:
    """draft → pending_approval: the list and amounts freeze and the total must fit the available budget."""
    repo = BatchRepository(session)
    batch = await _locked(session, batch_id, "draft")
    before = batch.summary()
    inactive = await entitlements.freeze_pending(
        session, _terms(batch), principal.name, reprice=batch.amount_rule is not None
    )
    await repo.exclude_inactive(batch.id, inactive)
    await _refresh_totals(session, batch)
    if batch.beneficiary_count == 0:
        raise Conflict("The batch has no beneficiaries to pay.")
    programme = await get_programme(session, batch.programme_id)
    available = await postings.available_minor(session, programme)
    if batch.total_minor > available:
        raise Conflict(
            "The batch total exceeds the programme's available balance.",
            extra={"total_minor": batch.total_minor, "available_minor": available},
        )
    batch.approvals_needed = programme.approvals_needed(batch.total_minor)
    _move(batch, "pending_approval")
    batch.submitted_by = principal.id
    batch.submitted_at = _now()
    await session.flush()
    await _audit(session, principal, "payment_batch.submitted", batch, before)
    return await _view(session, batch)


async def decide_batch(
    session: AsyncSession, principal: Principal, batch_id: uuid.UUID, data: ApprovalCreate
) -> BatchOut:
    """Record one approver's decision; a reject ends the batch, the last approve reserves its total."""
    repo = BatchRepository(session)
    batch = await _locked(session, batch_id, "pending_approval")
    if principal.id == batch.created_by:
        raise Forbidden("The batch's creator cannot approve or reject it.")
    before = batch.summary()
    try:
        async with session.begin_nested():
            await repo.add_approval(
                BatchApproval(
                    batch_id=batch.id,
                    approver_id=principal.id,
                    approver_name=principal.name,
                    decision=data.decision,
                    comment=data.comment,
                )
            )
    except IntegrityError as exc:
        raise Conflict("This approver has already decided on the batch.") from exc
    await record_audit(
        session,
        principal,
        f"payment_batch.{data.decision}",
        "payment_batch",
        batch.id,
        None,
        {"decision": data.decision, "comment": data.comment},
    )
    if data.decision == "reject":
        await entitlements.cancel_pending(session, batch.id, principal.name, "batch rejected")
        _move(batch, "rejected")
        batch.closed_at = _now()
    else:
        approvals = (await repo.approvals([batch.id]))[batch.id]
        approved = sum(1 for row in approvals if row.decision == "approve")
        if approved >= (batch.approvals_needed or 1):
            programme = await get_programme(session, batch.programme_id)
            await postings.reserve_batch(session, programme, batch.id, batch.total_minor)
            _move(batch, "approved")
            batch.approved_at = _now()
    await session.flush()
    if batch.status != before["status"]:
        await _audit(session, principal, f"payment_batch.{batch.status}", batch, before)
    return await _view(session, batch)


Released = Callable[[AsyncSession, uuid.UUID], Awaitable[None]]
_released: list[Released] = []


def when_released(hook: Released) -> None:
    """Have `hook(session, batch_id)` called in the release transaction: `issuance` starts its lanes so (it
    imports this module, so this one cannot import it back)."""
    _released.append(hook)


async def release_batch(session: AsyncSession, principal: Principal, batch_id: uuid.UUID) -> BatchOut:
    """approved → processing and hand the entitlements to the issuance worker (same transaction)."""
    if not _released:
        raise RuntimeError("no release hook registered: cbi_service.issuance.tasks is not loaded")
    repo = BatchRepository(session)
    batch = await _locked(session, batch_id, "approved")
    approvers = {row.approver_id for row in (await repo.approvals([batch.id]))[batch.id]}
    if principal.id == batch.created_by or principal.id in approvers:
        raise Forbidden("Whoever created or approved a batch cannot release it.")
    before = batch.summary()
    _move(batch, "processing")
    batch.released_by = principal.id
    batch.released_at = _now()
    await session.flush()
    for hook in _released:
        await hook(session, batch.id)
    await _audit(session, principal, "payment_batch.released", batch, before)
    return await _view(session, batch)


async def cancel_batch(session: AsyncSession, principal: Principal, batch_id: uuid.UUID) -> BatchOut:
    """Before release only; an approved batch gives back what is still reserved."""
    batch = await BatchRepository(session).require(batch_id, for_update=True, populate_existing=True)
    if batch.status not in UNRELEASED_STATUSES:
        raise Conflict(f"A {batch.status} batch cannot be cancelled.")
    before = batch.summary()
    _, reserved = await entitlements.cancel_pending(session, batch.id, principal.name, "batch cancelled")
    if batch.status == "approved":
        programme = await get_programme(session, batch.programme_id)
        await postings.release_batch_reservation(session, programme, batch.id, reserved)
    _move(batch, "cancelled")
    batch.cancelled_by = principal.id
    batch.closed_at = _now()
    await session.flush()
    await _audit(session, principal, "payment_batch.cancelled", batch, before)
    return await _view(session, batch)


async def get_batch(session: AsyncSession, batch_id: uuid.UUID) -> BatchOut:
    return await _view(session, await BatchRepository(session).require(batch_id))


async def _view(session: AsyncSession, batch: PaymentBatch) -> BatchOut:
    """The batch as the API shows it, with its counts, approvals and exclusions."""
    repo = BatchRepository(session)
    counts = await entitlements.counts_by_batch(session, [batch.id])
    approvals = await repo.approvals([batch.id])
    excluded = await repo.exclusions(batch.id, MAX_LISTED_EXCLUSIONS)
    return BatchOut.of(batch, counts=counts[batch.id], approvals=approvals[batch.id], excluded=excluded)


async def list_batches(
    session: AsyncSession,
    *,
    after_id: uuid.UUID | None,
    limit: int,
    programme_id: uuid.UUID | None,
    status: str | None,
) -> tuple[Sequence[PaymentBatch], list[BatchOut]]:
    """The page's rows (for the cursor) and their views, with counts and approvals fetched per page."""
    rows = await BatchRepository(session).list(after_id=after_id, limit=limit, programme_id=programme_id, status=status)
    shown = list(rows[:limit])
    ids = [batch.id for batch in shown]
    counts = await entitlements.counts_by_batch(session, ids)
    approvals = await BatchRepository(session).approvals(ids)
    views = [BatchOut.of(b, counts=counts[b.id], approvals=approvals[b.id], excluded=None) for b in shown]
    return rows, views


async def complete_done_batches(session: AsyncSession, batch_id: uuid.UUID | None = None) -> None:
    """Complete the processing batches (or this one) that nothing keeps open any more, and audit each."""
    for completed in await BatchRepository(session).complete_done(batch_id):
        await record_audit(session, None, "payment_batch.completed", "payment_batch", completed)


entitlements.when_batch_settles(complete_done_batches)


async def reopen_batch(session: AsyncSession, batch_id: uuid.UUID) -> None:
    """A retried entitlement is open again, so its completed batch is processing again."""
    await BatchRepository(session).reopen(batch_id)


async def status_for_change(session: AsyncSession, batch_id: uuid.UUID) -> str | None:
    """The batch's status for a change to one of its entitlements; an unreleased batch is locked first (the
    order batch transitions use), so the change never slips between a submit's total and its freeze."""
    repo = BatchRepository(session)
    status = await repo.status(batch_id)
    if status in UNRELEASED_STATUSES:
        status = await repo.status(batch_id, for_update=True)
    return status


async def exclude_after_release(
    session: AsyncSession, batch_id: uuid.UUID, left_out: Sequence[tuple[uuid.UUID, uuid.UUID]]
) -> None:
    """Record (beneficiary, cancelled entitlement) pairs left out of a released batch, counted on its row."""
    await BatchRepository(session).exclude_after_release(batch_id, left_out)


async def _refresh_totals(session: AsyncSession, batch: PaymentBatch) -> None:
    count, total = await entitlements.pending_totals(session, batch.id)
    await BatchRepository(session).refresh_totals(batch, count, total)


def _terms(batch: PaymentBatch) -> entitlements.BatchTerms:
    rule = batch.amount_rule or {}
    return entitlements.BatchTerms(
        batch_id=batch.id,
        programme_id=batch.programme_id,
        cycle=batch.cycle,
        currency=batch.currency,
        flat=batch.amount_minor,
        base=rule.get("base"),
        per_member=rule.get("per_member"),
        cap=rule.get("max"),
    )


async def _locked(session: AsyncSession, batch_id: uuid.UUID, expected: str) -> PaymentBatch:
    batch = await BatchRepository(session).require(batch_id, for_update=True, populate_existing=True)
    if batch.status != expected:
        raise Conflict(f"The batch is {batch.status}, not {expected}.")
    return batch


async def _audit(
    session: AsyncSession, principal: Principal, action: str, batch: PaymentBatch, before: dict[str, object] | None
) -> None:
    await record_audit(session, principal, action, "payment_batch", batch.id, before, batch.summary())


def _move(batch: PaymentBatch, status: str) -> None:
    batch.status = status
    batch.updated_at = _now()


def _now() -> datetime:
    return datetime.now(UTC)


def _check_currency(programme: Programme, currency: str) -> None:
    if currency != programme.currency:
        raise UnprocessableEntity(
            "Currency does not match the programme's.",
            errors=[{"field": "amount.currency", "message": f"must be {programme.currency}"}],
        )
