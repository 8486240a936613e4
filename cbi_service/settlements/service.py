"""Merchant settlements: what the agency owes a merchant for its redeemed paper vouchers, paid through the
same maker-checker as payment batches (contract §14).

draft (every accepted redemption no other live settlement holds) → submit → pending_approval → distinct
approvers, never the creator → approved → release, by someone who neither created nor approved it →
released: the pain.001 credit transfer can be fetched and sent to the bank → paid, with the bank's
reference, which posts each programme's payable → bank in the ledger; or refused, with the bank's reason, when
the bank refused the file. A draft, pending or approved settlement can be cancelled, and a rejection ends one;
whichever way one ends unpaid, its redemptions are unsettled again.
Every transition locks the settlement row first and then checks its status, so of two concurrent ones only
the first finds the status it needs.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.accounting import postings
from cbi_service.audit.service import record_audit
from cbi_service.auth.roles import Principal
from cbi_service.kit.bank_accounts import SettlementAccount
from cbi_service.kit.errors import Conflict, Forbidden, NotFound, UnprocessableEntity
from cbi_service.merchants import service as merchants
from cbi_service.programmes.models import Programme
from cbi_service.programmes.service import get_programme
from cbi_service.settlements import pain001
from cbi_service.settlements.models import UNRELEASED_STATUSES, MerchantSettlement, SettlementApproval
from cbi_service.settlements.repository import SettlementRepository
from cbi_service.settlements.schemas import (
    SettlementCreate,
    SettlementDecision,
    SettlementOut,
    SettlementPaid,
    SettlementRefused,
)


async def create_settlement(session: AsyncSession, principal: Principal, data: SettlementCreate) -> SettlementOut:
    try:
        merchant = await merchants.merchant_ref(session, data.merchant_id)
    except NotFound:
        raise UnprocessableEntity(
            "No such merchant.", errors=[{"field": "merchant_id", "message": "no such merchant"}]
        ) from None
    repo = SettlementRepository(session)
    settlement = await repo.add(
        MerchantSettlement(
            merchant_id=merchant.id,
            currency=merchant.currency,
            total_minor=0,
            redemption_count=0,
            created_by=principal.id,
        )
    )
    settlement.redemption_count, settlement.total_minor = await repo.claim_unsettled(settlement)
    if settlement.redemption_count == 0:
        raise Conflict("The merchant has no unsettled redemptions.")
    await session.flush()
    await _audit(session, principal, "merchant_settlement.created", settlement, None)
    return await _view(session, settlement)


async def submit_settlement(session: AsyncSession, principal: Principal, settlement_id: uuid.UUID) -> SettlementOut:
    """draft → pending_approval, needing as many approvers as the strictest of its programmes' bands asks."""
    settlement = await _locked(session, settlement_id, "draft")
    before = settlement.summary()
    programmes = await _programmes_owing(session, settlement)
    settlement.approvals_needed = max(p.approvals_needed(settlement.total_minor) for p, _ in programmes)
    _move(settlement, "pending_approval")
    settlement.submitted_by = principal.id
    settlement.submitted_at = _now()
    await session.flush()
    await _audit(session, principal, "merchant_settlement.submitted", settlement, before)
    return await _view(session, settlement)


async def decide_settlement(
    session: AsyncSession, principal: Principal, settlement_id: uuid.UUID, data: SettlementDecision
) -> SettlementOut:
    """One approver's decision; a reject ends the settlement, the last approve approves it."""
    repo = SettlementRepository(session)
    settlement = await _locked(session, settlement_id, "pending_approval")
    if principal.id == settlement.created_by:
        raise Forbidden("The settlement's creator cannot approve or reject it.")
    before = settlement.summary()
    try:
        async with session.begin_nested():
            await repo.add_approval(
                SettlementApproval(
                    settlement_id=settlement.id,
                    approver_id=principal.id,
                    approver_name=principal.name,
                    decision=data.decision,
                    comment=data.comment,
                )
            )
    except IntegrityError as exc:
        raise Conflict("This approver has already decided on the settlement.") from exc
    await record_audit(
        session,
        principal,
        f"merchant_settlement.{data.decision}",
        "merchant_settlement",
        settlement.id,
        None,
        {"decision": data.decision, "comment": data.comment},
    )
    if data.decision == "reject":
        await repo.release_items(settlement.id)
        _move(settlement, "rejected")
        settlement.closed_at = _now()
    else:
        approvals = (await repo.approvals([settlement.id]))[settlement.id]
        if sum(1 for row in approvals if row.decision == "approve") >= (settlement.approvals_needed or 1):
            _move(settlement, "approved")
            settlement.approved_at = _now()
    await session.flush()
    if settlement.status != before["status"]:
        await _audit(session, principal, f"merchant_settlement.{settlement.status}", settlement, before)
    return await _view(session, settlement)


