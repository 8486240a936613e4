"""Ledger export: check the request, record who exported what, then stream from a snapshot."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from cbi_service.accounting.service import programme_prefix
from cbi_service.audit.service import record_audit
from cbi_service.auth.roles import Principal
from cbi_service.exports.repository import ExportQuery
from cbi_service.exports.writers import ExportFormat, render
from cbi_service.kit.errors import UnprocessableEntity
from cbi_service.programmes.service import get_programme


@dataclass(frozen=True)
class ExportPlan:
    fmt: ExportFormat
    start: datetime | None
    end: datetime | None
    account_prefix: str | None
    filename: str


async def plan_export(
    session: AsyncSession,
    principal: Principal,
    fmt: ExportFormat,
    start: datetime | None,
    end: datetime | None,
    programme_id: uuid.UUID | None,
) -> ExportPlan:
    """Validate the filters (404 for an unknown programme) and audit the export before any byte is sent."""
    try:
        start = start.astimezone(UTC) if start else None
        end = end.astimezone(UTC) if end else None
    except OverflowError:
        raise UnprocessableEntity("Time out of range.", errors=[{"field": "from", "message": "out of range"}]) from None
    if start is not None and end is not None and start >= end:
        raise UnprocessableEntity("Empty period.", errors=[{"field": "to", "message": "must be later than from"}])
    account_prefix = None
    if programme_id is not None:
        programme = await get_programme(session, programme_id)
        account_prefix = programme_prefix(programme.id)
    await record_audit(
        session,
        principal,
        "ledger.exported",
        "ledger",
        "export",
        None,
        {
            "format": fmt.value,
            "from": start.isoformat() if start else None,
            "to": end.isoformat() if end else None,
            "programme_id": str(programme_id) if programme_id else None,
        },
    )
    stamp = "-".join(part.strftime("%Y%m%dT%H%M%SZ") if part else "all" for part in (start, end))
    scope = f"-programme-{programme_id}" if programme_id else ""
    return ExportPlan(fmt, start, end, account_prefix, f"ledger-{stamp}{scope}.{fmt.value}")


def stream_export(engine: AsyncEngine, plan: ExportPlan) -> AsyncIterator[bytes]:
    return render(plan.fmt, engine, ExportQuery(plan.start, plan.end, plan.account_prefix))
