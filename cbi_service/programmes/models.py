from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, Integer, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from cbi_service.kit.ids import new_id
from cbi_service.kit.models import Base, CreatedAt, one_of

SECTORS = (
    "multipurpose_cash",
    "food_security",
    "shelter",
    "humanitarian_transport",
    "protection",
    "wash",
    "health",
    "education",
    "integration",
)
DELIVERY_MECHANISMS = ("prepaid_card", "voucher", "paper_voucher")
VOUCHER_MECHANISMS = ("voucher", "paper_voucher")
"""Mechanisms whose entitlements are vouchers: redeemed in parts, expired when their validity runs out."""


class Programme(CreatedAt, Base):
    """A cash-based intervention: one currency, one delivery mechanism, one provider."""

    __tablename__ = "programmes"
    __table_args__ = (
        CheckConstraint(one_of("sector", SECTORS), name="sector"),
        CheckConstraint(one_of("delivery_mechanism", DELIVERY_MECHANISMS), name="delivery_mechanism"),
        CheckConstraint("approvals_required >= 1", name="approvals_required"),
        CheckConstraint("voucher_validity_days IS NULL OR voucher_validity_days >= 1", name="voucher_validity"),
        CheckConstraint(
            "delivery_mechanism <> 'paper_voucher' OR voucher_validity_days IS NOT NULL", name="paper_voucher_validity"
        ),
        CheckConstraint("country ~ '^[A-Z]{2}$'", name="country"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    country: Mapped[str] = mapped_column(String(2))
    currency: Mapped[str] = mapped_column(String(3))
    sector: Mapped[str] = mapped_column(String(40))
    delivery_mechanism: Mapped[str] = mapped_column(String(20))
    provider: Mapped[str] = mapped_column(String(100))
    approvals_required: Mapped[int] = mapped_column(Integer)
    approval_bands: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    voucher_validity_days: Mapped[int | None] = mapped_column(Integer)
    # Its reporting identity in R4V's 5W (§16). Nullable: a programme made before the 5W existed has none
    # until someone sets it, and the 5W names the rows that lack it rather than inventing one.
    appealing_organisation: Mapped[str | None] = mapped_column(String(200))
    implementing_partner: Mapped[str | None] = mapped_column(String(200))
    indicator: Mapped[str | None] = mapped_column(String(500))
    activity_name: Mapped[str | None] = mapped_column(String(200))
    activity_description: Mapped[str | None] = mapped_column(String(1000))
    rmrp_activity: Mapped[bool | None] = mapped_column(Boolean)
    created_by: Mapped[uuid.UUID] = mapped_column()

    def approvals_needed(self, total_minor: int) -> int:
        """Approvers a batch of `total_minor` needs: the first band it fits, else the highest band."""
        bands = sorted(self.approval_bands, key=lambda b: b["up_to_minor"])
        if not bands:
            return self.approvals_required
        for band in bands:
            if total_minor <= band["up_to_minor"]:
                return int(band["approvals_required"])
        return int(bands[-1]["approvals_required"])
