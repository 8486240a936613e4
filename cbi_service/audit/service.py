"""Audit trail: every state change records an event inside the transaction that makes the change."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.audit.models import AuditEvent
from cbi_service.audit.repository import AuditRepository
from cbi_service.kit.ids import new_id

SYSTEM_ACTOR = "system"
_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class Actor(Protocol):
    """Who acted, as the trail names them (auth's Principal is one): the trail knows no API keys, so that
    auth can record its own changes here."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def name(self) -> str: ...


async def record_audit(
    session: AsyncSession,
    principal: Actor | None,
    action: str,
    resource_type: str,
    resource_id: object,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """`principal=None` means the service itself acted (worker, scheduler, provider webhook)."""
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    await AuditRepository(session).add(
        AuditEvent(
            actor_id=principal.id if principal else None,
            actor_name=principal.name if principal else SYSTEM_ACTOR,
            action=action,
            resource_type=resource_type,
            resource_id=str(resource_id),
            before=before,
            after=after,
            request_id=request_id,
        )
    )


class AuditEntry(NamedTuple):
    """One event of a batch written by `record_audit_many`."""

    action: str
    resource_type: str
    resource_id: object
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


async def record_audit_many(session: AsyncSession, principal: Actor | None, events: Sequence[AuditEntry]) -> None:
    """Many events by one actor in one statement: bulk operations (imports) change thousands of records per
    transaction, and writing their events one by one would cost more than the changes themselves."""
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    await record_audit_each(session, [(principal, request_id, event) for event in events])


async def record_audit_each(
    session: AsyncSession, events: Sequence[tuple[Actor | None, str | None, AuditEntry]]
) -> None:
    """Events of many actors and requests, each (actor, request id, event), in one statement: a group commit
    carries out the work of many requests at once, and each event still names who asked and in which request."""
    await AuditRepository(session).add_many(
        [
            (
                new_id(),
                actor.id if actor else None,
                actor.name if actor else SYSTEM_ACTOR,
                request_id,
                event.action,
                event.resource_type,
                str(event.resource_id),
                None if event.before is None else _json(event.before),
                None if event.after is None else _json(event.after),
            )
            for actor, request_id, event in events
        ]
    )


async def events_about_beneficiary(session: AsyncSession, beneficiary_id: uuid.UUID) -> Sequence[AuditEvent]:
    """Who registered, changed, decided on or viewed one person, oldest first."""
    return await AuditRepository(session).about_beneficiary(beneficiary_id)
