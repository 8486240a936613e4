"""Entitlements: one state machine that every source of change goes through.

Statuses: pending → submitted → issued → (voucher) redeemed | expired; failed (→ submitted again by a
retry); cancelled. Transitions usable from any unit of work (the issuance worker, the provider-webhook
inbox, scheduled jobs, API routes) — the caller owns the transaction, these only flush:

    mark_issued(session, entitlement_id, provider_ref, *, card_token=None, card_last4=None,
                voucher_code=None, expires_at=None, at=None, source="provider") -> Transition
    mark_failed(session, entitlement_id, reason, retryable, *, provider_ref=None,
                source="provider") -> Transition
    mark_redeemed(session, entitlement_id, amount_minor, merchant, *, source="provider") -> Transition
    mark_expired(session, entitlement_id, *, source="provider") -> Transition
    mark_issued_many(session, events: Sequence[Issued], *, source="provider") -> dict[UUID, Transition]
        (a chunk of confirmations in a few statements; unknown ids are absent from the answer)

Each one
- locks the entitlement row (SELECT ... FOR UPDATE), so events for one entitlement apply one at a time;
- never moves it backwards: an event that is stale for the current status (a late `issued` after
  `redeemed`, a `failed` after `issued`, anything after `cancelled`) changes nothing and returns
  `Transition(outcome="noop")`; a late `issued` only fills in card or voucher details still missing;
- accepts events that skip a step, because providers may deliver out of order or after our own crash:
  `issued` straight from `pending`, `redeemed`/`expired` before `issued` (the issue is posted first);
- refuses (outcome "refused", nothing changed) a redemption above the voucher's remaining value or a
  redemption of an expired or cancelled voucher: such an event needs a person to look at it;
- writes the status-history row, posts to the ledger (see `postings`) and records an audit event, all in
  the caller's transaction, and completes the batch when nothing in it is left pending or submitted;
- raises `UnknownEntitlement` (a 404 `NotFound`) for an id it does not know, so an inbox can keep the
  event for review instead of losing it.

`retry_entitlement` and `cancel_entitlement` are the API's operations (roles: finance or
programme_officer — the people who release batches and the people who run them); both talk to the
programme's provider while holding the row lock, so the provider's answer and our state commit together.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ARRAY, DateTime, Text, Uuid, bindparam, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.providers.base import (
    IssueInstruction,
    PermanentProviderError,
    ProviderAdapter,
    ProviderError,
    TransientProviderError,
)
from cbi_service.accounting import postings
from cbi_service.audit.service import AuditEntry, record_audit, record_audit_many
from cbi_service.auth.roles import Principal
from cbi_service.batches.models import RELEASED_STATUSES, UNRELEASED_STATUSES, PaymentBatch
from cbi_service.batches.repository import BatchRepository
from cbi_service.beneficiaries.repository import BeneficiaryRepository
from cbi_service.disbursement.providers import get_provider
from cbi_service.entitlements.models import OPEN_STATUSES, Entitlement, EntitlementEvent
from cbi_service.entitlements.repository import EntitlementRepository
from cbi_service.entitlements.schemas import EntitlementOut, StatusChange
from cbi_service.kit.errors import AppError, Conflict, NotFound
from cbi_service.kit.ids import new_id
from cbi_service.kit.settings import Settings
from cbi_service.programmes.models import Programme

Outcome = Literal["applied", "noop", "refused"]
_RANK = {"pending": 0, "submitted": 1, "failed": 1, "issued": 2, "redeemed": 3, "expired": 4, "cancelled": 5}


class UnknownEntitlement(NotFound):
    """No entitlement has this id (an event for it must be kept for review, not dropped)."""


class ProviderUnavailable(AppError):
    status, title, slug = 503, "Service Unavailable", "provider-unavailable"


class ProviderRefused(AppError):
    status, title, slug = 502, "Bad Gateway", "provider-refused"


@dataclass(frozen=True)
class Transition:
    """What one state-machine call did: `applied`, `noop` (stale or repeated event) or `refused`."""

    entitlement_id: uuid.UUID
    outcome: Outcome
    previous_status: str
    status: str
    detail: str | None = None

    @property
    def applied(self) -> bool:
        return self.outcome == "applied"


async def mark_issued(
    session: AsyncSession,
    entitlement_id: uuid.UUID,
    provider_ref: str,
    *,
    card_token: str | None = None,
    card_last4: str | None = None,
    voucher_code: str | None = None,
    expires_at: datetime | None = None,
    at: datetime | None = None,
    source: str = "provider",
) -> Transition:
    """The provider loaded the card or created the voucher: committed money becomes disbursed."""
    entitlement = await _lock(session, entitlement_id)
    previous = entitlement.status
    details = {"card_token": card_token, "card_last4": card_last4, "voucher_code": voucher_code}
    if _RANK[previous] >= _RANK["issued"]:
        for name, value in details.items():
            if value is not None and getattr(entitlement, name) is None and previous != "cancelled":
                setattr(entitlement, name, value)
        await session.flush()
        return Transition(entitlement_id, "noop", previous, previous, f"already {previous}")
    programme = await _programme(session, entitlement)
    await _issue(session, programme, entitlement, provider_ref, at)
    for name, value in details.items():
        if value is not None:
            setattr(entitlement, name, value)
    if voucher_code is not None:
        entitlement.expires_at = expires_at or _voucher_expiry(programme, entitlement.issued_at)
    await _changed(session, entitlement, previous, source, {"provider_ref": provider_ref})
    return Transition(entitlement_id, "applied", previous, entitlement.status)


@dataclass(frozen=True)
class Issued:
    """One provider confirmation for `mark_issued_many`."""

    entitlement_id: uuid.UUID
    provider_ref: str
    card_token: str | None = None
    card_last4: str | None = None
    voucher_code: str | None = None
    expires_at: datetime | None = None
    at: datetime | None = None


_ISSUE_MANY = text(
    """
    WITH v AS (
        SELECT * FROM unnest(:ids, :froms, :refs, :tokens, :last4s, :codes, :expires, :ats)
                   AS v(id, prev, ref, token, last4, code, expires, at)
    ),
    moved AS (
        UPDATE entitlements AS e
           SET status = 'issued', provider_ref = v.ref, card_token = v.token, card_last4 = v.last4,
               voucher_code = v.code, expires_at = v.expires, issued_at = v.at, updated_at = now(),
               failure_reason = NULL, failure_retryable = NULL
          FROM v
         WHERE e.id = v.id
        RETURNING e.id, e.amount_minor, v.prev, v.ref
    ),
    history AS (
        INSERT INTO entitlement_events (id, entitlement_id, from_status, to_status, actor, detail)
        SELECT cbi_uuid7(), moved.id, moved.prev, 'issued', :source, jsonb_build_object('provider_ref', moved.ref)
          FROM moved
    )
    SELECT moved.id, moved.amount_minor, moved.prev, moved.ref FROM moved
    """
).bindparams(
    bindparam("ids", type_=ARRAY(Uuid())),
    *(bindparam(name, type_=ARRAY(Text())) for name in ("froms", "refs", "tokens", "last4s", "codes")),
    *(bindparam(name, type_=ARRAY(DateTime(timezone=True))) for name in ("expires", "ats")),
    bindparam("source", type_=Text()),
)
"""One statement moves a chunk to `issued` and writes its history rows."""


async def mark_issued_many(
    session: AsyncSession, events: Sequence[Issued], *, source: str = "provider"
) -> dict[uuid.UUID, Transition]:
    """`mark_issued` for a chunk of confirmations, at a cost of a few statements instead of a few per event.

    Same rules: rows locked (in id order, so two chunks never deadlock), nothing moves backwards. Ids this
    service does not know are left out of the answer, so a caller can keep those events for review.
    """
    repo = EntitlementRepository(session)
    locked = {e.id: e for e in await repo.lock_many(sorted({event.entitlement_id for event in events}))}
    results: dict[uuid.UUID, Transition] = {}
    moving: list[tuple[Entitlement, Issued]] = []
    for event in events:
        entitlement = locked.get(event.entitlement_id)
        if entitlement is None or entitlement.id in results:
            continue
        if entitlement.status in OPEN_STATUSES:
            moving.append((entitlement, event))
            results[entitlement.id] = Transition(entitlement.id, "applied", entitlement.status, "issued")
        else:
            details = {
                "card_token": event.card_token,
                "card_last4": event.card_last4,
                "voucher_code": event.voucher_code,
            }
            results[entitlement.id] = await mark_issued(
                session,
                entitlement.id,
                event.provider_ref,
                **details,
                expires_at=event.expires_at,
                at=event.at,
                source=source,
            )
    if not moving:
        return results
    # One lookup per programme; a caller that holds the chunk's programmes (the webhook applier) answers
    # them from the session's identity map, without a query.
    one_per_programme = {e.programme_id: e for e, _ in moving}
    programmes = {pid: await _programme(session, e) for pid, e in one_per_programme.items()}
    await postings.disburse_many(session, [(programmes[e.programme_id], e) for e, _ in moving])
    now = datetime.now(UTC)
    issued_at = [event.at or now for _, event in moving]
    expires = [
        event.expires_at or (_voucher_expiry(programmes[e.programme_id], at) if event.voucher_code else None)
        for (e, event), at in zip(moving, issued_at, strict=True)
    ]
    moved = await session.execute(
        _ISSUE_MANY,
        {
            "ids": [e.id for e, _ in moving],
            "froms": [e.status for e, _ in moving],
            "refs": [event.provider_ref for _, event in moving],
            "tokens": [event.card_token for _, event in moving],
            "last4s": [event.card_last4 for _, event in moving],
            "codes": [event.voucher_code for _, event in moving],
            "expires": expires,
            "ats": issued_at,
            "source": source,
        },
    )
    await record_audit_many(
        session,
        None,
        [
            AuditEntry(
                "entitlement.issued",
                "entitlement",
                row.id,
                {"status": row.prev},
                {"status": "issued", "amount_minor": row.amount_minor, "provider_ref": row.ref, "source": source},
            )
            for row in moved
        ],
    )
    for batch_id in {e.batch_id for e, _ in moving}:
        await complete_done_batches(session, batch_id)
    for entitlement, _ in moving:
        session.expire(entitlement)
    return results


async def _failures(session: AsyncSession, entitlement: Entitlement) -> int:
    """Its status changes to `failed` so far: the fact its failure postings are keyed by."""
    return await EntitlementRepository(session).count_events(entitlement.id, "failed")


async def mark_failed(
    session: AsyncSession,
    entitlement_id: uuid.UUID,
    reason: str,
    retryable: bool,
    *,
    provider_ref: str | None = None,
    source: str = "provider",
) -> Transition:
    """The provider could not deliver: the reservation goes back to the programme's available budget."""
    entitlement = await _lock(session, entitlement_id)
    previous = entitlement.status
    if previous not in ("pending", "submitted"):
        return Transition(entitlement_id, "noop", previous, previous, f"already {previous}")
    programme = await _programme(session, entitlement)
    await postings.release_on_failure(session, programme, entitlement, failures=await _failures(session, entitlement))
    entitlement.status = "failed"
    entitlement.failure_reason = reason
    entitlement.failure_retryable = retryable
    if provider_ref is not None:
        entitlement.provider_ref = provider_ref
    await _changed(session, entitlement, previous, source, {"reason": reason, "retryable": retryable})
    return Transition(entitlement_id, "applied", previous, entitlement.status)


