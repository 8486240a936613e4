from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, Index, Integer, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from cbi_service.kit.ids import new_id
from cbi_service.kit.models import Base, one_of

EVENT_STATUSES = ("received", "applied", "ignored", "refused", "unmatched", "failed")
"""`received`: stored, not yet applied. `applied`: changed its entitlement. `ignored`: stale or repeated
for the entitlement's state (a late `issued` after `redeemed`). `refused`: not applied, for review (a
redemption above the remaining value; an event for another provider's or an unreleased entitlement; an
event holding a full card number, stored redacted).
`unmatched`: no such entitlement yet, kept and retried. `failed`: applying it kept raising; for review."""

PENDING_PREDICATE = "status = 'received'"
UNMATCHED_PREDICATE = "status = 'unmatched'"
REVIEW_PREDICATE = "status IN ('refused', 'failed')"


class WebhookEvent(Base):
    """The inbox: every authentic provider event, stored before it is acknowledged.

    The unique key (provider, webhook_id) is what makes a redelivery a no-op. `body` keeps the bytes the
    signature covered; `event` is the adapter's provider-neutral reading of it, which is what gets applied.
    """

    __tablename__ = "webhook_events"
    __table_args__ = (
        CheckConstraint(one_of("status", EVENT_STATUSES), name="status"),
        CheckConstraint("attempts >= 0", name="attempts"),
        Index("uq_webhook_events_provider_webhook_id", "provider", "webhook_id", unique=True),
        Index("ix_webhook_events_pending", "occurred_at", "id", postgresql_where=text(PENDING_PREDICATE)),
        Index("ix_webhook_events_unmatched", "id", postgresql_where=text(UNMATCHED_PREDICATE)),
        Index("ix_webhook_events_review", "id", postgresql_where=text(REVIEW_PREDICATE)),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    provider: Mapped[str] = mapped_column(String(100))
    webhook_id: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(40))
    entitlement_id: Mapped[uuid.UUID] = mapped_column()
    provider_ref: Mapped[str] = mapped_column(String(128))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    signed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    body: Mapped[str] = mapped_column(Text)
    event: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(12), server_default="received")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    detail: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
