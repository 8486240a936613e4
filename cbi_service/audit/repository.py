from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ARRAY, Text, Uuid, bindparam, func, or_, select, text

from cbi_service.audit.models import AuditEvent
from cbi_service.kit.repository import Repository

_INSERT_MANY = text(
    """
    INSERT INTO audit_events (id, actor_id, actor_name, action, resource_type, resource_id, before, after, request_id)
    SELECT x.id, x.actor_id, x.actor_name, x.action, x.resource_type, x.resource_id, x.before::jsonb, x.after::jsonb,
           x.request_id
      FROM unnest(:ids, :actor_ids, :actor_names, :request_ids, :actions, :types, :resources, :befores, :afters)
           AS x(id, actor_id, actor_name, request_id, action, resource_type, resource_id, before, after)
    """
).bindparams(
    bindparam("ids", type_=ARRAY(Uuid())),
    bindparam("actor_ids", type_=ARRAY(Uuid())),
    *(
        bindparam(name, type_=ARRAY(Text()))
        for name in ("actor_names", "request_ids", "actions", "types", "resources", "befores", "afters")
    ),
)
"""One row per element of the arrays: (id, actor id, actor name, request id, action, resource type, resource
id, before, after)."""


class AuditRepository(Repository[AuditEvent]):
    model = AuditEvent

    async def add_many(
        self,
        rows: Sequence[tuple[uuid.UUID, uuid.UUID | None, str, str | None, str, str, str, str | None, str | None]],
    ) -> None:
        """Events in one statement over arrays: (id, actor id, actor name, request id, action, resource type,
        resource id, before, after) with before and after as JSON text. A row per execute (executemany) costs
        the server a round of parse, bind and execute per event, more than the insert itself."""
        if not rows:
            return
        names = ("ids", "actor_ids", "actor_names", "request_ids", "actions", "types", "resources", "befores", "afters")
        columns = (list(column) for column in zip(*rows, strict=True))
        await self.session.execute(_INSERT_MANY, dict(zip(names, columns, strict=True)))

    async def about_beneficiary(self, beneficiary_id: uuid.UUID) -> Sequence[AuditEvent]:
        """Every event about a person: changes of their record, and the responses that showed it in full."""
        ident = str(beneficiary_id)
        mentioned = AuditEvent.after["beneficiary_ids"].op("@>")(func.jsonb_build_array(ident))
        stmt = (
            select(AuditEvent)
            .where(
                or_(
                    (AuditEvent.resource_type == "beneficiary") & (AuditEvent.resource_id == ident),
                    (AuditEvent.action == "beneficiary.personal_data_viewed") & mentioned,
                )
            )
            .order_by(AuditEvent.id)
        )
        return (await self.session.execute(stmt)).scalars().all()

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
        return await self.page(stmt, after_id, limit)
