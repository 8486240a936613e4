from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from cbi_service.kit.ids import new_id
from cbi_service.kit.models import Base, CreatedAt, one_of

ENTITLEMENT_STATUSES = ("pending", "submitted", "issued", "redeemed", "expired", "failed", "cancelled")
LIVE_STATUSES = ("pending", "submitted", "issued", "redeemed")
"""Statuses that hold the beneficiary's one payment of a programme cycle; failed, expired and cancelled
entitlements free it for a follow-up batch."""
OPEN_STATUSES = ("pending", "submitted")
"""Statuses that keep a processing batch from completing."""

LIVE_PREDICATE = one_of("status", LIVE_STATUSES)
VOUCHER_CODE_INDEX = "uq_entitlements_voucher_code"
"""No two vouchers the agency signs share a code (providers' own codes are theirs to keep apart)."""


class Entitlement(CreatedAt, Base):
    """What one beneficiary is owed by one batch, and how far its delivery has gone."""

    __tablename__ = "entitlements"
    __table_args__ = (
        CheckConstraint(one_of("status", ENTITLEMENT_STATUSES), name="status"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("redeemed_minor >= 0 AND redeemed_minor <= amount_minor", name="redeemed_within_amount"),
        CheckConstraint("card_last4 IS NULL OR card_last4 ~ '^[0-9]{4}$'", name="card_last4"),
        CheckConstraint(
            "voucher_token IS NULL OR (voucher_code IS NOT NULL AND expires_at IS NOT NULL)", name="signed_voucher"
        ),
        Index("uq_entitlements_batch_beneficiary", "batch_id", "beneficiary_id", unique=True),
        Index(
            "uq_entitlements_live_per_cycle",
            "programme_id",
            "cycle",
            "beneficiary_id",
            unique=True,
            postgresql_where=text(LIVE_PREDICATE),
        ),
        Index("ix_entitlements_batch_status", "batch_id", "status", "id"),
        Index("ix_entitlements_beneficiary", "beneficiary_id", "id"),
        Index("ix_entitlements_status", "status", "id"),
        Index(VOUCHER_CODE_INDEX, "voucher_code", unique=True, postgresql_where=text("voucher_token IS NOT NULL")),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    batch_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payment_batches.id"))
    programme_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programmes.id"))
    beneficiary_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("beneficiaries.id"))
    cycle: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    redeemed_minor: Mapped[int] = mapped_column(BigInteger, server_default="0")
    status: Mapped[str] = mapped_column(String(12), server_default="pending")
    provider_ref: Mapped[str | None] = mapped_column(String(128))
    card_token: Mapped[str | None] = mapped_column(String(128))
    card_last4: Mapped[str | None] = mapped_column(String(4))
    voucher_code: Mapped[str | None] = mapped_column(String(64))
    voucher_token: Mapped[str | None] = mapped_column(Text)
    """The signed QR token of a voucher the agency issues itself (paper vouchers); its code is unique."""
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    failure_retryable: Mapped[bool | None] = mapped_column(Boolean)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """When the provider was last asked about it (the status poll asks once per poll period)."""
    issued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    @property
    def remaining_minor(self) -> int:
        return self.amount_minor - self.redeemed_minor


class EntitlementEvent(Base):
    """Append-only status history of an entitlement (the database refuses UPDATE and DELETE)."""

    __tablename__ = "entitlement_events"
    __table_args__ = (Index("ix_entitlement_events_entitlement", "entitlement_id", "id"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    entitlement_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("entitlements.id"))
    from_status: Mapped[str | None] = mapped_column(String(12))
    to_status: Mapped[str] = mapped_column(String(12))
    actor: Mapped[str] = mapped_column(String(200))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONB(none_as_null=True))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
