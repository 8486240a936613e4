from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, CheckConstraint, DateTime, ForeignKey, Index, Integer, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from cbi_service.kit.ids import new_id
from cbi_service.kit.models import Base, CreatedAt, one_of

SETTLEMENT_STATUSES = (
    "draft",
    "pending_approval",
    "approved",
    "released",
    "paid",
    "rejected",
    "cancelled",
    "refused",
)
UNRELEASED_STATUSES = ("draft", "pending_approval", "approved")
"""Before release no payment file has gone to the bank: the settlement can still be cancelled."""
APPROVAL_DECISIONS = ("approve", "reject")
LIVE_ITEM_INDEX = "uq_settlement_items_live_redemption"
"""A redemption is in at most one settlement that is not rejected, cancelled or refused: it is paid once."""


class MerchantSettlement(CreatedAt, Base):
    """What the agency pays one merchant for the paper vouchers redeemed there, through the same
    maker-checker as payment batches, paid by one credit transfer (pain.001)."""

    __tablename__ = "merchant_settlements"
    __table_args__ = (
        CheckConstraint(one_of("status", SETTLEMENT_STATUSES), name="status"),
        CheckConstraint("total_minor >= 0 AND redemption_count >= 0", name="totals"),
        CheckConstraint("approvals_needed IS NULL OR approvals_needed >= 1", name="approvals_needed"),
        CheckConstraint("(status = 'paid') = (bank_reference IS NOT NULL)", name="paid_reference"),
        CheckConstraint("(status = 'refused') = (refusal_reason IS NOT NULL)", name="refusal_reason"),
        Index("ix_merchant_settlements_merchant", "merchant_id", "id"),
        Index("ix_merchant_settlements_status", "status", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchants.id"))
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(20), server_default="draft")
    total_minor: Mapped[int] = mapped_column(BigInteger)
    redemption_count: Mapped[int] = mapped_column(Integer)
    approvals_needed: Mapped[int | None] = mapped_column(Integer)
    bank_reference: Mapped[str | None] = mapped_column(String(35))
    """The bank's reference for the credit transfer, given when it is marked paid."""
    refusal_reason: Mapped[str | None] = mapped_column(String(140))
    """Why the bank refused the payment file, as it said (a pain.002 reason code and text), when refused."""
    created_by: Mapped[uuid.UUID] = mapped_column()
    submitted_by: Mapped[uuid.UUID | None] = mapped_column()
    released_by: Mapped[uuid.UUID | None] = mapped_column()
    paid_by: Mapped[uuid.UUID | None] = mapped_column()
    cancelled_by: Mapped[uuid.UUID | None] = mapped_column()
    refused_by: Mapped[uuid.UUID | None] = mapped_column()
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    approved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    def summary(self) -> dict[str, Any]:
        """The audit trail's before/after picture of a settlement."""
        return {
            "status": self.status,
            "merchant_id": str(self.merchant_id),
            "total_minor": self.total_minor,
            "currency": self.currency,
            "redemption_count": self.redemption_count,
        }


class SettlementItem(Base):
    """One accepted redemption a settlement pays, with the programme whose payable account owes it."""

    __tablename__ = "merchant_settlement_items"
    __table_args__ = (
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        Index(LIVE_ITEM_INDEX, "redemption_id", unique=True, postgresql_where="live"),
        Index("ix_merchant_settlement_items_programme", "settlement_id", "programme_id"),
    )

    settlement_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchant_settlements.id"), primary_key=True)
    redemption_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("voucher_redemptions.id"), primary_key=True)
    programme_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programmes.id"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    live: Mapped[bool] = mapped_column(Boolean, server_default="true")
    """False once the settlement is rejected, cancelled or refused: the redemption is unsettled again."""


class SettlementApproval(CreatedAt, Base):
    """One approver's decision; the unique key makes "distinct approvers" a database rule."""

    __tablename__ = "merchant_settlement_approvals"
    __table_args__ = (
        CheckConstraint(one_of("decision", APPROVAL_DECISIONS), name="decision"),
        Index("uq_merchant_settlement_approvals_approver", "settlement_id", "approver_id", unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    settlement_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchant_settlements.id"))
    approver_id: Mapped[uuid.UUID] = mapped_column()
    approver_name: Mapped[str] = mapped_column(String(200))
    decision: Mapped[str] = mapped_column(String(10))
    comment: Mapped[str | None] = mapped_column(Text)
