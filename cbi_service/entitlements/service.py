"""Entitlements: one state machine that every source of change goes through.

Statuses: pending → submitted → issued → (voucher) redeemed | expired; failed (→ submitted again by a
retry); cancelled. Transitions usable from any unit of work (the issuance worker, the provider-webhook
inbox, scheduled jobs, API routes) — the caller owns the transaction, these only flush:

    mark_issued(session, entitlement_id, provider_ref, *, card_token=None, card_last4=None,
                voucher_code=None, voucher_token=None, expires_at=None, at=None,
                source="provider") -> Transition
    mark_failed(session, entitlement_id, reason, retryable, *, provider_ref=None,
                source="provider") -> Transition
    mark_redeemed(session, entitlement_id, amount_minor, merchant, *, source="provider") -> Transition
    mark_expired(session, entitlement_id, *, source="provider") -> Transition
    spend_vouchers(session, spends: Sequence[Spend], *, locked=None) -> list[Spent]
        (the agency's own vouchers redeemed at merchants, set-based, in the order given, each spend naming
        who presented it; `locked` from `lock_vouchers` when the caller had to lock them before writing rows
        that refer to them)
    mark_issued_many(session, events: Sequence[Issued], *, source="provider") -> dict[UUID, Transition]
        (a chunk of confirmations in a few statements; unknown ids are absent from the answer; a chunk
        of signed vouchers one of whose codes is taken raises `VoucherCodeTaken`)

Each one
- locks the entitlement row (SELECT ... FOR UPDATE), so events for one entitlement apply one at a time;
- never moves it backwards: an event that is stale for the current status (a late `issued` after
  `redeemed`, a `failed` after `issued`, anything after `cancelled`) changes nothing and returns
  `Transition(outcome="noop")`; a late `issued` only fills in card or voucher details still missing;
- accepts events that skip a step, because providers may deliver out of order or after our own crash:
  `issued` straight from `pending`, `redeemed`/`expired` before `issued` (the issue is posted first; a
  failed entitlement's budget is reserved again for a redemption, and its expiry changes nothing);
- refuses (outcome "refused", nothing changed) a redemption above the voucher's remaining value or a
  redemption of an expired or cancelled voucher: such an event needs a person to look at it;
- writes the status-history row, posts to the ledger (see `postings`) and records an audit event, all in
  the caller's transaction, and, when nothing in the batch is left pending or submitted, calls the hook
  `batches` registers (`when_batch_settles`) to complete it;
- raises `UnknownEntitlement` (a 404 `NotFound`) for an id it does not know, so an inbox can keep the
  event for review instead of losing it.

The batch's own changes come here too: `create_pending`, `freeze_pending` and `cancel_pending` write a
batch's entitlements set-based; `claim_pending`, `mark_submitted`, `withhold` and `claim_overdue` are the
issuance worker's; `begin_retry`/`finish_retry` and `cancellable`/`cancel` are the two halves of the API's
retry and cancel, between which `issuance` asks the provider while the row lock is held, so the
provider's answer and our state commit together.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.providers.base import IssueOutcome
from cbi_service.accounting import postings
from cbi_service.audit.service import AuditEntry, record_audit, record_audit_each, record_audit_many
from cbi_service.auth.roles import Principal
from cbi_service.beneficiaries.repository import BeneficiaryRepository
from cbi_service.entitlements.models import OPEN_STATUSES, VOUCHER_CODE_INDEX, Entitlement, EntitlementEvent
from cbi_service.entitlements.repository import EntitlementRepository, LockedVoucher
from cbi_service.entitlements.schemas import EntitlementOut, StatusChange
from cbi_service.kit.errors import Conflict, NotFound, violated_constraint
from cbi_service.kit.ids import new_id
from cbi_service.programmes.models import VOUCHER_MECHANISMS, Programme

__all__ = ["LockedVoucher"]

TransitionOutcome = Literal["applied", "noop", "refused"]
_RANK = {"pending": 0, "submitted": 1, "failed": 1, "issued": 2, "redeemed": 3, "expired": 4, "cancelled": 5}


class UnknownEntitlement(NotFound):
    """No entitlement has this id (an event for it must be kept for review, not dropped)."""


class VoucherCodeTaken(Exception):
    """A chunk of signed vouchers drew a code another voucher holds. The statement failed, so the caller's
    transaction must be rolled back; the chunk can then be issued again with new codes."""


BatchSettled = Callable[[AsyncSession, uuid.UUID], Awaitable[None]]
_batch_settled: list[BatchSettled] = []


def when_batch_settles(hook: BatchSettled) -> None:
    """Have `hook(session, batch_id)` called, in the transition's transaction, whenever an entitlement of the
    batch stops being pending or submitted. `batches` completes its batches so: it imports this module, so
    this one cannot import it back."""
    _batch_settled.append(hook)


async def _settled(session: AsyncSession, batch_id: uuid.UUID) -> None:
    if not _batch_settled:
        raise RuntimeError("no batch-settled hook registered: cbi_service.batches.service is not loaded")
    for hook in _batch_settled:
        await hook(session, batch_id)


@dataclass(frozen=True)
class Transition:
    """What one state-machine call did: `applied`, `noop` (stale or repeated event) or `refused`."""

    entitlement_id: uuid.UUID
    outcome: TransitionOutcome
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
    voucher_token: str | None = None,
    expires_at: datetime | None = None,
    at: datetime | None = None,
    source: str = "provider",
) -> Transition:
    """The provider loaded the card or created the voucher: committed money becomes disbursed."""
    entitlement = await _lock(session, entitlement_id)
    previous = entitlement.status
    details = {
        "card_token": card_token,
        "card_last4": card_last4,
        "voucher_code": voucher_code,
        "voucher_token": voucher_token,
    }
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
    """One provider confirmation for `mark_issued_many`; `voucher_token` only for a voucher the agency signs."""

    entitlement_id: uuid.UUID
    provider_ref: str
    card_token: str | None = None
    card_last4: str | None = None
    voucher_code: str | None = None
    voucher_token: str | None = None
    expires_at: datetime | None = None
    at: datetime | None = None


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
                "voucher_token": event.voucher_token,
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
    try:
        moved = await repo.issue_many(
            {
                "ids": [e.id for e, _ in moving],
                "froms": [e.status for e, _ in moving],
                "refs": [event.provider_ref for _, event in moving],
                "tokens": [event.card_token for _, event in moving],
                "last4s": [event.card_last4 for _, event in moving],
                "codes": [event.voucher_code for _, event in moving],
                "vtokens": [event.voucher_token for _, event in moving],
                "expires": expires,
                "ats": issued_at,
                "source": source,
            }
        )
    except IntegrityError as exc:
        if violated_constraint(exc) == VOUCHER_CODE_INDEX:
            raise VoucherCodeTaken("a voucher code of the chunk is taken") from exc
        raise
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
        await _settled(session, batch_id)
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


@dataclass(frozen=True)
class VoucherRef:
    """A voucher the agency signed, as found before any lock: its programme, currency and token never change."""

    id: uuid.UUID
    programme_id: uuid.UUID
    currency: str
    token: str
    """The signed token issued with it (`vouchers.tokens`)."""


async def signed_vouchers(session: AsyncSession, voucher_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, VoucherRef]:
    """Those of the ids that are paper vouchers (entitlements holding a signed token), by id."""
    rows = await EntitlementRepository(session).signed_vouchers(voucher_ids)
    return {row.id: VoucherRef(*row) for row in rows}


SpendRefusal = Literal["fully_redeemed", "exceeds_remaining", "expired", "cancelled", "not_issued", "unknown"]


@dataclass(frozen=True)
class Spend:
    """A voucher presented at a merchant: `amount_minor` of it spent there at `at` (the scan, offline), the
    redemption named `redemption_id` (the caller's record of it, and the event its ledger posting records),
    presented `by` the merchant's key in request `request_id`: the voucher's history and the audit trail name
    them, spend by spend, as one call may carry the spends of many requests (a group commit)."""

    voucher_id: uuid.UUID
    amount_minor: int
    merchant_id: uuid.UUID
    redemption_id: uuid.UUID
    at: datetime
    by: Principal
    request_id: str | None


@dataclass(frozen=True)
class Spent:
    """What became of one `Spend`: applied, or refused and why; `remaining_minor` is the voucher's value left
    after it (after the spends before it, if refused)."""

    spend: Spend
    refusal: SpendRefusal | None
    remaining_minor: int

    @property
    def applied(self) -> bool:
        return self.refusal is None


VoucherLocks = Mapping[uuid.UUID, LockedVoucher]
"""The vouchers a transaction holds locked, by id, as `lock_vouchers` read them."""


async def lock_vouchers(
    session: AsyncSession, voucher_ids: Iterable[uuid.UUID], codes: Iterable[str] = ()
) -> VoucherLocks:
    """Lock vouchers (in id order) for `spend_vouchers`, before writing anything that refers to them: those of
    the ids, and the signed vouchers of the codes (each row says its code and token).

    A row referring to a voucher (a redemption record) takes a share lock on it, which does not stop another
    transaction from taking one too; two that each then wait to lock the voucher for its spend would wait on
    each other. Locked first, they take turns instead. Ids of no entitlement are absent."""
    rows = await EntitlementRepository(session).lock_vouchers(sorted(set(voucher_ids)), sorted(set(codes)))
    return {row.id: row for row in rows}


class DeferredPostings:
    """The ledger postings of spends, made later in the same transaction by `post`: a caller with more to write
    after the spends writes it first, so the programme's `disbursed` account, locked from the posting until the
    commit, is held for as short a time as can be."""

    def __init__(self) -> None:
        self._redemptions: list[postings.MerchantRedemption] = []

    def add(self, redemptions: Sequence[postings.MerchantRedemption]) -> None:
        self._redemptions.extend(redemptions)

    async def post(self, session: AsyncSession) -> None:
        redemptions, self._redemptions = self._redemptions, []
        if redemptions:
            await postings.redeem_at_merchants(session, redemptions)


async def spend_vouchers(
    session: AsyncSession,
    spends: Sequence[Spend],
    *,
    locked: VoucherLocks | None = None,
    deferred: DeferredPostings | None = None,
) -> list[Spent]:
    """Redeem the agency's own vouchers at merchants, in the order given (offline scans come in scan order, so
    the earliest wins a voucher spent twice), each applied only if the voucher is issued, not expired at the
    spend's time and holds at least its amount.

    The rows are locked in id order, so two merchants spending one voucher at once take turns and the second
    sees what the first spent: exactly one wins the last of its value. What is applied is written in a few
    statements whatever the count: the vouchers' redeemed amounts, a history row and an audit event per
    spend, and one ledger posting per spend from the programme's disbursed money to the merchant's payable.
    `locked`, what `lock_vouchers` returned in this transaction for (at least) the spends' vouchers, saves
    locking them again; with `deferred`, the ledger postings wait there for the caller to post them.
    """
    if not spends:
        return []
    if locked is None:
        locked = await lock_vouchers(session, (s.voucher_id for s in spends))
    remaining = {row.id: row.remaining_minor for row in locked.values()}
    status = {row.id: row.status for row in locked.values()}
    outcomes: list[Spent] = []
    applied: list[tuple[Spend, str]] = []
    for spend in spends:
        if spend.amount_minor <= 0:
            raise ValueError("a redemption amount must be positive")
        voucher = locked.get(spend.voucher_id)
        refusal = _spend_refusal(voucher, status, remaining, spend)
        if refusal is None:
            applied.append((spend, status[spend.voucher_id]))
            remaining[spend.voucher_id] -= spend.amount_minor
            status[spend.voucher_id] = "redeemed"
        outcomes.append(Spent(spend, refusal, remaining.get(spend.voucher_id, 0)))
    if applied:
        programmes = {row.id: _ProgrammeOf(row.programme_id, row.currency) for row in locked.values()}
        await _record_spends(session, programmes, applied, deferred)
    return outcomes


@dataclass(frozen=True, slots=True)
class _ProgrammeOf:
    """What a posting needs of a voucher's programme (`accounting.ProgrammeRef`), read with the voucher: its
    currency is the programme's, and neither ever changes."""

    id: uuid.UUID
    currency: str


