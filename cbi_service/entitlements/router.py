from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from cbi_service.auth.dependencies import READ_ANY, require_roles
from cbi_service.auth.roles import Principal
from cbi_service.entitlements import service
from cbi_service.entitlements.repository import EntitlementRepository
from cbi_service.entitlements.schemas import EntitlementOut, EntitlementStatus
from cbi_service.kit.db import SessionDep
from cbi_service.kit.pagination import Page, PageDep, page_of
from cbi_service.kit.routing import StorableTextRoute

router = APIRouter(prefix="/v1/entitlements", tags=["entitlements"], route_class=StorableTextRoute)
Reader = Annotated[Principal, Depends(require_roles(*READ_ANY))]


@router.get("", response_model=Page[EntitlementOut])
async def list_entitlements(
    session: SessionDep,
    _: Reader,
    page: PageDep,
    batch_id: uuid.UUID | None = None,
    beneficiary_id: uuid.UUID | None = None,
    status: Annotated[EntitlementStatus | None, Query()] = None,
) -> Page[EntitlementOut]:
    rows = await EntitlementRepository(session).list(
        after_id=page.after_id(),
        limit=page.limit,
        batch_id=batch_id,
        beneficiary_id=beneficiary_id,
        status=status.value if status else None,
    )
    items, cursor = page_of(rows, page.limit, lambda e: [e.id])
    return Page(items=[service.entitlement_out(e) for e in items], next_cursor=cursor)


@router.get("/{entitlement_id}", response_model=EntitlementOut)
async def get_entitlement(entitlement_id: uuid.UUID, session: SessionDep, _: Reader) -> EntitlementOut:
    return await service.get_entitlement(session, entitlement_id)
