from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from cbi_service.kit.ids import new_id
from cbi_service.kit.models import Base, CreatedAt, one_of

REDEMPTION_STATUSES = ("accepted", "conflict", "rejected")
"""`accepted`: the merchant is owed it. `conflict`: an offline scan of a voucher already spent (or no longer
spendable) when it synced, kept for review. `rejected`: an offline scan of a token that does not hold."""
CHANNELS = ("online", "offline")
DEVICE_ITEM_INDEX = "uq_voucher_redemptions_device_item"
"""One row per scan a merchant's device synced: a resent sync finds its items here and redeems nothing twice."""


class VoucherRedemption(CreatedAt, Base):
    """A voucher presented at a merchant: redeemed online, or scanned offline and synced later."""

    __tablename__ = "voucher_redemptions"
    __table_args__ = (
        CheckConstraint(one_of("status", REDEMPTION_STATUSES), name="status"),
        CheckConstraint(one_of("channel", CHANNELS), name="channel"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint(
            "(channel = 'offline') = (device_id IS NOT NULL AND local_id IS NOT NULL)", name="offline_item"
        ),
        CheckConstraint("channel = 'offline' OR status = 'accepted'", name="online_accepted"),
        CheckConstraint("status = 'rejected' OR voucher_id IS NOT NULL", name="voucher_known"),
        CheckConstraint("(status = 'accepted') = (reason IS NULL)", name="reason"),
        Index(DEVICE_ITEM_INDEX, "merchant_id", "device_id", "local_id", unique=True),
        Index("ix_voucher_redemptions_status", "status", "id"),
        Index("ix_voucher_redemptions_merchant", "merchant_id", "id"),
        Index("ix_voucher_redemptions_voucher", "voucher_id", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchants.id"))
    voucher_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("entitlements.id"))
    """The voucher (its entitlement); unknown for a rejected scan whose token could not be trusted."""
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(10))
    channel: Mapped[str] = mapped_column(String(8))
    device_id: Mapped[str | None] = mapped_column(String(100))
    local_id: Mapped[str | None] = mapped_column(String(100))
    scanned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    """When the voucher was presented: the device's scan time offline, the request's time online."""
    reason: Mapped[str | None] = mapped_column(String(40))
    """Why a scan was not accepted (`fully_redeemed`, `bad_signature`, ...)."""