def _spend_refusal(
    voucher: LockedVoucher | None, status: dict[uuid.UUID, str], remaining: dict[uuid.UUID, int], spend: Spend
) -> SpendRefusal | None:
    """Why `spend` cannot apply to the locked `voucher`, given what the spends before it in the same call
    left of it (`status`, `remaining`); None if it can."""
    if voucher is None or not voucher.signed:
        return "unknown"
    current = status[voucher.id]
    if current in ("expired", "cancelled"):
        return cast(SpendRefusal, current)
    if current not in ("issued", "redeemed"):
        return "not_issued"
    if voucher.expires_at is not None and voucher.expires_at <= spend.at:
        return "expired"
    if remaining[voucher.id] == 0:
        return "fully_redeemed"
    if spend.amount_minor > remaining[voucher.id]:
        return "exceeds_remaining"
    return None


async def _record_spends(
    session: AsyncSession,
    programme_of: dict[uuid.UUID, _ProgrammeOf],
    applied: Sequence[tuple[Spend, str]],
    deferred: DeferredPostings | None,
) -> None:
    """The applied spends' writes, the ledger's last: its programme-wide `disbursed` account is locked by
    every redemption of the programme until its transaction commits, so the less follows it, the more
    redemptions a second the programme takes."""
    repo = EntitlementRepository(session)
    spent: dict[uuid.UUID, int] = {}
    for spend, _ in applied:
        spent[spend.voucher_id] = spent.get(spend.voucher_id, 0) + spend.amount_minor
    await repo.spend(spent)
    details = [
        {
            "amount_minor": spend.amount_minor,
            "merchant_id": str(spend.merchant_id),
            "redemption_id": str(spend.redemption_id),
        }
        for spend, _ in applied
    ]
    await repo.add_events(
        {
            "id": new_id(),
            "entitlement_id": spend.voucher_id,
            "from_status": previous,
            "to_status": "redeemed",
            "actor": spend.by.name,
            "detail": detail,
        }
        for (spend, previous), detail in zip(applied, details, strict=True)
    )
    await record_audit_each(
        session,
        [
            (
                spend.by,
                spend.request_id,
                AuditEntry(
                    "entitlement.redeemed",
                    "entitlement",
                    spend.voucher_id,
                    {"status": previous},
                    {"status": "redeemed", **detail, "source": spend.by.name},
                ),
            )
            for (spend, previous), detail in zip(applied, details, strict=True)
        ],
    )
    redemptions = [
        postings.MerchantRedemption(
            programme_of[spend.voucher_id], spend.voucher_id, spend.merchant_id, spend.redemption_id, spend.amount_minor
        )
        for spend, _ in applied
    ]
    if deferred is None:
        await postings.redeem_at_merchants(session, redemptions)
    else:
        deferred.add(redemptions)


