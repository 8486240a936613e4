from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from cbi_service.auth.dependencies import require_roles
from cbi_service.auth.roles import Principal, Role
from cbi_service.kit.db import SessionDep
from cbi_service.kit.errors import NotFound
from cbi_service.kit.idempotency import IdempotencyDep
from cbi_service.kit.pagination import Page, PageDep, page_of
from cbi_service.kit.routing import StorableTextRoute
from cbi_service.merchants import service
from cbi_service.merchants.schemas import MerchantCreate, MerchantDetail, MerchantOut

router = APIRouter(prefix="/v1/merchants", tags=["merchants"], route_class=StorableTextRoute)
Admin = Annotated[Principal, Depends(require_roles(Role.admin))]
Reader = Annotated[Principal, Depends(require_roles(Role.admin, Role.finance, Role.auditor))]
#: A merchant's key may read its own merchant (what it is owed), and no other.
OneReader = Annotated[Principal, Depends(require_roles(Role.admin, Role.finance, Role.auditor, Role.merchant))]


@router.post("", status_code=201, response_model=MerchantDetail)
async def create_merchant(
    body: MerchantCreate, session: SessionDep, principal: Admin, idem: IdempotencyDep
) -> Response:
    """A merchant accepting the paper vouchers of `programme_ids`, and where it is paid: `iban` and `bic`
    where its country uses IBANs, otherwise `account_number` and `bank_code`."""
    return await idem.run(body, lambda: service.create_merchant(session, principal, body), status_code=201)


@router.get("", response_model=Page[MerchantOut])
async def list_merchants(
    session: SessionDep,
    _: Reader,
    page: PageDep,
    programme_id: uuid.UUID | None = None,
    country: Annotated[str | None, Query(pattern=r"^[A-Z]{2}$")] = None,
) -> Page[MerchantOut]:
    rows, programmes = await service.list_merchants(
        session, after_id=page.after_id(), limit=page.limit, programme_id=programme_id, country=country
    )
    items, cursor = page_of(rows, page.limit, lambda m: [m.id])
    return Page(items=[MerchantOut.of(m, programmes[m.id]) for m in items], next_cursor=cursor)


@router.get("/{merchant_id}", response_model=MerchantDetail)
async def get_merchant(merchant_id: uuid.UUID, session: SessionDep, principal: OneReader) -> MerchantDetail:
    """The merchant with its `unsettled` total: redeemed there and not yet paid. A merchant's key reads only
    its own merchant (another's is not found)."""
    if principal.merchant_id is not None and principal.merchant_id != merchant_id:
        raise NotFound("Merchant not found.")
    return await service.get_merchant(session, merchant_id)
