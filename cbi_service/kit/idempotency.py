"""Idempotency-Key for every POST that creates something or moves money (contract §2).

The key row is written in the same transaction as the effect it guards, so a committed effect always has
its response stored. A transaction-scoped advisory lock on (caller, key) makes a second request with the key
answer 409 while the first is still in flight.

The first response is what the key answers, whatever its status: a request refused with a 4xx (a release
of a batch not yet approved) replays that refusal, so the same request can never take effect later, once
the state has changed. The effect runs inside a savepoint; a 4xx rolls back to it, undoing the effect, and
the problem is stored in the request's transaction, which then commits with only the key row in it.
Keys are scoped by caller: authentication names the caller with `bind_caller` (kit knows no API keys).
Not stored, so the key stays free for a retry of the same request:
- a 5xx (provider or database unavailable, an unexpected fault): no decision was reached, and a retry may
  succeed;
- what is answered before the effect runs: the 409 while the key is in flight, the 422 for a key reused
  with another body, and requests refused before reaching the route (authentication, body validation).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import (
    ARRAY,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    bindparam,
    delete,
    func,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from cbi_service.kit.crypto import keyring
from cbi_service.kit.db import SessionDep
from cbi_service.kit.errors import PROBLEM_JSON, AppError, Conflict, UnprocessableEntity, problem_of
from cbi_service.kit.models import Base, CreatedAt

REPLAY_HEADER = "Idempotent-Replayed"
KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"


class IdempotencyRecord(CreatedAt, Base):
    """A key's first response, sealed (a registration's response is a person's data, §13) under a key
    version; `subject_id` is what the response created, so erasing a person forgets their responses."""

    __tablename__ = "idempotency_keys"

    principal_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    response_status: Mapped[int] = mapped_column(Integer)
    key_version: Mapped[int] = mapped_column(ForeignKey("crypto_keys.version"), index=True)
    response_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    subject_id: Mapped[uuid.UUID | None] = mapped_column(index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


def _store_statement() -> Insert:
    """The upsert `store` runs, built once: building it anew (its `excluded` columns) cost more than running it."""
    columns = ("principal_id", "key", "request_hash", "response_status", "key_version", "response_sealed", "subject_id")
    expires = func.now() + func.make_interval(0, 0, 0, 0, bindparam("ttl_hours", type_=Integer))
    stmt = insert(IdempotencyRecord).values({**{name: bindparam(name) for name in columns}, "expires_at": expires})
    replaced = ("request_hash", "response_status", "key_version", "response_sealed", "subject_id", "expires_at")
    return stmt.on_conflict_do_update(
        index_elements=["principal_id", "key"],
        set_={k: stmt.excluded[k] for k in replaced},
        where=IdempotencyRecord.expires_at <= func.now(),
    )


def response_aad(principal_id: uuid.UUID, key: str) -> bytes:
    return b"idempotency_keys:" + principal_id.bytes + key.encode()


_STORE = _store_statement()


class IdempotencyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def try_lock(self, principal_id: uuid.UUID, key: str) -> bool:
        stmt = text("SELECT pg_try_advisory_xact_lock(hashtextextended(:scope, 0))")
        return bool((await self.session.execute(stmt, {"scope": f"idem:{principal_id}:{key}"})).scalar_one())

    async def find_live(
        self, principal_id: uuid.UUID, key: str, *, outlasting: timedelta = timedelta(0)
    ) -> IdempotencyRecord | None:
        """The key's answer if it is kept for at least `outlasting` more."""
        stmt = select(IdempotencyRecord).where(
            IdempotencyRecord.principal_id == principal_id,
            IdempotencyRecord.key == key,
            IdempotencyRecord.expires_at > func.now() + outlasting,
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def try_lock_many(self, scopes: Sequence[tuple[uuid.UUID, str]]) -> list[bool]:
        """`try_lock` for many (caller, key) at once, in one statement; a lock this transaction already holds is
        taken again (the caller tells repeated keys apart)."""
        stmt = text(
            "SELECT pg_try_advisory_xact_lock(hashtextextended(s.scope, 0)) FROM unnest(:scopes) WITH ORDINALITY"
            " AS s(scope, n) ORDER BY s.n"
        ).bindparams(bindparam("scopes", type_=ARRAY(Text())))
        rows = await self.session.execute(stmt, {"scopes": [f"idem:{caller}:{key}" for caller, key in scopes]})
        return [bool(locked) for locked in rows.scalars()]

    async def find_live_many(
        self, scopes: Sequence[tuple[uuid.UUID, str]]
    ) -> dict[tuple[uuid.UUID, str], IdempotencyRecord]:
        if not scopes:
            return {}
        stmt = select(IdempotencyRecord).where(
            tuple_(IdempotencyRecord.principal_id, IdempotencyRecord.key).in_(list(scopes)),
            IdempotencyRecord.expires_at > func.now(),
        )
        return {(r.principal_id, r.key): r for r in (await self.session.execute(stmt)).scalars()}

    async def store(
        self,
        principal_id: uuid.UUID,
        key: str,
        request_hash: str,
        status: int,
        body: str,
        ttl_hours: int,
        subject_id: uuid.UUID | None = None,
    ) -> None:
        """Insert, or take over an expired row with the same key (the advisory lock excludes races)."""
        await self.store_many([(principal_id, key, request_hash, status, body, subject_id)], ttl_hours)

    async def store_many(
        self, answers: Sequence[tuple[uuid.UUID, str, str, int, str, uuid.UUID | None]], ttl_hours: int
    ) -> None:
        """`store` for many (caller, key, request hash, status, body, subject), sealed and written at once."""
        if not answers:
            return
        ring = await keyring(self.session)
        version = await ring.active(self.session)
        rows = [
            {
                "principal_id": caller,
                "key": key,
                "request_hash": request_hash,
                "response_status": status,
                "key_version": version,
                "response_sealed": ring.seal(version, body.encode(), response_aad(caller, key)),
                "subject_id": subject_id,
                "ttl_hours": int(ttl_hours),
            }
            for caller, key, request_hash, status, body, subject_id in answers
        ]
        await self.session.execute(_STORE, rows)

    async def response_body(self, record: IdempotencyRecord) -> str:
        ring = await keyring(self.session)
        await ring.require(self.session, [record.key_version])
        return ring.open(
            record.key_version, record.response_sealed, response_aad(record.principal_id, record.key)
        ).decode()

    async def forget_subject(self, subject_id: uuid.UUID) -> None:
        """Drop the stored responses about a subject (an erased person): nothing of them may survive."""
        await self.session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.subject_id == subject_id))

    async def reseal(self, version: int, limit: int) -> int:
        """Seal again under `version` up to `limit` stored responses sealed under another (key rotation)."""
        stmt = (
            select(IdempotencyRecord)
            .where(IdempotencyRecord.key_version != version)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        records = (await self.session.execute(stmt)).scalars().all()
        ring = await keyring(self.session)
        await ring.require(self.session, {r.key_version for r in records})
        for record in records:
            aad = response_aad(record.principal_id, record.key)
            record.response_sealed = ring.seal(version, ring.open(record.key_version, record.response_sealed, aad), aad)
            record.key_version = version
        await self.session.flush()
        return len(records)

    async def count_sealed_under_other(self, version: int) -> int:
        stmt = select(func.count()).select_from(IdempotencyRecord).where(IdempotencyRecord.key_version != version)
        return int((await self.session.execute(stmt)).scalar_one())

    async def purge_expired(self) -> None:
        await self.session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= func.now()))


