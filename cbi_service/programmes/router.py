from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from cbi_service.auth.dependencies import READ_ANY, require_roles
from cbi_service.auth.roles import Principal, Role
from cbi_service.beneficiaries.schemas import EnrolmentRequest, EnrolmentResult
from cbi_service.kit.db import SessionDep
from cbi_service.kit.idempotency import IdempotencyDep, RequiredIdempotencyDep
from cbi_service.kit.pagination import Page, PageDep, page_of
from cbi_service.kit.routing import StorableTextRoute
from cbi_service.programmes import service
from cbi_service.programmes.schemas import (
    FundingCreate,
    FundingOut,
    ProgrammeBalancesOut,
    ProgrammeCreate,
    ProgrammeOut,
    ReportingPatch,
    Sector,
)

router = APIRouter(prefix="/v1/programmes", tags=["programmes"], route_class=StorableTextRoute)
Writer = Annotated[Principal, Depends(require_roles(Role.admin, Role.programme_officer))]
Reader = Annotated[Principal, Depends(require_roles(*READ_ANY))]
Finance = Annotated[Principal, Depends(require_roles(Role.finance))]
Enroller = Annotated[Principal, Depends(require_roles(Role.programme_officer, Role.registrar))]
#: Enrolments are served under their programme but documented with the beneficiaries they enrol.
enrolments_router = APIRouter(prefix="/v1/programmes", tags=["beneficiaries"], route_class=StorableTextRoute)


@router.post("", status_code=201, response_model=ProgrammeOut)
async def create_programme(
    request: Request, body: ProgrammeCreate, session: SessionDep, principal: Writer, idem: IdempotencyDep
) -> Response:
    settings = request.app.state.settings
    return await idem.run(body, lambda: service.create_programme(session, settings, principal, body), status_code=201)


@router.get("", response_model=Page[ProgrammeOut])
async def list_programmes(
    session: SessionDep,
    _: Reader,
    page: PageDep,
    country: Annotated[str | None, Query(pattern=r"^[A-Z]{2}$")] = None,
    sector: Sector | None = None,
) -> Page[ProgrammeOut]:
    rows = await service.list_programmes(
        session,
        after_id=page.after_id(),
        limit=page.limit,
        country=country,
        sector=sector.value if sector else None,
    )
    items, cursor = page_of(rows, page.limit, lambda p: [p.id])
    return Page(items=[ProgrammeOut.of(p) for p in items], next_cursor=cursor)


@router.get("/{programme_id}", response_model=ProgrammeOut)
async def get_programme(programme_id: uuid.UUID, session: SessionDep, _: Reader) -> ProgrammeOut:
    return ProgrammeOut.of(await service.get_programme(session, programme_id))


@router.patch("/{programme_id}", response_model=ProgrammeOut)
async def change_reporting_identity(
    programme_id: uuid.UUID, body: ReportingPatch, session: SessionDep, principal: Writer
) -> ProgrammeOut:
    """Set or correct the programme's reporting identity in R4V's 5W (§16), the only fields that change after
    creation: omitted fields stay; `implementing_partner` and `activity_description` may be cleared with null.
    Audited."""
    return await service.change_reporting_identity(session, principal, programme_id, body)


@router.post("/{programme_id}/funds", status_code=201, response_model=FundingOut)
async def fund_programme(
    programme_id: uuid.UUID, body: FundingCreate, session: SessionDep, principal: Finance, idem: RequiredIdempotencyDep
) -> Response:
    """Post donor money to the programme's `available` balance (Idempotency-Key required)."""
    key = idem.key or ""
    return await idem.run(
        body, lambda: service.fund_programme(session, principal, programme_id, body, key), status_code=201
    )


@router.get("/{programme_id}/balances", response_model=ProgrammeBalancesOut)
async def programme_balances(programme_id: uuid.UUID, session: SessionDep, _: Reader) -> ProgrammeBalancesOut:
    return await service.programme_balances(session, programme_id)


@enrolments_router.post("/{programme_id}/enrolments", response_model=EnrolmentResult)
async def enrol(
    programme_id: uuid.UUID, body: EnrolmentRequest, session: SessionDep, principal: Enroller, idem: IdempotencyDep
) -> Response:
    return await idem.run(body, lambda: service.enrol(session, principal, programme_id, body))
