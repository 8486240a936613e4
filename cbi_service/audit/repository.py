from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.audit.models import AuditEvent

AUDIT_EVENTS = cast(Table, AuditEvent.__table__)


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, event: AuditEvent) -> None:
        self.session.add(event)
        await self.session.flush()

    async def add_many(self, rows: Sequence[dict[str, Any]]) -> None:
        """One bulk INSERT (a single pipelined executemany) instead of a unit-of-work flush per event; through
        the table (Core), as the ORM's bulk INSERT costs several times more per row for the same statement."""
        if rows:
            await self.session.execute(insert(AUDIT_EVENTS), list(rows))

    async def search(
        self,
        *,
        actor_id: uuid.UUID | None,
        resource_type: str | None,
        resource_id: str | None,
        action: str | None,
        occurred_from: datetime | None,
        occurred_to: datetime | None,
        after_id: uuid.UUID | None,
        limit: int,
    ) -> Sequence[AuditEvent]:
        stmt = select(AuditEvent)
        if actor_id is not None:
            stmt = stmt.where(AuditEvent.actor_id == actor_id)
        if resource_type is not None:
            stmt = stmt.where(AuditEvent.resource_type == resource_type)
        if resource_id is not None:
            stmt = stmt.where(AuditEvent.resource_id == resource_id)
        if action is not None:
            stmt = stmt.where(AuditEvent.action == action)
        if occurred_from is not None:
            stmt = stmt.where(AuditEvent.occurred_at >= occurred_from)
        if occurred_to is not None:
            stmt = stmt.where(AuditEvent.occurred_at < occurred_to)
        if after_id is not None:
            stmt = stmt.where(AuditEvent.id > after_id)
        stmt = stmt.order_by(AuditEvent.id).limit(limit + 1)
        return (await self.session.execute(stmt)).scalars().all()
