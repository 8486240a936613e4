from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from cbi_service.auth.dependencies import READ_ANY, require_roles
from cbi_service.auth.roles import Principal, Role
from cbi_service.fx import service
from cbi_service.fx.schemas import FxRateCreate, FxRateOut
from cbi_service.kit.db import SessionDep
from cbi_service.kit.idempotency import IdempotencyDep
from cbi_service.kit.pagination import Page, PageDep, page_of
from cbi_service.kit.routing import StorableTextRoute
from cbi_service.kit.timeutil import YEAR_MONTH

router = APIRouter(prefix="/v1/fx-rates", tags=["exchange rates"], route_class=StorableTextRoute)
Finance = Annotated[Principal, Depends(require_roles(Role.finance))]
Reader = Annotated[Principal, Depends(require_roles(*READ_ANY))]


@router.post("", status_code=201, response_model=FxRateOut)
async def record_rate(body: FxRateCreate, session: SessionDep, principal: Finance, idem: IdempotencyDep) -> Response:
    """Record what one unit of a currency was worth in US dollars in a month, and where that figure comes
    from. One rate per currency and month: a second one is a 409 naming the first (a rate reports were
    valued at is never replaced). Audited."""
    return await idem.run(body, lambda: service.record_rate(session, principal, body), status_code=201)


@router.get("", response_model=Page[FxRateOut])
async def list_rates(
    session: SessionDep,
    _: Reader,
    page: PageDep,
    currency: Annotated[str | None, Query(pattern=r"^[A-Z]{3}$")] = None,
    month: Annotated[str | None, Query(pattern=YEAR_MONTH)] = None,
) -> Page[FxRateOut]:
    """Recorded rates, oldest first, optionally of one currency or one month."""
    rows = await service.list_rates(session, after_id=page.after_id(), limit=page.limit, currency=currency, month=month)
    items, cursor = page_of(rows, page.limit, lambda r: [r.id])
    return Page(items=[FxRateOut.of(r) for r in items], next_cursor=cursor)