async def mark_expired(session: AsyncSession, entitlement_id: uuid.UUID, *, source: str = "provider") -> Transition:
    """A voucher ran out of time: whatever was not spent returns to the programme's available budget.

    A failed entitlement's budget went back to available when it failed: its expiry has nothing to return.
    """
    entitlement = await _lock(session, entitlement_id)
    previous = entitlement.status
    if previous in ("expired", "cancelled") or (previous == "redeemed" and entitlement.remaining_minor == 0):
        return Transition(entitlement_id, "noop", previous, previous, f"already {previous}")
    if previous == "failed":
        return Transition(entitlement_id, "noop", previous, previous, "failed: its budget is already available")
    programme = await _programme(session, entitlement)
    if _RANK[previous] < _RANK["issued"]:
        await _issue(session, programme, entitlement, entitlement.provider_ref, None)
    returned = entitlement.remaining_minor
    await postings.return_entitlement(session, programme, entitlement, returned, reason="expired")
    entitlement.status = "expired"
    await _changed(session, entitlement, previous, source, {"returned_minor": returned})
    return Transition(entitlement_id, "applied", previous, entitlement.status)


async def mark_submitted(
    session: AsyncSession, accepted: Sequence[tuple[uuid.UUID, str | None]], *, source: str
) -> list[uuid.UUID]:
    """The provider accepted these instructions, as (entitlement id, provider_ref): one statement a chunk,
    history included.

    Only rows still `pending` move; one a provider event already took further is left alone.
    """
    if not accepted:
        return []
    return await EntitlementRepository(session).submit(accepted, source)


