"""Reconciliation breaks: provider confirmations the ledger cannot record, made visible instead of lost.

A provider may confirm money moved after the service already settled the entitlement otherwise: a late
load, or a redemption of the voucher, after a failure whose budget other payments have taken since, a load
after a cancellation, a redemption stamped before an expiry that already returned the voucher's value.
Posting it would break the ledger's rules (or overdraw the budget); refusing it silently would hide that
the provider's account and ours now differ. Each such event becomes one break, recorded with its event's
inbox status in the same transaction, audited and counted (`cbi_reconciliation_breaks_total`), for finance
to resolve with the provider; `GET /v1/reconciliations/breaks` lists them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.providers.base import ProviderEvent
from cbi_service.accounting.service import programme_balances
from cbi_service.audit.service import record_audit
from cbi_service.entitlements.models import Entitlement
from cbi_service.programmes.models import Programme
from cbi_service.reconciliation.models import BREAK_KINDS
from cbi_service.reconciliation.repository import BreakRepository

RECORDED = Counter(
    "cbi_reconciliation_breaks_total",
    "Provider confirmations the ledger could not record, kept as reconciliation breaks",
    ["kind"],
)
for _kind in BREAK_KINDS:
    RECORDED.labels(_kind)
_RECORDED_IN_SESSION = "reconciliation_breaks_recorded"


@dataclass(frozen=True)
class Break:
    """What a provider event says moved that the ledger does not show, and the posting that would show it."""

    kind: str
    amount_minor: int
    move_from: str
    move_to: str
    detail: str


async def record_break(
    session: AsyncSession,
    found: Break,
    *,
    provider: str,
    webhook_event_id: uuid.UUID,
    event: ProviderEvent,
    entitlement: Entitlement,
    programme: Programme,
) -> None:
    """Keep `found` in the caller's transaction, once per provider event, with its audit event."""
    available = (await programme_balances(session, programme)).available
    break_id = await BreakRepository(session).insert(
        {
            "kind": found.kind,
            "provider": provider,
            "webhook_event_id": webhook_event_id,
            "event_type": event.type,
            "occurred_at": event.timestamp,
            "entitlement_id": entitlement.id,
            "programme_id": programme.id,
            "provider_ref": event.provider_ref,
            "entitlement_status": entitlement.status,
            "amount_minor": found.amount_minor,
            "currency": entitlement.currency,
            "move_from": found.move_from,
            "move_to": found.move_to,
            "available_minor": available,
            "detail": found.detail[:500],
        }
    )
    if break_id is None:
        return
    await record_audit(
        session,
        None,
        "reconciliation_break.recorded",
        "reconciliation_break",
        break_id,
        None,
        {
            "kind": found.kind,
            "entitlement_id": str(entitlement.id),
            "webhook_event_id": str(webhook_event_id),
            "amount_minor": found.amount_minor,
            "currency": entitlement.currency,
            "move": f"{found.move_from}->{found.move_to}",
            "source": provider,
        },
    )
    session.info.setdefault(_RECORDED_IN_SESSION, {})[webhook_event_id] = found.kind


def count_committed(session: AsyncSession, kept: set[uuid.UUID]) -> None:
    """Count the breaks a committed transaction recorded, for the events whose outcome it kept."""
    for event_id, kind in session.info.pop(_RECORDED_IN_SESSION, {}).items():
        if event_id in kept:
            RECORDED.labels(kind).inc()
