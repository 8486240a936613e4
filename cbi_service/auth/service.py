"""API keys: random, shown once, stored as SHA-256 (they carry 256 bits, so a slow hash adds nothing)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.audit.service import record_audit
from cbi_service.auth.models import ApiKey
from cbi_service.auth.repository import ApiKeyRepository
from cbi_service.auth.roles import Principal, Role
from cbi_service.kit.errors import Forbidden, Unauthorized

KEY_PREFIX = "cbi_"


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def check_key_roles(roles: Iterable[Role], merchant_id: uuid.UUID | None) -> list[str]:
    """The key's role names, sorted, or ValueError: at least one role; a merchant's key holds the `merchant`
    role alone, and only a merchant's key names a merchant."""
    role_list = sorted({Role(r).value for r in roles})
    if not role_list:
        raise ValueError("an API key needs at least one role")
    if (merchant_id is not None) != (Role.merchant.value in role_list):
        raise ValueError("the merchant role needs a merchant (--merchant ID), and only a merchant's key names one")
    if merchant_id is not None and role_list != [Role.merchant.value]:
        raise ValueError("a merchant's key holds the merchant role alone")
    return role_list


async def create_api_key(
    session: AsyncSession, name: str, roles: Iterable[Role], *, merchant_id: uuid.UUID | None = None
) -> tuple[ApiKey, str]:
    """A new key; a merchant's (`merchant_id`) holds the `merchant` role and no other, so it can reach only
    the merchant routes, always for that merchant."""
    role_list = check_key_roles(roles, merchant_id)
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        name=name, prefix=raw[: len(KEY_PREFIX) + 6], key_hash=hash_key(raw), roles=role_list, merchant_id=merchant_id
    )
    await ApiKeyRepository(session).add(key)
    summary: dict[str, object] = {"name": name, "roles": role_list}
    if merchant_id is not None:
        summary["merchant_id"] = str(merchant_id)
    await record_audit(session, None, "api_key.created", "api_key", key.id, None, summary)
    return key, raw


async def authenticate(session: AsyncSession, raw_key: str) -> Principal | None:
    key = await ApiKeyRepository(session).find_active_by_hash(hash_key(raw_key))
    if key is None:
        return None
    return Principal(id=key.id, name=key.name, roles=frozenset(Role(r) for r in key.roles), merchant_id=key.merchant_id)


async def authorize(session: AsyncSession, raw_key: str, roles: Iterable[Role]) -> Principal:
    """The key's principal if it holds one of `roles`: the operators' commands act under a person's key, as
    the API does, so the audit trail names who acted."""
    principal = await authenticate(session, raw_key) if raw_key else None
    if principal is None:
        raise Unauthorized("A valid API key is required.")
    allowed = frozenset(roles)
    if not principal.has_any(allowed):
        raise Forbidden(f"This API key lacks a role for this operation (one of: {', '.join(sorted(allowed))}).")
    return principal


async def revoke_api_key(session: AsyncSession, key_id: uuid.UUID) -> bool:
    revoked = await ApiKeyRepository(session).revoke(key_id)
    if revoked:
        await record_audit(session, None, "api_key.revoked", "api_key", key_id, {"revoked": False}, {"revoked": True})
    return revoked
