from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends

from cbi_service.auth.dependencies import require_roles
from cbi_service.auth.roles import Principal, Role
from cbi_service.beneficiaries.masking import present
from cbi_service.beneficiaries.schemas import BeneficiaryOut
from cbi_service.kit.db import SessionDep
from cbi_service.kit.routing import StorableTextRoute
from cbi_service.privacy import service
from cbi_service.privacy.schemas import ErasureIn, PersonalDataOut

router = APIRouter(tags=["personal data"], route_class=StorableTextRoute)
Keeper = Annotated[Principal, Depends(require_roles(Role.admin, Role.registrar))]
Eraser = Annotated[Principal, Depends(require_roles(Role.admin))]


@router.get(
    "/v1/beneficiaries/{beneficiary_id}/personal-data",
    response_model=PersonalDataOut,
    summary="Everything held about one person (a request for access to their data)",
)
async def personal_data(beneficiary_id: uuid.UUID, session: SessionDep, principal: Keeper) -> PersonalDataOut:
    held = await service.personal_data(session, beneficiary_id)
    route = "GET /v1/beneficiaries/{beneficiary_id}/personal-data"
    return held.model_copy(update={"record": (await present(session, principal, route, [held.record]))[0]})


@router.post(
    "/v1/beneficiaries/{beneficiary_id}/erasure",
    response_model=BeneficiaryOut,
    summary="Erase a person's personal data beyond recovery (409 while money can still move to them)",
)
async def erase(beneficiary_id: uuid.UUID, body: ErasureIn, session: SessionDep, principal: Eraser) -> BeneficiaryOut:
    erased = await service.erase(session, principal, beneficiary_id, body.reason)
    return (await present(session, principal, "POST /v1/beneficiaries/{beneficiary_id}/erasure", [erased]))[0]
