from __future__ import annotations

import uuid

from sqlalchemy import CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from cbi_service.kit.ids import new_id
from cbi_service.kit.models import Base, CreatedAt

PAYOUT_ACCOUNT = (
    "(payout_iban IS NULL) <> (payout_account_number IS NULL)"
    " AND (payout_iban IS NULL OR payout_bic IS NOT NULL)"
    " AND (payout_account_number IS NULL OR payout_bank_code IS NOT NULL)"
)
"""Where a merchant is paid: an IBAN and its bank's BIC, or (in a country without IBANs) an account number
and a bank code."""


class Merchant(CreatedAt, Base):
    """A shop that accepts the agency's paper vouchers of some programmes, and is paid for them."""

    __tablename__ = "merchants"
    __table_args__ = (
        CheckConstraint("country ~ '^[A-Z]{2}$'", name="country"),
        CheckConstraint("currency ~ '^[A-Z]{3}$'", name="currency"),
        CheckConstraint(PAYOUT_ACCOUNT, name="payout_account"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    country: Mapped[str] = mapped_column(String(2))
    currency: Mapped[str] = mapped_column(String(3))
    """The currency of every programme it serves, in which it is owed and paid."""
    payout_account_name: Mapped[str] = mapped_column(String(140))
    payout_iban: Mapped[str | None] = mapped_column(String(34))
    payout_bic: Mapped[str | None] = mapped_column(String(11))
    payout_account_number: Mapped[str | None] = mapped_column(String(34))
    payout_bank_code: Mapped[str | None] = mapped_column(String(35))
    created_by: Mapped[uuid.UUID] = mapped_column()


class MerchantProgramme(Base):
    """A programme whose vouchers the merchant may redeem."""

    __tablename__ = "merchant_programmes"
    __table_args__ = (Index("ix_merchant_programmes_programme", "programme_id", "merchant_id"),)

    merchant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("merchants.id"), primary_key=True)
    programme_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programmes.id"), primary_key=True)