NOT_ACTIVE = "beneficiary not active"
"""Why an entitlement was cancelled instead of paid (at submit, see `freeze_pending`, or when sent)."""


async def withhold(session: AsyncSession, entitlement: Entitlement, *, source: str) -> None:
    """pending → cancelled for a claimed entitlement whose beneficiary is no longer active, once the provider
    confirmed it holds no instruction for it: the reservation goes back to available."""
    programme = await _programme(session, entitlement)
    await postings.release_on_cancel(session, programme, entitlement)
    entitlement.status = "cancelled"
    await _changed(session, entitlement, "pending", source, {"reason": NOT_ACTIVE})


async def begin_retry(session: AsyncSession, entitlement_id: uuid.UUID) -> tuple[Entitlement, Programme]:
    """failed → submitted, before the provider is asked again: the row locked, the amount reserved again.

    The caller sends it under the same idempotency key and ends with `finish_retry`, in this transaction.
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
    return entitlement, programme


async def finish_retry(
    session: AsyncSession, principal: Principal, entitlement: Entitlement, outcome: IssueOutcome, *, source: str
) -> EntitlementOut:
    """Record the provider's answer to a retry: accepted, it stays submitted; declined, it fails again."""
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
            source=source,
        )
    return await get_entitlement(session, entitlement.id)


