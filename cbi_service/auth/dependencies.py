"""Bearer API-key authentication and role checks as FastAPI dependencies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cbi_service.auth.roles import STAFF_ROLES, Principal, Role
from cbi_service.auth.service import authenticate
from cbi_service.kit.db import SessionDep
from cbi_service.kit.errors import Forbidden, Unauthorized
from cbi_service.kit.idempotency import bind_caller

_bearer = HTTPBearer(auto_error=False, description="An API key created with `cbi-service apikey create`.")


async def current_principal(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("A valid API key is required.")
    principal = await authenticate(session, credentials.credentials)
    if principal is None:
        raise Unauthorized("A valid API key is required.")
    bind_caller(request, principal.id)
    structlog.contextvars.bind_contextvars(actor_id=str(principal.id))
    return principal


def require_roles(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting callers holding any of `roles`; a 403 names them (contract §2) in
    `allowed_roles`, in the order `Role` lists them, and in its detail."""
    allowed = frozenset(roles)
    names = [role.value for role in Role if role in allowed]
    detail = f"This API key lacks a role for this operation; allowed: {', '.join(names)}."

    async def _check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.has_any(allowed):
            raise Forbidden(detail, extra={"allowed_roles": names})
        return principal

    return _check


READ_ANY = tuple(role for role in Role if role in STAFF_ROLES)
"""Who may read what any staff role may read (§2): every role but `merchant`."""