async def mark_redeemed(
    session: AsyncSession,
    entitlement_id: uuid.UUID,
    amount_minor: int,
    merchant: str,
    *,
    source: str = "provider",
) -> Transition:
    """A purchase with a voucher; partial redemptions keep the remainder spendable until it expires."""
    if amount_minor <= 0:
        raise ValueError("a redemption amount must be positive")
    entitlement = await _lock(session, entitlement_id)
    previous = entitlement.status
    if previous in ("expired", "cancelled"):
        return Transition(entitlement_id, "refused", previous, previous, f"voucher is {previous}")
    if amount_minor > entitlement.remaining_minor:
        detail = f"redemption of {amount_minor} exceeds the remaining {entitlement.remaining_minor}"
        return Transition(entitlement_id, "refused", previous, previous, detail)
    programme = await _programme(session, entitlement)
    if _RANK[previous] < _RANK["issued"]:
        await _issue(session, programme, entitlement, entitlement.provider_ref, None)
    await postings.redeem_entitlement(session, programme, entitlement, amount_minor)
    entitlement.redeemed_minor += amount_minor
    entitlement.status = "redeemed"
    await _changed(session, entitlement, previous, source, {"amount_minor": amount_minor, "merchant": merchant})
    return Transition(entitlement_id, "applied", previous, entitlement.status)


