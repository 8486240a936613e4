from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from cbi_service.kit.ids import new_id
from cbi_service.kit.models import Base, CreatedAt, one_of

BATCH_STATUSES = ("draft", "pending_approval", "approved", "processing", "completed", "rejected", "cancelled")
APPROVAL_DECISIONS = ("approve", "reject")
EXCLUSION_REASONS = ("not_found", "not_enrolled", "not_active", "already_paid_in_cycle")
UNRELEASED_STATUSES = ("draft", "pending_approval", "approved")
"""Before release: nothing has gone to a provider, so the batch can still be cancelled as a whole."""
RELEASED_STATUSES = ("processing", "completed")
"""Released: its entitlements are with the provider."""


class PaymentBatch(CreatedAt, Base):
    """A maker-checker payment run: one programme, one cycle, one frozen list of entitlements."""

    __tablename__ = "payment_batches"
    __table_args__ = (
        CheckConstraint(one_of("status", BATCH_STATUSES), name="status"),
        CheckConstraint("(amount_minor IS NULL) <> (amount_rule IS NULL)", name="one_amount_kind"),
        CheckConstraint("amount_minor IS NULL OR amount_minor > 0", name="amount_positive"),
        CheckConstraint("total_minor >= 0 AND beneficiary_count >= 0 AND excluded_count >= 0", name="totals"),
        CheckConstraint("approvals_needed IS NULL OR approvals_needed >= 1", name="approvals_needed"),
        Index("ix_payment_batches_programme", "programme_id", "id"),
        Index("ix_payment_batches_status", "status", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    programme_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programmes.id"))
    name: Mapped[str] = mapped_column(String(200))
    cycle: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(20), server_default="draft")
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    amount_rule: Mapped[dict[str, int | None] | None] = mapped_column(JSONB(none_as_null=True))
    total_minor: Mapped[int] = mapped_column(BigInteger, server_default="0")
    beneficiary_count: Mapped[int] = mapped_column(Integer, server_default="0")
    excluded_count: Mapped[int] = mapped_column(Integer, server_default="0")
    approvals_needed: Mapped[int | None] = mapped_column(Integer)
    follow_up_of: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("payment_batches.id"))
    created_by: Mapped[uuid.UUID] = mapped_column()
    submitted_by: Mapped[uuid.UUID | None] = mapped_column()
    released_by: Mapped[uuid.UUID | None] = mapped_column()
    cancelled_by: Mapped[uuid.UUID | None] = mapped_column()
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    def summary(self) -> dict[str, Any]:
        """The audit trail's before/after picture of a batch."""
        return {
            "status": self.status,
            "total_minor": self.total_minor,
            "currency": self.currency,
            "beneficiary_count": self.beneficiary_count,
        }


class BatchApproval(CreatedAt, Base):
    """One approver's decision; the unique key makes "distinct approvers" a database rule."""

    __tablename__ = "batch_approvals"
    __table_args__ = (
        CheckConstraint(one_of("decision", APPROVAL_DECISIONS), name="decision"),
        Index("uq_batch_approvals_batch_approver", "batch_id", "approver_id", unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    batch_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payment_batches.id"))
    approver_id: Mapped[uuid.UUID] = mapped_column()
    approver_name: Mapped[str] = mapped_column(String(200))
    decision: Mapped[str] = mapped_column(String(10))
    comment: Mapped[str | None] = mapped_column(Text)


class BatchExclusion(Base):
    """A beneficiary asked for (or enrolled) but left out of a batch, and why."""

    __tablename__ = "batch_exclusions"
    __table_args__ = (CheckConstraint(one_of("reason", EXCLUSION_REASONS), name="reason"),)

    batch_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payment_batches.id"), primary_key=True)
    beneficiary_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    reason: Mapped[str] = mapped_column(String(40))
    entitlement_id: Mapped[uuid.UUID | None] = mapped_column()
