"""Exchange rates to USD: recorded by finance once per currency and month, read by the 5W.

A rate, once recorded, is never replaced: a 5W already filed with R4V was valued at it, and must come out
the same when it is asked for again. A second rate for the same currency and month is a 409 naming the
first. USD itself needs no rate (it is worth 1); any other currency without a rate for the month is
reported as missing, never filled in from another month.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.audit.service import record_audit
from cbi_service.auth.roles import Principal
from cbi_service.fx.models import FxRate
from cbi_service.fx.repository import FxRateRepository
from cbi_service.fx.schemas import FxRateCreate, FxRateOut, plain
from cbi_service.kit.errors import Conflict


@dataclass(frozen=True)
class Rate:
    currency: str
    month: str
    usd_per_unit: Decimal
    source: str
    recorded_at: datetime | None


def usd_rate(month: str) -> Rate:
    """USD's own rate: exactly 1, from no source but arithmetic."""
    return Rate("USD", month, Decimal(1), "USD is the reporting currency", None)


async def record_rate(session: AsyncSession, principal: Principal, body: FxRateCreate) -> FxRateOut:
    repo = FxRateRepository(session)
    row = await repo.add_new(
        {
            "currency": body.currency,
            "month": body.month,
            "usd_per_unit": Decimal(body.usd_per_unit),
            "source": body.source,
            "recorded_by": principal.id,
        }
    )
    if row is None:
        [existing] = await repo.of_month(body.month, [body.currency])
        raise Conflict(
            f"A rate for {body.currency} in {body.month} is already recorded; a rate reports were valued at is "
            "never replaced.",
            extra={"existing": FxRateOut.of(existing).model_dump(mode="json")},
        )
    out = FxRateOut.of(row)
    await record_audit(
        session, principal, "fx_rate.recorded", "fx_rate", row.id, None,
        {"currency": row.currency, "month": row.month, "usd_per_unit": plain(row.usd_per_unit), "source": row.source},
    )  # fmt: skip
    return out


async def list_rates(
    session: AsyncSession, *, after_id: uuid.UUID | None, limit: int, currency: str | None, month: str | None
) -> Sequence[FxRate]:
    return await FxRateRepository(session).list(after_id=after_id, limit=limit, currency=currency, month=month)


async def rates_for(session: AsyncSession, month: str, currencies: Collection[str]) -> dict[str, Rate]:
    """The rates of `month` for those of `currencies` that have one (USD always does)."""
    rates = {
        r.currency: Rate(r.currency, r.month, r.usd_per_unit, r.source, r.created_at)
        for r in await FxRateRepository(session).of_month(month, [c for c in currencies if c != "USD"])
    }
    if "USD" in currencies:
        rates["USD"] = usd_rate(month)
    return rates