async def batch_of(session: AsyncSession, entitlement_id: uuid.UUID) -> uuid.UUID:
    """The batch an entitlement belongs to (read without a lock: it never changes)."""
    found = await EntitlementRepository(session).get(entitlement_id)
    if found is None:
        raise UnknownEntitlement("Entitlement not found.")
    return found.batch_id


async def cancellable(session: AsyncSession, entitlement_id: uuid.UUID) -> tuple[Entitlement, Programme]:
    """The entitlement, locked, if it may be cancelled: before issue (a failed one included), or an
    unredeemed voucher. The caller then asks the provider if the batch is released, and ends with `cancel`.

    The entitlement row lock orders a cancel against a concurrent retry, which then finds it cancelled (or,
    retried first, it is cancelled as the submitted entitlement it has become).
    """
    entitlement = await _lock(session, entitlement_id)
    programme = await _programme(session, entitlement)
    if entitlement.status not in (*OPEN_STATUSES, "failed") and not _unredeemed_voucher(entitlement, programme):
        raise Conflict(f"A {entitlement.status} entitlement cannot be cancelled.")
    return entitlement, programme


async def cancel(
    session: AsyncSession, principal: Principal, entitlement: Entitlement, programme: Programme, batch_status: str
) -> EntitlementOut:
    """→ cancelled, with what goes back to the budget. A failed entitlement's reservation went back to
    available when it failed, and a draft's was never made: their cancel posts nothing."""
    previous = entitlement.status
    if _unredeemed_voucher(entitlement, programme):
        await postings.return_entitlement(session, programme, entitlement, entitlement.amount_minor, "cancelled")
    elif batch_status != "draft" and previous != "failed":
        await postings.release_on_cancel(session, programme, entitlement)
    entitlement.status = "cancelled"
    await _changed(session, entitlement, previous, principal.name, None, principal=principal)
    return await get_entitlement(session, entitlement.id)


