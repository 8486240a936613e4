from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

import asyncpg
from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Integer,
    Text,
    Uuid,
    bindparam,
    exists,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.orm import defer

from cbi_service.batches.models import PaymentBatch
from cbi_service.entitlements.models import Entitlement
from cbi_service.kit.repository import Repository
from cbi_service.programmes.models import Programme
from cbi_service.webhooks.models import EVENT_STATUSES, WebhookEvent


class InboxRow(NamedTuple):
    """One verified event as the inbox stores it; `event` is its provider-neutral reading as JSON text."""

    id: uuid.UUID
    provider: str
    webhook_id: str
    event_type: str
    entitlement_id: uuid.UUID
    provider_ref: str
    occurred_at: datetime
    signed_at: datetime
    body: str
    event: str
    status: str = "received"
    """`refused` for an event kept only for review (see `service.card_number_row`)."""
    detail: str | None = None


_INSERT_ROWS = """
    INSERT INTO webhook_events
        (id, provider, webhook_id, event_type, entitlement_id, provider_ref, occurred_at, signed_at, body, event,
         status, detail, processed_at)
    SELECT id, provider, webhook_id, event_type, entitlement_id, provider_ref, occurred_at, signed_at, body,
           event::jsonb, status, detail, CASE WHEN status = 'received' THEN NULL ELSE now() END
      FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::text[], $7::timestamptz[],
                  $8::timestamptz[], $9::text[], $10::text[], $11::text[], $12::text[])
           AS t(id, provider, webhook_id, event_type, entitlement_id, provider_ref, occurred_at, signed_at, body,
                event, status, detail)
    ON CONFLICT (provider, webhook_id) DO NOTHING
    RETURNING id
"""
_FIND_STORED = """
    SELECT w.provider, w.webhook_id, w.id, w.status
      FROM webhook_events AS w
      JOIN unnest($1::text[], $2::text[]) AS k(provider, webhook_id)
        ON w.provider = k.provider AND w.webhook_id = k.webhook_id
"""


async def insert_rows(driver: asyncpg.Connection, rows: Sequence[InboxRow]) -> set[uuid.UUID]:
    """One prepared statement for any number of events; returns the ids inserted (not stored before).

    Run on the driver connection by the inbox writer, which commits per batch (see `inbox`).
    """
    columns = [[row[i] for row in rows] for i in range(len(InboxRow._fields))]
    return {record[0] for record in await driver.fetch(_INSERT_ROWS, *columns)}


async def find_stored(
    driver: asyncpg.Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[uuid.UUID, str]]:
    """(provider, webhook_id) → (id, status) of events already in the inbox."""
    records = await driver.fetch(_FIND_STORED, [key[0] for key in keys], [key[1] for key in keys])
    return {(record[0], record[1]): (record[2], record[3]) for record in records}


class Target(NamedTuple):
    """What the applier must know of an event's entitlement before touching it."""

    currency: str
    provider: str
    batch_status: str
    programme_id: uuid.UUID
    status: str
    """The entitlement's status when the chunk began (it may move before the event's turn comes)."""


class AppliedEvent(NamedTuple):
    """What applying one stored event came to."""

    id: uuid.UUID
    status: str
    attempts: int
    detail: str | None


_RECORD = text(
    """
    UPDATE webhook_events AS w
       SET status = o.status, attempts = o.attempts, detail = o.detail, processed_at = now()
      FROM unnest(:id, :status, :attempts, :detail) AS o(id, status, attempts, detail)
     WHERE w.id = o.id
    """
).bindparams(
    bindparam("id", type_=ARRAY(Uuid())),
    bindparam("status", type_=ARRAY(Text())),
    bindparam("attempts", type_=ARRAY(Integer())),
    bindparam("detail", type_=ARRAY(Text())),
)


def _status_is(status: str) -> ColumnElement[bool]:
    """A literal (not a bound parameter), so the planner can use the partial indexes on status."""
    if status not in EVENT_STATUSES:
        raise ValueError(f"unknown event status {status!r}")
    return WebhookEvent.status == literal_column(f"'{status}'")


class WebhookRepository(Repository[WebhookEvent]):
    model = WebhookEvent

    async def claim_pending(self, limit: int) -> Sequence[WebhookEvent]:
        """The oldest events by provider time, locked so a second applier skips them instead of waiting.

        The signed body stays in the database: applying reads the adapter's reading of it (`event`)."""
        stmt = (
            select(WebhookEvent)
            .options(defer(WebhookEvent.body, raiseload=True))
            .where(_status_is("received"))
            .order_by(WebhookEvent.occurred_at, WebhookEvent.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def targets(self, entitlement_ids: set[uuid.UUID]) -> dict[uuid.UUID, Target]:
        """Currency, provider and batch status of each known entitlement, in one query for a whole chunk."""
        if not entitlement_ids:
            return {}
        stmt = (
            select(
                Entitlement.id,
                Entitlement.currency,
                Programme.provider,
                PaymentBatch.status,
                Programme.id,
                Entitlement.status,
            )
            .join(Programme, Programme.id == Entitlement.programme_id)
            .join(PaymentBatch, PaymentBatch.id == Entitlement.batch_id)
            .where(Entitlement.id.in_(entitlement_ids))
        )
        rows = await self.session.execute(stmt)
        return {row[0]: Target(row[1], row[2], row[3], row[4], row[5]) for row in rows}

    async def programmes(self, programme_ids: set[uuid.UUID]) -> Sequence[Programme]:
        if not programme_ids:
            return []
        return (await self.session.execute(select(Programme).where(Programme.id.in_(programme_ids)))).scalars().all()

    async def record(self, outcomes: Sequence[AppliedEvent]) -> None:
        """Write each event's status, attempts and detail in one statement."""
        if outcomes:
            params = {name: [getattr(o, name) for o in outcomes] for name in AppliedEvent._fields}
            await self.session.execute(_RECORD, params)

    async def requeue_matched(self) -> int:
        """Unmatched events whose entitlement now exists go back to the applier's queue."""
        stmt = (
            update(WebhookEvent)
            .where(
                _status_is("unmatched"),
                exists().where(Entitlement.id == WebhookEvent.entitlement_id),
            )
            .values(status="received", detail=None)
            .returning(WebhookEvent.id)
        )
        return len((await self.session.execute(stmt)).all())

    async def list_events(
        self, *, status: str, after_id: uuid.UUID | None, limit: int, provider: str | None
    ) -> Sequence[WebhookEvent]:
        stmt = select(WebhookEvent).where(_status_is(status))
        if provider is not None:
            stmt = stmt.where(WebhookEvent.provider == provider)
        return await self.page(stmt, after_id, limit)