def fingerprint(method: str, path: str, payload: Any) -> str:
    """Hash of what the client asked: method, path and a canonical form of the body."""
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json")
    body = payload if isinstance(payload, bytes) else json.dumps(jsonable_encoder(payload), sort_keys=True).encode()
    digest = hashlib.sha256()
    for part in (method.encode(), b"\0", path.encode(), b"\0", body):
        digest.update(part)
    return digest.hexdigest()


def bind_caller(request: Request, caller_id: uuid.UUID) -> None:
    """Name the authenticated caller whose keys this request's Idempotency-Key is one of."""
    request.state.idempotency_caller = caller_id


def _caller_of(request: Request) -> uuid.UUID:
    caller: uuid.UUID | None = getattr(request.state, "idempotency_caller", None)
    if caller is None:
        raise RuntimeError("an Idempotency-Key on a route that authenticates no caller")
    return caller


_ANSWER_MARGIN = timedelta(minutes=1)
"""How long a key found `answered` must still be kept: `run`, a moment later, replays it rather than run an
effect prepared without what was skipped."""


class Idempotency:
    """Runs a request's effect at most once per (caller, key) and replays its first response.

    The caller is read when the effect runs, once every dependency of the route (its role check, which
    authenticates) has been resolved."""

    def __init__(self, session: AsyncSession, request: Request, key: str | None) -> None:
        self.session = session
        self.request = request
        self.key = key

    async def answered(self) -> bool:
        """Whether the key holds an answer already, which `run` gives without running the effect (the first
        answer replayed, or a 422 for another body): a route need not ask a partner's system for what the
        effect would have used. A key kept for less than a minute more counts as unanswered."""
        if self.key is None:
            return False
        repo = IdempotencyRepository(self.session)
        return await repo.find_live(_caller_of(self.request), self.key, outlasting=_ANSWER_MARGIN) is not None

    async def run(self, payload: Any, effect: Callable[[], Awaitable[Any]], *, status_code: int = 200) -> Response:
        if self.key is None:
            return _json(status_code, _encode(await effect()))
        caller = _caller_of(self.request)
        repo = IdempotencyRepository(self.session)
        if not await repo.try_lock(caller, self.key):
            raise Conflict("A request with this Idempotency-Key is still being processed.")
        request_hash = fingerprint(self.request.method, self.request.url.path, payload)
        previous = await repo.find_live(caller, self.key)
        if previous is not None:
            if previous.request_hash != request_hash:
                raise _reused_key()
            response = _json(previous.response_status, await repo.response_body(previous))
            response.headers[REPLAY_HEADER] = "true"
            return response
        ttl = self.request.app.state.settings.idempotency_ttl_hours
        try:
            async with self.session.begin_nested():
                result = await effect()
                body = _encode(result)
        except AppError as exc:
            if exc.status >= 500:
                raise
            refusal = problem_of(exc)
            await repo.store(caller, self.key, request_hash, exc.status, bytes(refusal.body).decode(), ttl)
            return refusal
        subject = getattr(result, "id", None)
        await repo.store(
            caller, self.key, request_hash, status_code, body, ttl, subject if isinstance(subject, uuid.UUID) else None
        )
        return _json(status_code, body)