async def release_settlement(
    session: AsyncSession, principal: Principal, settlement_id: uuid.UUID, account: SettlementAccount | None
) -> SettlementOut:
    """approved → released: its payment file may now go to the bank."""
    if account is None:
        raise Conflict("No settlement account is configured (CBI_SETTLEMENT_ACCOUNT): there is nothing to pay from.")
    repo = SettlementRepository(session)
    settlement = await _locked(session, settlement_id, "approved")
    approvers = {row.approver_id for row in (await repo.approvals([settlement.id]))[settlement.id]}
    if principal.id == settlement.created_by or principal.id in approvers:
        raise Forbidden("Whoever created or approved a settlement cannot release it.")
    before = settlement.summary()
    _move(settlement, "released")
    settlement.released_by = principal.id
    settlement.released_at = _now()
    await session.flush()
    await _audit(session, principal, "merchant_settlement.released", settlement, before)
    return await _view(session, settlement)


async def mark_paid(
    session: AsyncSession, principal: Principal, settlement_id: uuid.UUID, data: SettlementPaid
) -> SettlementOut:
    """released → paid: the bank made the transfer; each programme's payable moves to its bank account."""
    settlement = await _locked(session, settlement_id, "released")
    before = settlement.summary()
    payments = [postings.MerchantPayment(p, amount) for p, amount in await _programmes_owing(session, settlement)]
    await postings.pay_merchant(session, payments, settlement.merchant_id, settlement.id, data.bank_reference)
    _move(settlement, "paid")
    settlement.bank_reference = data.bank_reference
    settlement.paid_by = principal.id
    settlement.paid_at = _now()
    settlement.closed_at = settlement.paid_at
    await session.flush()
    await _audit(session, principal, "merchant_settlement.paid", settlement, before, bank_reference=data.bank_reference)
    return await _view(session, settlement)


async def mark_refused(
    session: AsyncSession, principal: Principal, settlement_id: uuid.UUID, data: SettlementRefused
) -> SettlementOut:
    """released → refused: the bank refused the payment file (or rejected its transfer before paying it), so
    nothing was paid and nothing is posted; its redemptions are unsettled again, for a new settlement through
    the whole maker-checker. Its payment file is not served again: it must never reach the bank twice."""
    repo = SettlementRepository(session)
    settlement = await _locked(session, settlement_id, "released")
    before = settlement.summary()
    await repo.release_items(settlement.id)
    _move(settlement, "refused")
    settlement.refusal_reason = data.reason
    settlement.refused_by = principal.id
    settlement.closed_at = _now()
    await session.flush()
    await _audit(session, principal, "merchant_settlement.refused", settlement, before, refusal_reason=data.reason)
    return await _view(session, settlement)


async def cancel_settlement(session: AsyncSession, principal: Principal, settlement_id: uuid.UUID) -> SettlementOut:
    """Before release only: its redemptions are unsettled again."""
    repo = SettlementRepository(session)
    settlement = await repo.require(settlement_id, for_update=True, populate_existing=True)
    if settlement.status not in UNRELEASED_STATUSES:
        raise Conflict(f"A {settlement.status} settlement cannot be cancelled.")
    before = settlement.summary()
    await repo.release_items(settlement.id)
    _move(settlement, "cancelled")
    settlement.cancelled_by = principal.id
    settlement.closed_at = _now()
    await session.flush()
    await _audit(session, principal, "merchant_settlement.cancelled", settlement, before)
    return await _view(session, settlement)