def _unredeemed_voucher(entitlement: Entitlement, programme: Programme) -> bool:
    return (
        entitlement.status == "issued"
        and programme.delivery_mechanism in VOUCHER_MECHANISMS
        and entitlement.redeemed_minor == 0
    )


@dataclass(frozen=True)
class BatchTerms:
    """What a batch's entitlements are made of: its keys and how each is priced, as min(base + per_member ×
    household size, cap) unless a flat amount is set."""

    batch_id: uuid.UUID
    programme_id: uuid.UUID
    cycle: str
    currency: str
    flat: int | None
    base: int | None
    per_member: int | None
    cap: int | None

    def params(self) -> dict[str, Any]:
        return {
            "batch": self.batch_id,
            "programme": self.programme_id,
            "cycle": self.cycle,
            "currency": self.currency,
            "flat": self.flat,
            "base": self.base,
            "per_member": self.per_member,
            "cap": self.cap,
        }


async def create_pending(session: AsyncSession, terms: BatchTerms, beneficiary_ids: Sequence[uuid.UUID] | None) -> None:
    """A new batch's pending entitlements: one per eligible beneficiary (the listed ones, or everyone enrolled)
    not already paid in the programme cycle."""
    await EntitlementRepository(session).create_pending(terms.params(), beneficiary_ids)


async def freeze_pending(session: AsyncSession, terms: BatchTerms, actor: str, *, reprice: bool) -> list[uuid.UUID]:
    """At submit: cancel the pending entitlements of people no longer active (returned) and, for a batch
    priced by rule, price the rest from current household sizes."""
    repo = EntitlementRepository(session)
    gone = await repo.cancel_inactive(terms.batch_id, actor)
    if reprice:
        await repo.reprice(terms.params())
    return gone


async def cancel_pending(session: AsyncSession, batch_id: uuid.UUID, actor: str, reason: str) -> tuple[int, int]:
    """A batch rejected or cancelled: every still-pending entitlement is cancelled → (how many, their total)."""
    return await EntitlementRepository(session).cancel_pending(batch_id, actor, reason)


async def pending_totals(session: AsyncSession, batch_id: uuid.UUID) -> tuple[int, int]:
    return await EntitlementRepository(session).pending_totals(batch_id)


