"""The job queue's public face: enqueue inside the caller's unit of work (a transactional outbox)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cbi_service.audit.service import Actor, record_audit
from cbi_service.jobs.models import Job
from cbi_service.jobs.repository import JobRepository
from cbi_service.kit.errors import Conflict, NotFound
from cbi_service.kit.telemetry import current_traceparent


async def enqueue(
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any],
    *,
    run_at: datetime | None = None,
    dedupe_key: str | None = None,
    max_attempts: int = 10,
) -> uuid.UUID | None:
    """Visible to workers only once the caller's transaction commits. Returns None if deduplicated.

    Inside a traced request or job, the job keeps its trace context: its run continues that trace.
    """
    if kind not in HANDLERS:
        raise LookupError(f"no job handler registered for {kind!r}")
    values: dict[str, Any] = {
        "kind": kind,
        "payload": payload,
        "dedupe_key": dedupe_key,
        "max_attempts": max_attempts,
        "request_id": structlog.contextvars.get_contextvars().get("request_id"),
        "traceparent": current_traceparent(),
    }
    if run_at is not None:
        values["run_at"] = run_at
    return await JobRepository(session).insert(values)


async def retry_failed(session: AsyncSession, actor: Actor, job_id: uuid.UUID) -> Job:
    """Put a failed job back in the queue with its attempts reset, in the audit trail under `actor`.

    Only a failed job: a queued or running one is already on its way, and a done one must not run twice.
    """
    repo = JobRepository(session)
    job = await repo.get(job_id, for_update=True)
    if job is None:
        raise NotFound(f"No job {job_id}.")
    if job.status != "failed":
        raise Conflict(f"Job {job_id} is {job.status}, not failed: only a failed job can be retried.")
    before = {"status": job.status, "attempts": job.attempts, "last_error": job.last_error}
    try:
        async with session.begin_nested():
            requeued = await repo.requeue_failed(job_id)
    except IntegrityError:
        raise Conflict(
            f"Job {job_id} cannot be retried: a queued or running job with the same dedupe key "
            f"({job.dedupe_key}) does its work."
        ) from None
    assert requeued is not None  # locked above, and failed
    await record_audit(session, actor, "job.retried", "job", job_id, before, {"status": "queued", "attempts": 0})
    return requeued


async def retry_all_failed(
    session: AsyncSession, actor: Actor, *, kind: str | None = None
) -> tuple[list[Job], list[Conflict]]:
    """`retry_failed` for every failed job (of `kind`): the jobs put back, and why the others were not."""
    retried: list[Job] = []
    refused: list[Conflict] = []
    for job_id in await JobRepository(session).failed_ids(kind=kind):
        try:
            retried.append(await retry_failed(session, actor, job_id))
        except Conflict as exc:
            refused.append(exc)
    return retried, refused


class JobInterrupted(Exception):
    """Raised by `JobContext.checkpoint` when the worker is stopping: the worker hands the job back."""


@dataclass
class JobContext:
    """What a handler gets: its payload and a session factory for its own units of work (the worker keeps
    the job's lease while it runs).

    A long handler calls `checkpoint()` where it can stop safely (its progress committed): once the worker
    is asked to stop, that raises JobInterrupted and the job goes back to the queue, this attempt not
    counted, for the next worker to resume.
    """

    job_id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    attempt: int
    session_factory: async_sessionmaker[AsyncSession]
    state: Any
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def checkpoint(self) -> None:
        if self.stopping.is_set():
            raise JobInterrupted


Handler = Callable[[JobContext], Awaitable[None]]
HANDLERS: dict[str, Handler] = {}


@dataclass(frozen=True)
class Periodic:
    """A job the worker keeps scheduled: at most one live instance, re-enqueued every `every_seconds`."""

    kind: str
    every_seconds: float


PERIODIC: dict[str, Periodic] = {}


def job_handler(kind: str, *, every_seconds: float | None = None) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        if kind in HANDLERS:
            raise ValueError(f"duplicate job handler {kind!r}")
        HANDLERS[kind] = fn
        if every_seconds is not None:
            PERIODIC[kind] = Periodic(kind, every_seconds)
        return fn

    return register