async def payment_file(
    session: AsyncSession, settlement_id: uuid.UUID, account: SettlementAccount | None, initiating_party: str
) -> bytes:
    """The settlement's pain.001, once it is released (and after it is paid, for the record)."""
    settlement = await SettlementRepository(session).require(settlement_id)
    if settlement.status not in ("released", "paid") or settlement.released_at is None:
        raise Conflict(f"The settlement is {settlement.status}: its payment file exists once it is released.")
    if account is None:
        raise Conflict("No settlement account is configured (CBI_SETTLEMENT_ACCOUNT): there is nothing to pay from.")
    merchant = await merchants.get_merchant(session, settlement.merchant_id)
    payout = merchant.payout
    transfer = pain001.CreditTransfer(
        settlement_id=settlement.id,
        created_at=settlement.released_at,
        execution_date=settlement.released_at.date(),
        amount_minor=settlement.total_minor,
        currency=settlement.currency,
        redemption_count=settlement.redemption_count,
        initiating_party=initiating_party,
        debtor=account,
        payee=pain001.Payee(
            name=payout.account_name,
            country=merchant.country,
            iban=payout.iban,
            bic=payout.bic,
            account_number=payout.account_number,
            bank_code=payout.bank_code,
        ),
    )
    try:
        return pain001.render(transfer)
    except pain001.InvalidPaymentFile as exc:  # never served: a bank would refuse it
        raise Conflict(
            "The payment file does not validate against the pain.001 schema.", extra={"why": str(exc)}
        ) from exc


async def get_settlement(session: AsyncSession, settlement_id: uuid.UUID) -> SettlementOut:
    return await _view(session, await SettlementRepository(session).require(settlement_id))


async def list_settlements(
    session: AsyncSession,
    *,
    after_id: uuid.UUID | None,
    limit: int,
    merchant_id: uuid.UUID | None,
    status: str | None,
) -> tuple[Sequence[MerchantSettlement], list[SettlementOut]]:
    """The page's rows (for the cursor) and their views."""
    repo = SettlementRepository(session)
    rows = await repo.list(after_id=after_id, limit=limit, merchant_id=merchant_id, status=status)
    shown = list(rows[:limit])
    ids = [s.id for s in shown]
    approvals = await repo.approvals(ids)
    totals = await repo.programme_totals(ids)
    return rows, [SettlementOut.of(s, programmes=totals[s.id], approvals=approvals[s.id]) for s in shown]


async def _view(session: AsyncSession, settlement: MerchantSettlement) -> SettlementOut:
    repo = SettlementRepository(session)
    return SettlementOut.of(
        settlement,
        programmes=(await repo.programme_totals([settlement.id]))[settlement.id],
        approvals=(await repo.approvals([settlement.id]))[settlement.id],
    )


async def _programmes_owing(session: AsyncSession, settlement: MerchantSettlement) -> list[tuple[Programme, int]]:
    """Each programme whose payable owes part of the settlement, with that part (minor units)."""
    totals = (await SettlementRepository(session).programme_totals([settlement.id]))[settlement.id]
    return [(await get_programme(session, programme_id), amount) for programme_id, amount in totals]


async def _locked(session: AsyncSession, settlement_id: uuid.UUID, expected: str) -> MerchantSettlement:
    settlement = await SettlementRepository(session).require(settlement_id, for_update=True, populate_existing=True)
    if settlement.status != expected:
        raise Conflict(f"The settlement is {settlement.status}, not {expected}.")
    return settlement


async def _audit(
    session: AsyncSession,
    principal: Principal,
    action: str,
    settlement: MerchantSettlement,
    before: dict[str, object] | None,
    **noted: object,
) -> None:
    """The transition's audit event: the settlement's summary before and after, with what was `noted` (the
    bank's reference or reason) after."""
    after = settlement.summary() | noted
    await record_audit(session, principal, action, "merchant_settlement", settlement.id, before, after)


def _move(settlement: MerchantSettlement, status: str) -> None:
    settlement.status = status
    settlement.updated_at = _now()


def _now() -> datetime:
    return datetime.now(UTC)