async def mark_expired(session: AsyncSession, entitlement_id: uuid.UUID, *, source: str = "provider") -> Transition:
    """A voucher ran out of time: whatever was not spent returns to the programme's available budget."""
    entitlement = await _lock(session, entitlement_id)
    previous = entitlement.status
    if previous in ("expired", "cancelled") or (previous == "redeemed" and entitlement.remaining_minor == 0):
        return Transition(entitlement_id, "noop", previous, previous, f"already {previous}")
    programme = await _programme(session, entitlement)
    if _RANK[previous] < _RANK["issued"]:
        await _issue(session, programme, entitlement, entitlement.provider_ref, None)
    returned = entitlement.remaining_minor
    await postings.return_entitlement(session, programme, entitlement, returned, reason="expired")
    entitlement.status = "expired"
    await _changed(session, entitlement, previous, source, {"returned_minor": returned})
    return Transition(entitlement_id, "applied", previous, entitlement.status)


_SUBMIT = text(
    """
    WITH moved AS (
        UPDATE entitlements AS e
           SET status = 'submitted', provider_ref = v.ref, submitted_at = now(), updated_at = now()
          FROM unnest(:ids, :refs) AS v(id, ref)
         -- `e.id = ANY` lets the planner find the chunk's rows by primary key, not by scanning every
         -- pending row of the batch for each chunk.
         WHERE e.id = v.id AND e.id = ANY (:ids) AND e.status = 'pending'
        RETURNING e.id
    )
    INSERT INTO entitlement_events (id, entitlement_id, from_status, to_status, actor)
    SELECT cbi_uuid7(), moved.id, 'pending', 'submitted', :source FROM moved
    RETURNING entitlement_id
    """
).bindparams(
    bindparam("ids", type_=ARRAY(Uuid())), bindparam("refs", type_=ARRAY(Text())), bindparam("source", type_=Text())
)