async def counts_by_batch(session: AsyncSession, batch_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    return await EntitlementRepository(session).counts_by_batch(batch_ids)


@dataclass(frozen=True, slots=True)
class SignedVoucher:
    """An issued paper voucher as its sheet shows it."""

    id: uuid.UUID
    beneficiary_id: uuid.UUID
    code: str
    token: str
    amount_minor: int
    currency: str
    expires_at: datetime


async def printable_vouchers(
    session: AsyncSession, batch_id: uuid.UUID, *, after_id: uuid.UUID | None, limit: int
) -> list[SignedVoucher]:
    """Up to `limit` of the batch's issued paper vouchers, in id order after `after_id`."""
    rows = await EntitlementRepository(session).printable_vouchers(batch_id, after_id, limit)
    return [SignedVoucher(*row) for row in rows]


async def to_follow_up(session: AsyncSession, batch_id: uuid.UUID) -> list[uuid.UUID]:
    """Who a follow-up of the batch may pay again: the beneficiaries of its failed and expired entitlements."""
    return await EntitlementRepository(session).to_follow_up(batch_id)


async def claim_pending(session: AsyncSession, batch_id: uuid.UUID, limit: int) -> list[Entitlement]:
    """The issuance worker's next chunk of the batch, locked; rows another lane holds are skipped."""
    return await EntitlementRepository(session).claim_pending(batch_id, limit)


async def claim_overdue(session: AsyncSession, after_seconds: float, limit: int) -> list[tuple[uuid.UUID, str]]:
    """Submitted entitlements not heard of for `after_seconds`, as (id, provider), stamped as asked now so
    each is asked at most once per period."""
    rows = await EntitlementRepository(session).claim_overdue(after_seconds, limit)
    return [(row.id, row.provider) for row in rows]


EXPIRY_CHUNK = 200
EXPIRY_SOURCE = "voucher-expiry"


async def expire_due_vouchers(
    session_factory: async_sessionmaker[AsyncSession], *, limit: int = EXPIRY_CHUNK
) -> tuple[int, int]:
    """Expire one chunk of due vouchers in one transaction → (found due, expired by this call).

    A voucher the provider expired (or a person cancelled) meanwhile is a no-op of the state machine.
    """
    async with session_factory.begin() as session:
        due = await EntitlementRepository(session).due_vouchers(limit)
        expired = 0
        for entitlement_id in due:
            transition = await mark_expired(session, entitlement_id, source=EXPIRY_SOURCE)
            expired += transition.applied
    return len(due), expired


async def get_entitlement(session: AsyncSession, entitlement_id: uuid.UUID) -> EntitlementOut:
    repo = EntitlementRepository(session)
    entitlement = await repo.get(entitlement_id)
    if entitlement is None:
        raise UnknownEntitlement("Entitlement not found.")
    return entitlement_out(entitlement, await repo.history(entitlement_id))


def entitlement_out(entitlement: Entitlement, history: Sequence[EntitlementEvent] | None = None) -> EntitlementOut:
    changes = None
    if history is not None:
        changes = [StatusChange(status="pending", at=entitlement.created_at, actor=None, detail=None)]
        changes += [
            StatusChange(status=event.to_status, at=event.occurred_at, actor=event.actor, detail=event.detail)
            for event in history
        ]
    return EntitlementOut.of(entitlement, changes)


async def _lock(session: AsyncSession, entitlement_id: uuid.UUID) -> Entitlement:
    entitlement = await EntitlementRepository(session).get(entitlement_id, for_update=True, populate_existing=True)
    if entitlement is None:
        raise UnknownEntitlement("Entitlement not found.")
    return entitlement


async def _programme(session: AsyncSession, entitlement: Entitlement) -> Programme:
    programme = await EntitlementRepository(session).programme(entitlement.programme_id)
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
    """History row, audit event and the batch-settled hook for one transition, in the caller's transaction."""
    repo = EntitlementRepository(session)
    repo.stamp_updated(entitlement)
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
        await _settled(session, entitlement.batch_id)


def _summary(entitlement: Entitlement) -> dict[str, Any]:
    return {
        "status": entitlement.status,
        "amount_minor": entitlement.amount_minor,
        "redeemed_minor": entitlement.redeemed_minor,
        "provider_ref": entitlement.provider_ref,
    }


async def of_beneficiary(session: AsyncSession, beneficiary_id: uuid.UUID) -> list[EntitlementOut]:
    """Every entitlement of one person, oldest first (what a request for their data shows)."""
    return [EntitlementOut.of(e) for e in await EntitlementRepository(session).of_beneficiary(beneficiary_id)]


async def can_still_move(session: AsyncSession, beneficiary_id: uuid.UUID) -> bool:
    """Whether one of the person's entitlements is pending or submitted."""
    return await EntitlementRepository(session).open_of_beneficiary(beneficiary_id) > 0
