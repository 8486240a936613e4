from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import CheckConstraint, Index, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from cbi_service.kit.ids import new_id
from cbi_service.kit.models import Base, CreatedAt


class FxRate(CreatedAt, Base):
    """How many US dollars one unit of `currency` was worth in `month` (`YYYY-MM`), and who says so.

    One rate per currency and month, held by the unique index: a report filed with a rate can always be
    made again with the same one. `usd_per_unit` is an unconstrained NUMERIC, so the digits given are the
    digits kept (never a float on the way)."""

    __tablename__ = "fx_rates"
    __table_args__ = (
        CheckConstraint("currency ~ '^[A-Z]{3}$' AND currency <> 'USD'", name="currency"),
        CheckConstraint("month ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'", name="month"),
        CheckConstraint("usd_per_unit > 0", name="usd_per_unit_positive"),
        Index("uq_fx_rates_currency_month", "currency", "month", unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    currency: Mapped[str] = mapped_column(String(3))
    month: Mapped[str] = mapped_column(String(7))
    usd_per_unit: Mapped[Decimal] = mapped_column(Numeric(asdecimal=True))
    source: Mapped[str] = mapped_column(String(500))
    recorded_by: Mapped[uuid.UUID] = mapped_column()