async def mark_submitted(
    session: AsyncSession, accepted: Sequence[tuple[uuid.UUID, str | None]], *, source: str
) -> list[uuid.UUID]:
    """The provider accepted these instructions, as (entitlement id, provider_ref): one statement a chunk,
    history included.

    Only rows still `pending` move; one a provider event already took further is left alone.
    """
    if not accepted:
        return []
    params = {"ids": [i for i, _ in accepted], "refs": [ref for _, ref in accepted], "source": source}
    return list((await session.execute(_SUBMIT, params)).scalars())


NOT_ACTIVE = "beneficiary not active"
"""Why an entitlement was cancelled instead of paid (as at submit, see `batches.repository`)."""


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
            outcome = await provider.cancel(entitlement.id, entitlement.provider_ref)
        except PermanentProviderError as exc:
            reason = f"{NOT_ACTIVE}; the provider refused its cancellation: {exc.error_code or exc.status_code}"
            await mark_failed(session, entitlement.id, reason, False, source=source)
            withheld.add(entitlement.id)
            continue
        if not outcome.cancelled:
            continue
        programme = await _programme(session, entitlement)
        await postings.release_on_cancel(session, programme, entitlement)
        entitlement.status = "cancelled"
        await _changed(session, entitlement, "pending", source, {"reason": NOT_ACTIVE})
        withheld.add(entitlement.id)
        left_out.setdefault(entitlement.batch_id, []).append((entitlement.beneficiary_id, entitlement.id))
    for batch_id, pairs in left_out.items():
        await BatchRepository(session).exclude_after_release(batch_id, pairs)
    return [e for e in chunk if e.id not in withheld]


