"""Console sign-in: an API key exchanged for a signed session cookie, CSRF tokens bound to the session.

The cookie never holds the key. It holds the key's id, a random session id and the sign-in time, signed
(itsdangerous) with a secret derived from the database's index key: every process serving the same
database signs and checks alike, and nothing new needs configuring. The signature's own timestamp is the
last activity: a cookie older than `IDLE_SECONDS` is refused, and each request re-signs it, so a session
ends after that long without a request (and after `MAX_SECONDS` in any case).

Each request reads the key again by its id: a revoked key, or roles changed since sign-in, count at once.
Sign-in and sign-out are recorded in the audit trail (resource `console_session`), and a session whose
sign-out is recorded there is refused: a copy of the cookie taken before sign-out opens nothing after it.

A visitor who is not signed in gets a cookie with a session id alone, so that the sign-in form has a CSRF
token too (login CSRF); signing in issues a new session id (no fixation). The CSRF token of every form is
the session id signed under a salt of its own: a page of another origin can neither read nor make it.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, Signer, URLSafeTimedSerializer
from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.audit.repository import AuditRepository
from cbi_service.audit.service import record_audit
from cbi_service.auth.repository import ApiKeyRepository
from cbi_service.auth.roles import STAFF_ROLES, Principal, Role
from cbi_service.auth.service import authenticate
from cbi_service.kit.crypto import keyring

COOKIE = "cbi_console"
IDLE_SECONDS = 30 * 60
MAX_SECONDS = 12 * 60 * 60
REFRESH_AFTER_SECONDS = 30
"""A cookie younger than this is not re-signed: most pages are followed by their assets and a redirect."""
RESOURCE = "console_session"
SIGNED_IN = "console.signed_in"
SIGNED_OUT = "console.signed_out"
_SESSION_SALT = "cbi-console-session"
_CSRF_SALT = "cbi-console-csrf"


@dataclass(frozen=True)
class Visit:
    """What a request's cookie says: a session id, and when signed in, who and since when."""

    sid: str
    principal: Principal | None = None
    signed_in_at: int | None = None
    #: Seconds since the cookie was last signed.
    age: int = 0


async def _secret(session: AsyncSession) -> bytes:
    """The signing secret: a keyed digest under the database's index key, for this purpose alone."""
    ring = await keyring(session)
    return ring.blind("console-session-signing", "v1")


async def _serializer(session: AsyncSession) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(await _secret(session), salt=_SESSION_SALT)


def new_sid() -> str:
    return secrets.token_urlsafe(18)


async def cookie_value(session: AsyncSession, visit: Visit) -> str:
    payload: dict[str, Any] = {"s": visit.sid}
    if visit.principal is not None:
        payload |= {"k": str(visit.principal.id), "t": visit.signed_in_at}
    return (await _serializer(session)).dumps(payload)


async def read_visit(session: AsyncSession, cookie: str | None) -> Visit | None:
    """The visit a cookie stands for, or None when there is none worth trusting (forged, idle too long, for
    a key revoked or no longer staff, or signed out)."""
    if not cookie:
        return None
    try:
        payload, signed_at = (await _serializer(session)).loads(cookie, max_age=IDLE_SECONDS, return_timestamp=True)
    except BadSignature:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("s"), str):
        return None
    sid = payload["s"]
    age = max(0, int(time.time() - signed_at.timestamp()))
    if "k" not in payload:
        return Visit(sid=sid, age=age)
    signed_in_at = payload.get("t")
    if not isinstance(signed_in_at, int) or time.time() - signed_in_at > MAX_SECONDS:
        return None
    try:
        key_id = uuid.UUID(str(payload["k"]))
    except ValueError:
        return None
    principal = await _principal(session, key_id)
    if principal is None or await _signed_out(session, sid):
        return None
    return Visit(sid=sid, principal=principal, signed_in_at=signed_in_at, age=age)


async def _principal(session: AsyncSession, key_id: uuid.UUID) -> Principal | None:
    """The key as it is now (a revoked key signs nobody in); merchants' keys have no console."""
    key = await ApiKeyRepository(session).get(key_id)
    if key is None or key.revoked_at is not None:
        return None
    roles = frozenset(Role(r) for r in key.roles) & STAFF_ROLES
    return Principal(id=key.id, name=key.name, roles=roles) if roles else None


async def _signed_out(session: AsyncSession, sid: str) -> bool:
    events = await AuditRepository(session).search(
        actor_id=None,
        resource_type=RESOURCE,
        resource_id=sid,
        action=SIGNED_OUT,
        occurred_from=None,
        occurred_to=None,
        after_id=None,
        limit=1,
    )
    return bool(events)


async def sign_in(session: AsyncSession, raw_key: str) -> Visit | None:
    """A new signed-in visit for a staff key, or None for a key that is unknown, revoked or a merchant's."""
    found = await authenticate(session, raw_key.strip()) if raw_key.strip() else None
    if found is None:
        return None
    principal = await _principal(session, found.id)
    if principal is None:
        return None
    visit = Visit(sid=new_sid(), principal=principal, signed_in_at=int(time.time()))
    await record_audit(
        session,
        principal,
        SIGNED_IN,
        RESOURCE,
        visit.sid,
        None,
        {"roles": sorted(role.value for role in principal.roles)},
    )
    return visit


async def sign_out(session: AsyncSession, visit: Visit) -> None:
    if visit.principal is not None:
        await record_audit(session, visit.principal, SIGNED_OUT, RESOURCE, visit.sid)


async def csrf_token(session: AsyncSession, visit: Visit) -> str:
    return Signer(await _secret(session), salt=_CSRF_SALT).sign(visit.sid).decode()


def same_token(given: str, expected: str) -> bool:
    return bool(expected) and secrets.compare_digest(given.encode(), expected.encode())
