"""Routes of registry-wide sweeps (`POST /v1/dedup/check` is beneficiaries': it runs a registration's dedup)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from cbi_service.auth.dependencies import require_roles
from cbi_service.auth.roles import Principal, Role
from cbi_service.dedup import service
from cbi_service.dedup.repository import SweepRepository
from cbi_service.dedup.schemas import SweepAccepted, SweepIn, SweepOut, SweepStatus
from cbi_service.kit.db import SessionDep
from cbi_service.kit.idempotency import IdempotencyDep
from cbi_service.kit.pagination import Page, PageDep, page_of
from cbi_service.kit.routing import StorableTextRoute

router = APIRouter(tags=["dedup"], route_class=StorableTextRoute)
Sweeper = Annotated[Principal, Depends(require_roles(Role.admin, Role.registrar))]
SweepReader = Annotated[Principal, Depends(require_roles(Role.admin, Role.registrar, Role.auditor))]


@router.post(
    "/v1/dedup/sweeps",
    status_code=202,
    response_model=SweepAccepted,
    summary="Compare every matchable record with every other; adjudications for undecided pairs",
)
async def start_sweep(body: SweepIn, session: SessionDep, principal: Sweeper, idem: IdempotencyDep) -> Response:
    """Runs in the background; it never changes a beneficiary's status, only opens adjudications."""

    async def effect() -> SweepAccepted:
        sweep = await service.start_sweep(session, principal, body.programme_id, engine=body.engine)
        return SweepAccepted(id=sweep.id, status="queued")

    return await idem.run(body, effect, status_code=202)


@router.get("/v1/dedup/sweeps", response_model=Page[SweepOut])
async def list_sweeps(
    session: SessionDep, _: SweepReader, page: PageDep, status: SweepStatus | None = None
) -> Page[SweepOut]:
    rows = await SweepRepository(session).list(after_id=page.after_id(), limit=page.limit, status=status)
    items, cursor = page_of(rows, page.limit, lambda s: [s.id])
    return Page(items=[SweepOut.of(s) for s in items], next_cursor=cursor)


@router.get("/v1/dedup/sweeps/{sweep_id}", response_model=SweepOut)
async def get_sweep(sweep_id: uuid.UUID, session: SessionDep, _: SweepReader) -> SweepOut:
    return SweepOut.of(await SweepRepository(session).require(sweep_id))
