from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from cbi_service.auth.dependencies import require_roles
from cbi_service.auth.roles import Principal, Role
from cbi_service.kit.db import SessionDep
from cbi_service.kit.errors import NotFound
from cbi_service.kit.idempotency import IdempotencyDep, RequiredIdempotencyDep
from cbi_service.kit.pagination import Page, PageDep, page_of
from cbi_service.kit.routing import StorableTextRoute
from cbi_service.settlements import service
from cbi_service.settlements.schemas import (
    SettlementCreate,
    SettlementDecision,
    SettlementOut,
    SettlementPaid,
    SettlementRefused,
)

router = APIRouter(prefix="/v1/merchant-settlements", tags=["merchant settlements"], route_class=StorableTextRoute)
Finance = Annotated[Principal, Depends(require_roles(Role.finance))]
Approver = Annotated[Principal, Depends(require_roles(Role.approver))]
Auditable = Annotated[Principal, Depends(require_roles(Role.finance, Role.auditor))]
#: A merchant's key reads its own merchant's settlements (what it was paid), and no other's.
Reader = Annotated[
    Principal, Depends(require_roles(Role.admin, Role.finance, Role.approver, Role.auditor, Role.merchant))
]
SettlementStatus = Literal[
    "draft", "pending_approval", "approved", "released", "paid", "rejected", "cancelled", "refused"
]


@router.post("", status_code=201, response_model=SettlementOut)
async def create_settlement(
    body: SettlementCreate, session: SessionDep, principal: Finance, idem: IdempotencyDep
) -> Response:
    """A draft settlement of every redemption accepted at the merchant that no other settlement (not
    rejected or cancelled) holds; 409 when there is none."""
    return await idem.run(body, lambda: service.create_settlement(session, principal, body), status_code=201)


@router.post("/{settlement_id}/submit", response_model=SettlementOut)
async def submit_settlement(
    settlement_id: uuid.UUID, session: SessionDep, principal: Finance, idem: IdempotencyDep
) -> Response:
    """draft → pending_approval; the approvals needed are the strictest of its programmes' bands."""
    return await idem.run({}, lambda: service.submit_settlement(session, principal, settlement_id))


@router.post("/{settlement_id}/approvals", response_model=SettlementOut)
async def decide_settlement(
    settlement_id: uuid.UUID, body: SettlementDecision, session: SessionDep, principal: Approver, idem: IdempotencyDep
) -> Response:
    """One distinct approver's decision (never the creator's); a reject ends it, the last approve approves it."""
    return await idem.run(body, lambda: service.decide_settlement(session, principal, settlement_id, body))


@router.post("/{settlement_id}/release", response_model=SettlementOut)
async def release_settlement(
    request: Request, settlement_id: uuid.UUID, session: SessionDep, principal: Finance, idem: RequiredIdempotencyDep
) -> Response:
    """approved → released, by someone who neither created nor approved it: its pain.001 can be fetched
    (Idempotency-Key required, as for batches)."""
    account = request.app.state.settings.settlement_account
    return await idem.run({}, lambda: service.release_settlement(session, principal, settlement_id, account))


@router.get(
    "/{settlement_id}/pain001.xml",
    response_class=Response,
    responses={200: {"content": {"application/xml": {}}, "description": "ISO 20022 pain.001.001.03"}},
)
async def settlement_payment_file(
    request: Request, settlement_id: uuid.UUID, session: SessionDep, _: Auditable
) -> Response:
    """The released settlement's credit transfer to the merchant, as ISO 20022 pain.001.001.03, validated
    against the official schema; its end-to-end id is the settlement's id."""
    settings = request.app.state.settings
    document = await service.payment_file(session, settlement_id, settings.settlement_account, settings.agency_name)
    return Response(
        document,
        media_type="application/xml",
        headers={"Content-Disposition": f'attachment; filename="settlement-{settlement_id}-pain001.xml"'},
    )


@router.post("/{settlement_id}/paid", response_model=SettlementOut)
async def mark_settlement_paid(
    settlement_id: uuid.UUID, body: SettlementPaid, session: SessionDep, principal: Finance, idem: IdempotencyDep
) -> Response:
    """released → paid with the bank's reference: the ledger moves each programme's payable to the merchant
    into its bank account, once."""
    return await idem.run(body, lambda: service.mark_paid(session, principal, settlement_id, body))


@router.post("/{settlement_id}/refused", response_model=SettlementOut)
async def mark_settlement_refused(
    settlement_id: uuid.UUID, body: SettlementRefused, session: SessionDep, principal: Finance, idem: IdempotencyDep
) -> Response:
    """released → refused with the bank's reason: the bank refused the payment file, nothing was paid or
    posted, and the redemptions are unsettled again, to be settled anew (its payment file is served no more)."""
    return await idem.run(body, lambda: service.mark_refused(session, principal, settlement_id, body))


@router.post("/{settlement_id}/cancel", response_model=SettlementOut)
async def cancel_settlement(
    settlement_id: uuid.UUID, session: SessionDep, principal: Finance, idem: IdempotencyDep
) -> Response:
    """Before release only; its redemptions are unsettled again."""
    return await idem.run({}, lambda: service.cancel_settlement(session, principal, settlement_id))


@router.get("", response_model=Page[SettlementOut])
async def list_settlements(
    session: SessionDep,
    principal: Reader,
    page: PageDep,
    merchant_id: uuid.UUID | None = None,
    status: Annotated[SettlementStatus | None, Query()] = None,
) -> Page[SettlementOut]:
    """Settlements, oldest first. A merchant's key lists its own merchant's only."""
    if principal.merchant_id is not None:
        if merchant_id is not None and merchant_id != principal.merchant_id:
            return Page(items=[], next_cursor=None)
        merchant_id = principal.merchant_id
    rows, views = await service.list_settlements(
        session, after_id=page.after_id(), limit=page.limit, merchant_id=merchant_id, status=status
    )
    _, cursor = page_of(rows, page.limit, lambda s: [s.id])
    return Page(items=[_as_seen_by(principal, view) for view in views], next_cursor=cursor)


@router.get("/{settlement_id}", response_model=SettlementOut)
async def get_settlement(settlement_id: uuid.UUID, session: SessionDep, principal: Reader) -> SettlementOut:
    settlement = await service.get_settlement(session, settlement_id)
    if principal.merchant_id is not None and principal.merchant_id != settlement.merchant_id:
        raise NotFound("Merchant settlement not found.")
    return _as_seen_by(principal, settlement)


def _as_seen_by(principal: Principal, settlement: SettlementOut) -> SettlementOut:
    """A merchant sees what it is paid, not who at the agency decided it nor their comments."""
    if principal.merchant_id is None:
        return settlement
    return settlement.model_copy(update={"approvals": []})
