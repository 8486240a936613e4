"""Programme funding and balances (§3) and the ledger's read API for auditors and finance (§9)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from cbi_service.accounting import service
from cbi_service.accounting.schemas import (
    FundingCreate,
    FundingOut,
    LedgerAccountOut,
    LedgerEntryOut,
    ProgrammeBalancesOut,
    TrialBalanceOut,
)
from cbi_service.auth.dependencies import READ_ANY, require_roles
from cbi_service.auth.roles import Principal, Role
from cbi_service.kit.db import SessionDep
from cbi_service.kit.idempotency import RequiredIdempotencyDep
from cbi_service.kit.money import CurrencyCode
from cbi_service.kit.pagination import Page, PageDep, encode_cursor
from cbi_service.kit.routing import StorableTextRoute
from cbi_service.kit.timeutil import AwareDatetimeQuery

Finance = Annotated[Principal, Depends(require_roles(Role.finance))]
Reader = Annotated[Principal, Depends(require_roles(*READ_ANY))]
LedgerReader = Annotated[Principal, Depends(require_roles(Role.auditor, Role.finance, Role.admin))]

programmes = APIRouter(prefix="/v1/programmes", tags=["programmes"], route_class=StorableTextRoute)
ledger = APIRouter(prefix="/v1/ledger", tags=["ledger"], route_class=StorableTextRoute)


@programmes.post("/{programme_id}/funds", status_code=201, response_model=FundingOut)
async def fund_programme(
    programme_id: uuid.UUID, body: FundingCreate, session: SessionDep, principal: Finance, idem: RequiredIdempotencyDep
) -> Response:
    """Post donor money to the programme's `available` balance (Idempotency-Key required)."""
    key = idem.key or ""
    return await idem.run(
        body, lambda: service.fund_programme(session, principal, programme_id, body, key), status_code=201
    )


@programmes.get("/{programme_id}/balances", response_model=ProgrammeBalancesOut)
async def programme_balances(programme_id: uuid.UUID, session: SessionDep, _: Reader) -> ProgrammeBalancesOut:
    return await service.get_programme_balances(session, programme_id)


@ledger.get("/accounts", response_model=Page[LedgerAccountOut])
async def list_accounts(
    session: SessionDep,
    _: LedgerReader,
    page: PageDep,
    programme_id: uuid.UUID | None = None,
    currency: CurrencyCode | None = None,
) -> Page[LedgerAccountOut]:
    items, after = await service.list_ledger_accounts(
        session, after_id=page.after_id(), limit=page.limit, programme_id=programme_id, currency=currency
    )
    return Page(items=items, next_cursor=encode_cursor([after]) if after else None)


@ledger.get("/accounts/{account_id}/entries", response_model=Page[LedgerEntryOut])
async def account_entries(
    account_id: uuid.UUID, session: SessionDep, _: LedgerReader, page: PageDep
) -> Page[LedgerEntryOut]:
    """The account's entries oldest first, each with the running posted balance after it."""
    keys = page.keys()
    items, cursor = await service.account_entries(
        session, account_id, cursor=keys[0] if keys else None, limit=page.limit
    )
    return Page(items=items, next_cursor=encode_cursor([cursor]) if cursor else None)


@ledger.get("/trial-balance", response_model=TrialBalanceOut)
async def trial_balance(
    session: SessionDep,
    _: LedgerReader,
    as_of: Annotated[
        AwareDatetimeQuery | None,
        Query(description="RFC 3339 with offset, years 1900 to 9998 in UTC; balances as they stood then."),
    ] = None,
    programme_id: uuid.UUID | None = None,
) -> TrialBalanceOut:
    return await service.trial_balance(session, as_of=as_of, programme_id=programme_id)


router = APIRouter()
router.include_router(programmes)
router.include_router(ledger)