async def retry_entitlement(
    session: AsyncSession, settings: Settings, principal: Principal, entitlement_id: uuid.UUID
) -> EntitlementOut:
    """failed → submitted: re-reserve the amount and send it again under the same idempotency key.

    The provider deduplicates by key and retries only what failed, so a retry can never pay twice. A
    provider outage answers 503 and leaves the entitlement failed (the whole transaction rolls back).
    """
    entitlement = await _lock(session, entitlement_id)
    if entitlement.status != "failed":
        raise Conflict(f"Only a failed entitlement can be retried; this one is {entitlement.status}.")
    # Locked like the issuance worker does: a concurrent deactivation waits until this retry has committed.
    beneficiary_status = (await BeneficiaryRepository(session).statuses_for_share([entitlement.beneficiary_id])).get(
        entitlement.beneficiary_id
    )
    if beneficiary_status != "active":
        raise Conflict(f"The beneficiary is {beneficiary_status}; only active beneficiaries can be paid.")
    programme = await _programme(session, entitlement)
    try:
        async with session.begin_nested():
            entitlement.status = "submitted"
            await session.flush()
    except IntegrityError as exc:
        raise Conflict("The beneficiary already holds a live entitlement in this programme cycle.") from exc
    await postings.reserve_after_failure(
        session, programme, entitlement, failures=await _failures(session, entitlement)
    )
    provider = get_provider(settings, programme.provider)
    try:
        (outcome,) = await provider.issue([instruction_of(entitlement, programme)])
    except TransientProviderError as exc:
        raise ProviderUnavailable("The provider is unavailable; retry later with the same key.") from exc
    except ProviderError as exc:
        raise ProviderRefused(f"The provider refused the instruction: {exc.error_code or 'error'}.") from exc
    await EntitlementRepository(session).reopen_batch(entitlement.batch_id)
    if outcome.accepted:
        entitlement.provider_ref = outcome.provider_ref
        entitlement.failure_reason = entitlement.failure_retryable = None
        entitlement.submitted_at = datetime.now(UTC)
    await _changed(
        session, entitlement, "failed", principal.name, None, principal=principal, action="entitlement.retried"
    )
    if not outcome.accepted:
        await mark_failed(
            session,
            entitlement.id,
            outcome.error_message or outcome.error_code or "declined",
            outcome.retryable,
            source=provider.name,
        )
    return await get_entitlement(session, entitlement.id)


async def cancel_entitlement(
    session: AsyncSession, settings: Settings, principal: Principal, entitlement_id: uuid.UUID
) -> EntitlementOut:
    """Cancel before issue (a failed one included), or an unredeemed voucher; once a batch is released the
    provider confirms first.

    The batch row is locked before the entitlement while the batch is unreleased (the order batch
    transitions use), so a cancel can never slip between a submit's total and its freeze. A failed
    entitlement's reservation went back to available when it failed, so its cancel posts nothing; the
    entitlement row lock orders it against a concurrent retry, which then finds it cancelled (or, retried
    first, it is cancelled as the submitted entitlement it has become).
    """
    found = await EntitlementRepository(session).get(entitlement_id)
    if found is None:
        raise UnknownEntitlement("Entitlement not found.")
    batch_status = await session.scalar(select(PaymentBatch.status).where(PaymentBatch.id == found.batch_id))
    if batch_status in UNRELEASED_STATUSES:
        batch_status = await session.scalar(
            select(PaymentBatch.status).where(PaymentBatch.id == found.batch_id).with_for_update()
        )
    if batch_status == "pending_approval":
        raise Conflict("The batch is awaiting approval: its list is frozen.")
    entitlement = await _lock(session, entitlement_id)
    programme = await _programme(session, entitlement)
    previous = entitlement.status
    unredeemed_voucher = (
        previous == "issued" and programme.delivery_mechanism == "voucher" and entitlement.redeemed_minor == 0
    )
    if previous not in (*OPEN_STATUSES, "failed") and not unredeemed_voucher:
        raise Conflict(f"A {previous} entitlement cannot be cancelled.")
    if batch_status in RELEASED_STATUSES:
        await _cancel_at_provider(settings, programme, entitlement)
    if unredeemed_voucher:
        await postings.return_entitlement(session, programme, entitlement, entitlement.amount_minor, "cancelled")
    elif batch_status != "draft" and previous != "failed":
        await postings.release_on_cancel(session, programme, entitlement)
    entitlement.status = "cancelled"
    await _changed(session, entitlement, previous, principal.name, None, principal=principal)
    return await get_entitlement(session, entitlement.id)


async def _cancel_at_provider(settings: Settings, programme: Programme, entitlement: Entitlement) -> None:
    provider = get_provider(settings, programme.provider)
    try:
        outcome = await provider.cancel(entitlement.id, entitlement.provider_ref)
    except TransientProviderError as exc:
        raise ProviderUnavailable("The provider is unavailable; retry later with the same key.") from exc
    except ProviderError as exc:
        raise ProviderRefused(f"The provider refused the cancellation: {exc.error_code or 'error'}.") from exc
    if not outcome.cancelled:
        raise Conflict(f"The provider could not cancel it: the instruction is {outcome.status}.")