@dataclass(frozen=True)
class KeyedRequest:
    """A request under an Idempotency-Key, carried out in a group (`run_many`)."""

    caller: uuid.UUID
    key: str
    request_hash: str
    """`fingerprint` of what was asked."""


@dataclass(frozen=True)
class Answer:
    """A request's response, as `run_many` decided it: to send as it is."""

    status: int
    body: str
    replayed: bool = False

    def response(self) -> Response:
        response = _json(self.status, self.body)
        if self.replayed:
            response.headers[REPLAY_HEADER] = "true"
        return response


GroupEffect = Callable[[Sequence[int]], Awaitable[Sequence[BaseModel | AppError]]]
"""Carries out the requests of the given positions, each with a result or a 4xx refusal, writing nothing for
those it refuses (a group has no savepoint per request)."""


async def run_many(
    session: AsyncSession,
    requests: Sequence[KeyedRequest],
    effect: GroupEffect,
    *,
    status_code: int,
    ttl_hours: int,
) -> list[Answer]:
    """`Idempotency.run` for the requests of a group commit, in a few statements whatever their number.

    Each request answers as it would alone: a key in flight (in another transaction, or earlier in the same
    group) is a 409 and a key reused with another body a 422, neither stored; a key answered before replays its
    first response; the rest go to `effect`, and its results and refusals are stored under their keys."""
    repo = IdempotencyRepository(session)
    scopes = [(r.caller, r.key) for r in requests]
    locked = await repo.try_lock_many(scopes)
    answers: list[Answer | None] = [None] * len(requests)
    seen: set[tuple[uuid.UUID, str]] = set()
    for n, (scope, free) in enumerate(zip(scopes, locked, strict=True)):
        if not free or scope in seen:
            answers[n] = _answer(Conflict("A request with this Idempotency-Key is still being processed."))
        seen.add(scope)
    held = [n for n, answer in enumerate(answers) if answer is None]
    previous = await repo.find_live_many([scopes[n] for n in held])
    todo = []
    for n in held:
        record = previous.get(scopes[n])
        if record is None:
            todo.append(n)
        elif record.request_hash != requests[n].request_hash:
            answers[n] = _answer(_reused_key())
        else:
            answers[n] = Answer(record.response_status, await repo.response_body(record), replayed=True)
    results = await effect(todo) if todo else []
    stored = []
    for n, result in zip(todo, results, strict=True):
        if isinstance(result, AppError):
            if result.status >= 500:
                raise result
            answer = _answer(result)
            subject = None
        else:
            answer = Answer(status_code, _encode(result))
            subject = getattr(result, "id", None)
        answers[n] = answer
        request = requests[n]
        stored.append(
            (
                request.caller,
                request.key,
                request.request_hash,
                answer.status,
                answer.body,
                subject if isinstance(subject, uuid.UUID) else None,
            )
        )
    await repo.store_many(stored, ttl_hours)
    return [answer for answer in answers if answer is not None]


