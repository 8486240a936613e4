"""The API's operations on one entitlement that go through its provider (served under /v1/entitlements), and
the providers a programme may name (`/v1/providers`)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from cbi_service.auth.dependencies import READ_ANY, require_roles
from cbi_service.auth.roles import Principal, Role
from cbi_service.entitlements.schemas import EntitlementOut
from cbi_service.issuance import service
from cbi_service.issuance.providers import list_providers
from cbi_service.issuance.schemas import ProviderList
from cbi_service.kit.db import SessionDep
from cbi_service.kit.idempotency import RequiredIdempotencyDep
from cbi_service.kit.routing import StorableTextRoute

router = APIRouter(prefix="/v1/entitlements", tags=["entitlements"], route_class=StorableTextRoute)
Operator = Annotated[Principal, Depends(require_roles(Role.finance, Role.programme_officer))]
providers_router = APIRouter(prefix="/v1/providers", tags=["providers"], route_class=StorableTextRoute)
Reader = Annotated[Principal, Depends(require_roles(*READ_ANY))]


@router.post("/{entitlement_id}/retry", response_model=EntitlementOut)
async def retry_entitlement(
    entitlement_id: uuid.UUID, request: Request, session: SessionDep, principal: Operator, idem: RequiredIdempotencyDep
) -> Response:
    """failed → submitted: sent again under the same provider idempotency key (finance, programme_officer)."""
    settings = request.app.state.settings
    return await idem.run({}, lambda: service.retry_entitlement(session, settings, principal, entitlement_id))


@router.post("/{entitlement_id}/cancel", response_model=EntitlementOut)
async def cancel_entitlement(
    entitlement_id: uuid.UUID, request: Request, session: SessionDep, principal: Operator, idem: RequiredIdempotencyDep
) -> Response:
    """Before issue (pending, submitted or failed), or an unredeemed voucher; a released one is cancelled at the
    provider first."""
    settings = request.app.state.settings
    return await idem.run({}, lambda: service.cancel_entitlement(session, settings, principal, entitlement_id))


@providers_router.get("", response_model=ProviderList)
async def get_providers(request: Request, principal: Reader) -> ProviderList:
    """The providers a programme may name, built-in ones included, with the mechanisms each delivers (any role).
    Secrets, URLs and the other options of CBI_PROVIDERS are never shown."""
    return ProviderList(items=list_providers(request.app.state.settings))
