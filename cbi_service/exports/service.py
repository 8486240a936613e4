"""Ledger export and its manifest: check the request, record who exported what, then read from a snapshot."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from cbi_service.accounting.service import programme_prefix
from cbi_service.audit.service import record_audit
from cbi_service.auth.roles import Principal
from cbi_service.exports.manifest import FORMAT, Tally, TransactionHead, sign
from cbi_service.exports.repository import ExportQuery, window_snapshot
from cbi_service.exports.writers import ExportFormat, render
from cbi_service.kit.errors import UnprocessableEntity
from cbi_service.kit.signing import SigningKeys
from cbi_service.programmes.service import get_programme
from ledger.chain import format_timestamp


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
    window = await _window(session, start, end, programme_id)
    await record_audit(session, principal, "ledger.exported", "ledger", "export", None, window.audited(fmt))
    stamp = "-".join(part.strftime("%Y%m%dT%H%M%SZ") if part else "all" for part in (window.start, window.end))
    scope = f"-programme-{programme_id}" if programme_id else ""
    return ExportPlan(fmt, window.start, window.end, window.account_prefix, f"ledger-{stamp}{scope}.{fmt.value}")


def stream_export(engine: AsyncEngine, plan: ExportPlan) -> AsyncIterator[bytes]:
    return render(plan.fmt, engine, ExportQuery(plan.start, plan.end, plan.account_prefix))


@dataclass(frozen=True)
class Window:
    """An export's filters, checked: times in UTC, the programme as its accounts' code prefix."""

    start: datetime | None
    end: datetime | None
    programme_id: uuid.UUID | None
    account_prefix: str | None

    def audited(self, fmt: ExportFormat | None) -> dict[str, str | None]:
        return {
            **({"format": fmt.value} if fmt else {}),
            "from": self.start.isoformat() if self.start else None,
            "to": self.end.isoformat() if self.end else None,
            "programme_id": str(self.programme_id) if self.programme_id else None,
        }


async def _window(
    session: AsyncSession, start: datetime | None, end: datetime | None, programme_id: uuid.UUID | None
) -> Window:
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
    return Window(start, end, programme_id, account_prefix)


async def plan_manifest(
    session: AsyncSession,
    principal: Principal,
    start: datetime | None,
    end: datetime | None,
    programme_id: uuid.UUID | None,
) -> Window:
    """Validate the filters as for an export, and record who asked for a signed statement of which window."""
    window = await _window(session, start, end, programme_id)
    await record_audit(session, principal, "ledger.manifest_signed", "ledger", "export", None, window.audited(None))
    return window


async def signed_manifest(engine: AsyncEngine, keys: SigningKeys, window: Window) -> dict[str, Any]:
    """The signed manifest of what an export with these filters holds, read from one snapshot."""
    tally = Tally()
    async with window_snapshot(engine, ExportQuery(window.start, window.end, window.account_prefix)) as reader:
        async for batch in reader.transaction_batches():
            for record in batch:
                tally.add_transaction(TransactionHead(*record))
        for currency, entries, debits, credits in await reader.currency_totals():
            tally.add_entries(currency, entries, int(debits), int(credits))
        generated_at = reader.taken_at
    manifest = {
        "format": FORMAT,
        "key_id": keys.kid,
        "generated_at": generated_at,
        "window": {
            "from": format_timestamp(window.start) if window.start else None,
            "to": format_timestamp(window.end) if window.end else None,
            "programme_id": str(window.programme_id) if window.programme_id else None,
        },
        **tally.statement(),
    }
    return sign(keys, manifest)