def _answer(error: AppError) -> Answer:
    return Answer(error.status, bytes(problem_of(error).body).decode())


def _reused_key() -> UnprocessableEntity:
    return UnprocessableEntity(
        "This Idempotency-Key was used with a different request.",
        errors=[{"field": "Idempotency-Key", "message": "reused with a different request body"}],
    )


def _encode(result: Any) -> str:
    """The response body: a model serialised by pydantic itself (what `jsonable_encoder` would give, in a
    fraction of the time for a large one such as an offline sync's ten thousand outcomes)."""
    if isinstance(result, BaseModel):
        return result.model_dump_json(by_alias=True)
    return json.dumps(jsonable_encoder(result), separators=(",", ":"))


def _json(status_code: int, body: str) -> Response:
    """A stored body with its media type: every error this service answers is a problem document."""
    media_type = PROBLEM_JSON if status_code >= 400 else JSONResponse.media_type
    return Response(content=body, status_code=status_code, media_type=media_type)


_KEY_DOC = "Makes the request safe to retry: the same key and body replay the first response (kept ≥ 24 h)."


async def optional_idempotency(
    request: Request,
    session: SessionDep,
    key: Annotated[str | None, Header(alias="Idempotency-Key", pattern=KEY_PATTERN, description=_KEY_DOC)] = None,
) -> Idempotency:
    return Idempotency(session, request, key)


async def required_idempotency(
    request: Request,
    session: SessionDep,
    key: Annotated[str, Header(alias="Idempotency-Key", pattern=KEY_PATTERN, description=_KEY_DOC)],
) -> Idempotency:
    return Idempotency(session, request, key)


IdempotencyDep = Annotated[Idempotency, Depends(optional_idempotency)]
RequiredKeyDep = Annotated[str, Header(alias="Idempotency-Key", pattern=KEY_PATTERN, description=_KEY_DOC)]
"""The key alone, for a route whose effect runs in a group commit (`run_many`) rather than in its request."""
RequiredIdempotencyDep = Annotated[Idempotency, Depends(required_idempotency)]
