"""The audit trail's read API. Only auditors and admins read it: app.py mounts this router behind that role
check, as the audit domain sits below auth (auth's service records its own changes in the trail)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from cbi_service.audit.repository import AuditRepository
from cbi_service.audit.schemas import AuditEventOut
from cbi_service.kit.db import SessionDep
from cbi_service.kit.pagination import Page, PageDep, page_of
from cbi_service.kit.routing import StorableTextRoute
from cbi_service.kit.timeutil import AwareDatetimeQuery

router = APIRouter(prefix="/v1/audit-events", tags=["audit"], route_class=StorableTextRoute)


@router.get("", response_model=Page[AuditEventOut])
async def list_audit_events(
    session: SessionDep,
    page: PageDep,
    actor_id: uuid.UUID | None = None,
    resource_type: Annotated[str | None, Query(max_length=100)] = None,
    resource_id: Annotated[str | None, Query(max_length=100)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    occurred_from: Annotated[AwareDatetimeQuery | None, Query(alias="from")] = None,
    occurred_to: Annotated[AwareDatetimeQuery | None, Query(alias="to")] = None,
) -> Page[AuditEventOut]:
    rows = await AuditRepository(session).search(
        actor_id=actor_id,
        resource_type=resource_type,
        resource_id=resource_id,
        action=action,
        occurred_from=occurred_from,
        occurred_to=occurred_to,
        after_id=page.after_id(),
        limit=page.limit,
    )
    items, cursor = page_of(rows, page.limit, lambda e: [e.id])
    return Page(items=[AuditEventOut.model_validate(e) for e in items], next_cursor=cursor)
