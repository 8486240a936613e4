from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import Response

from cbi_service.auth.dependencies import READ_ANY, require_roles
from cbi_service.auth.roles import Principal, Role
from cbi_service.batches import service
from cbi_service.batches.schemas import ApprovalCreate, BatchCreate, BatchOut, BatchStatus, FollowUpCreate
from cbi_service.kit.db import SessionDep
from cbi_service.kit.idempotency import IdempotencyDep, RequiredIdempotencyDep
from cbi_service.kit.pagination import Page, PageDep, page_of
from cbi_service.kit.routing import StorableTextRoute

router = APIRouter(prefix="/v1/payment-batches", tags=["payment batches"], route_class=StorableTextRoute)
Officer = Annotated[Principal, Depends(require_roles(Role.programme_officer))]
Approver = Annotated[Principal, Depends(require_roles(Role.approver))]
Finance = Annotated[Principal, Depends(require_roles(Role.finance))]
Reader = Annotated[Principal, Depends(require_roles(*READ_ANY))]


@router.post("", status_code=201, response_model=BatchOut)
async def create_batch(body: BatchCreate, session: SessionDep, principal: Officer, idem: IdempotencyDep) -> Response:
    """A draft with one pending entitlement per eligible beneficiary; `excluded` says who was left out."""
    return await idem.run(body, lambda: service.create_batch(session, principal, body), status_code=201)


@router.get("", response_model=Page[BatchOut])
async def list_batches(
    session: SessionDep,
    _: Reader,
    page: PageDep,
    programme_id: uuid.UUID | None = None,
    status: Annotated[BatchStatus | None, Query()] = None,
) -> Page[BatchOut]:
    rows, views = await service.list_batches(
        session,
        after_id=page.after_id(),
        limit=page.limit,
        programme_id=programme_id,
        status=status.value if status else None,
    )
    cursor = page_of(rows, page.limit, lambda b: [b.id])[1]
    return Page(items=views, next_cursor=cursor)


@router.get("/{batch_id}", response_model=BatchOut)
async def get_batch(batch_id: uuid.UUID, session: SessionDep, _: Reader) -> BatchOut:
    return await service.get_batch(session, batch_id)


@router.post("/{batch_id}/submit", response_model=BatchOut)
async def submit_batch(batch_id: uuid.UUID, session: SessionDep, principal: Officer, idem: IdempotencyDep) -> Response:
    """Freeze the list and amounts; 409 if the total exceeds the programme's available balance."""
    return await idem.run({}, lambda: service.submit_batch(session, principal, batch_id))


@router.post("/{batch_id}/approvals", response_model=BatchOut)
async def decide_batch(
    batch_id: uuid.UUID, body: ApprovalCreate, session: SessionDep, principal: Approver, idem: IdempotencyDep
) -> Response:
    """One distinct approver's decision (never the creator's); the last approval reserves the total."""
    return await idem.run(body, lambda: service.decide_batch(session, principal, batch_id, body))


@router.post("/{batch_id}/release", response_model=BatchOut)
async def release_batch(
    batch_id: uuid.UUID, session: SessionDep, principal: Finance, idem: RequiredIdempotencyDep
) -> Response:
    """Hand the batch to the issuance worker; the releaser has neither created nor approved it."""
    return await idem.run({}, lambda: service.release_batch(session, principal, batch_id))


@router.post("/{batch_id}/cancel", response_model=BatchOut)
async def cancel_batch(batch_id: uuid.UUID, session: SessionDep, principal: Officer, idem: IdempotencyDep) -> Response:
    """Before release only; an approved batch's reservation goes back to the available budget."""
    return await idem.run({}, lambda: service.cancel_batch(session, principal, batch_id))


@router.post("/{batch_id}/follow-up", status_code=201, response_model=BatchOut)
async def follow_up_batch(
    batch_id: uuid.UUID,
    session: SessionDep,
    principal: Officer,
    idem: IdempotencyDep,
    body: Annotated[FollowUpCreate | None, Body()] = None,
) -> Response:
    """A new draft for the failed and expired entitlements whose beneficiaries are still active."""
    name = body.name if body else None
    return await idem.run(
        body or {}, lambda: service.follow_up_batch(session, principal, batch_id, name), status_code=201
    )