async def get_entitlement(session: AsyncSession, entitlement_id: uuid.UUID) -> EntitlementOut:
    repo = EntitlementRepository(session)
    entitlement = await repo.get(entitlement_id)
    if entitlement is None:
        raise UnknownEntitlement("Entitlement not found.")
    return entitlement_out(entitlement, await repo.history(entitlement_id))


async def list_entitlements(
    session: AsyncSession,
    *,
    after_id: uuid.UUID | None,
    limit: int,
    batch_id: uuid.UUID | None,
    beneficiary_id: uuid.UUID | None,
    status: str | None,
) -> Sequence[Entitlement]:
    return await EntitlementRepository(session).list(
        after_id=after_id, limit=limit, batch_id=batch_id, beneficiary_id=beneficiary_id, status=status
    )


def entitlement_out(entitlement: Entitlement, history: Sequence[EntitlementEvent] | None = None) -> EntitlementOut:
    changes = None
    if history is not None:
        changes = [StatusChange(status="pending", at=entitlement.created_at, actor=None, detail=None)]
        changes += [
            StatusChange(status=event.to_status, at=event.occurred_at, actor=event.actor, detail=event.detail)
            for event in history
        ]
    return EntitlementOut.of(entitlement, changes)


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


async def _lock(session: AsyncSession, entitlement_id: uuid.UUID) -> Entitlement:
    entitlement = await EntitlementRepository(session).get(entitlement_id, for_update=True)
    if entitlement is None:
        raise UnknownEntitlement("Entitlement not found.")
    return entitlement


async def _programme(session: AsyncSession, entitlement: Entitlement) -> Programme:
    programme = await session.get(Programme, entitlement.programme_id)
    assert programme is not None
    return programme


async def _issue(
    session: AsyncSession,
    programme: Programme,
    entitlement: Entitlement,
    provider_ref: str | None,
    at: datetime | None,
) -> None:
    """Post the disbursement; a failed entitlement's budget went back to available, so reserve it again."""
    if entitlement.status == "failed":
        await postings.reserve_after_failure(
            session, programme, entitlement, failures=await _failures(session, entitlement)
        )
    await postings.disburse_entitlement(session, programme, entitlement)
    entitlement.status = "issued"
    entitlement.provider_ref = provider_ref
    entitlement.failure_reason = entitlement.failure_retryable = None
    entitlement.issued_at = at or datetime.now(UTC)


async def complete_done_batches(session: AsyncSession, batch_id: uuid.UUID | None = None) -> None:
    """Complete the processing batches (or this one) that nothing keeps open any more, and audit each."""
    for completed in await EntitlementRepository(session).complete_done_batches(batch_id):
        await record_audit(session, None, "payment_batch.completed", "payment_batch", completed)


def _voucher_expiry(programme: Programme, issued_at: datetime | None) -> datetime | None:
    if programme.voucher_validity_days is None or issued_at is None:
        return None
    return issued_at + timedelta(days=programme.voucher_validity_days)


async def _changed(
    session: AsyncSession,
    entitlement: Entitlement,
    previous: str,
    actor: str,
    detail: dict[str, Any] | None,
    *,
    principal: Principal | None = None,
    action: str | None = None,
) -> None:
    """History row, audit event and batch completion for one transition, in the caller's transaction."""
    entitlement.updated_at = func.now()
    repo = EntitlementRepository(session)
    await repo.add_events(
        [
            {
                "id": new_id(),
                "entitlement_id": entitlement.id,
                "from_status": previous,
                "to_status": entitlement.status,
                "actor": actor,
                "detail": detail,
            }
        ]
    )
    await session.flush()
    await record_audit(
        session,
        principal,
        action or f"entitlement.{entitlement.status}",
        "entitlement",
        entitlement.id,
        {"status": previous},
        {**_summary(entitlement), "source": actor},
    )
    settled = previous in OPEN_STATUSES and entitlement.status not in OPEN_STATUSES
    if settled:
        await complete_done_batches(session, entitlement.batch_id)


def _summary(entitlement: Entitlement) -> dict[str, Any]:
    return {
        "status": entitlement.status,
        "amount_minor": entitlement.amount_minor,
        "redeemed_minor": entitlement.redeemed_minor,
        "provider_ref": entitlement.provider_ref,
    }
