"""Bearer API-key authentication and role checks as FastAPI dependencies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.auth.roles import STAFF_ROLES, Principal, Role
from cbi_service.auth.service import authenticate
from cbi_service.kit.db import SessionDep, lookup
from cbi_service.kit.errors import Forbidden, Unauthorized
from cbi_service.kit.idempotency import bind_caller

_bearer = HTTPBearer(auto_error=False, description="An API key created with `cbi-service apikey create`.")


async def current_principal(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    return await _authenticated(request, session, credentials)


async def current_principal_apart(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """`current_principal` for a route whose work is carried out in a transaction of its own (a group
    commit), which opens no unit of work: the key is read on a lookup connection (`kit.db.lookup`), given back
    at once, so the request holds none while it waits. Read on every request all the same: a revoked key is
    refused from the next request on."""
    return await lookup(
        request.app.state.lookup_sessions, lambda session: _authenticated(request, session, credentials)
    )


async def _authenticated(
    request: Request, session: AsyncSession, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise Unauthorized("A valid API key is required.")
    principal = await authenticate(session, credentials.credentials)
    if principal is None:
        raise Unauthorized("A valid API key is required.")
    bind_caller(request, principal.id)
    structlog.contextvars.bind_contextvars(actor_id=str(principal.id))
    return principal


class _RoleCheck:
    """Admits callers holding any of `roles`; a 403 names them (contract §2) in `allowed_roles`, in the order
    `Role` lists them, and in its detail."""

    def __init__(self, roles: tuple[Role, ...]) -> None:
        self.allowed = frozenset(roles)
        self.names = [role.value for role in Role if role in self.allowed]
        self.detail = f"This API key lacks a role for this operation; allowed: {', '.join(self.names)}."

    def admit(self, principal: Principal) -> Principal:
        if not principal.has_any(self.allowed):
            raise Forbidden(self.detail, extra={"allowed_roles": self.names})
        return principal


def require_roles(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting callers holding any of `roles` (`_RoleCheck`), authenticated in the request's
    unit of work."""
    check = _RoleCheck(roles)

    async def _check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        return check.admit(principal)

    return _check


def require_roles_apart(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """`require_roles` for a route that opens no unit of work (`current_principal_apart`)."""
    check = _RoleCheck(roles)

    async def _check(principal: Annotated[Principal, Depends(current_principal_apart)]) -> Principal:
        return check.admit(principal)

    return _check


READ_ANY = tuple(role for role in Role if role in STAFF_ROLES)
"""Who may read what any staff role may read (§2): every role but `merchant`."""
