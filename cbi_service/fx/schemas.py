from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from cbi_service.fx.models import FxRate
from cbi_service.kit.money import CurrencyCode
from cbi_service.kit.timeutil import YearMonth


def _not_usd(code: str) -> str:
    if code == "USD":
        raise ValueError("USD needs no rate: the 5W values it at 1")
    return code


def _positive(text: str) -> str:
    if Decimal(text) <= 0:
        raise ValueError("must be greater than zero")
    return text


def plain(rate: Decimal) -> str:
    """A rate as a decimal string without an exponent (`0.00000025`, never `2.5E-7`), every digit kept."""
    return format(rate, "f")


ForeignCurrency = Annotated[CurrencyCode, AfterValidator(_not_usd)]
#: A JSON string, never a number: a JSON number reaches most clients and parsers as a float.
UsdPerUnit = Annotated[
    str,
    Field(
        pattern=r"^[0-9]{1,20}(\.[0-9]{1,20})?$",
        description="US dollars one unit of the currency was worth that month, as a decimal string (up to 20 "
        "digits each side of the point); kept and used exactly as given.",
        examples=["0.000251"],
    ),
    AfterValidator(_positive),
]


class FxRateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    currency: ForeignCurrency
    month: YearMonth
    usd_per_unit: UsdPerUnit
    source: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)] = Field(
        description="Where the rate comes from, so that a reader of the report can check it.",
        examples=["Banco de la República, TRM monthly average"],
    )


class FxRateOut(BaseModel):
    id: uuid.UUID
    currency: str
    month: str = Field(examples=["2026-11"])
    usd_per_unit: str = Field(examples=["0.000251"])
    source: str
    recorded_by: uuid.UUID
    created_at: datetime

    @classmethod
    def of(cls, rate: FxRate) -> FxRateOut:
        return cls(
            id=rate.id,
            currency=rate.currency,
            month=rate.month,
            usd_per_unit=plain(rate.usd_per_unit),
            source=rate.source,
            recorded_by=rate.recorded_by,
            created_at=rate.created_at,
        )
