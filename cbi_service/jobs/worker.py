"""The durable worker: leases jobs with SKIP LOCKED, runs them, retries with backoff, survives crashes.

A job whose worker died is picked up again when its lease lapses; handlers make their effects idempotent
(they commit progress and effects together), so running a job again never repeats an effect.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import random
import socket
import time
from collections.abc import Collection
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cbi_service.jobs import metrics
from cbi_service.jobs.models import Job
from cbi_service.jobs.repository import JobRepository
from cbi_service.jobs.service import HANDLERS, PERIODIC, JobContext, JobInterrupted, enqueue
from cbi_service.kit.outage import OutageLog, unavailable_kind
from cbi_service.kit.telemetry import job_span, untraced

log = structlog.get_logger(__name__)
outage_log = OutageLog("worker_database_unavailable")

HANDLER_MODULES = (
    "cbi_service.jobs.tasks",
    "cbi_service.beneficiaries.tasks",
    "cbi_service.issuance.tasks",
    "cbi_service.entitlements.tasks",
    "cbi_service.webhooks.tasks",
    "cbi_service.reconciliation.tasks",
    "cbi_service.dedup.tasks",
    "cbi_service.keys.tasks",
    "cbi_service.privacy.tasks",
)


def load_handlers() -> None:
    """Import every module that registers job handlers (API processes need them to enqueue)."""
    for module in HANDLER_MODULES:
        importlib.import_module(module)


def backoff_seconds(attempt: int, base: float = 1.0, cap: float = 300.0) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))  # noqa: S311 - jitter, not security


def _log_failure(event: str, error: BaseException, **fields: object) -> None:
    """A database outage is one rate-limited line without traceback; anything else is logged in full."""
    if kind := unavailable_kind(error):
        outage_log.failure(kind)
    else:
        log.error(event, exc_info=error, **fields)


def _log_crash(task: asyncio.Task[None]) -> None:
    """A job whose bookkeeping failed (the database gone while recording its outcome): its lease lapses and
    it runs again; say why, as nobody awaits the task."""
    if not task.cancelled() and (error := task.exception()) is not None:
        _log_failure("job_crashed", error, task=task.get_name())


class Worker:
    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        state: Any,
        *,
        concurrency: int = 4,
        poll_seconds: float = 0.5,
        lease_seconds: float = 60.0,
        kinds: Collection[str] | None = None,
    ) -> None:
        """`kinds` limits the worker to those jobs (`cbi-service import` runs imports only); by default it
        runs every kind with a handler."""
        self.session_factory = session_factory
        self.state = state
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.lease_seconds = lease_seconds
        self.kinds = frozenset(kinds) if kinds is not None else None
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        #: Set once `run` is asked to stop: every job's `ctx.stopping`, so that each stops at its next checkpoint.
        self.stopping = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Keep up to `concurrency` jobs running until `stop` is set, then ask the running ones to stop at
        their next checkpoint (a long import hands its job back after the chunk in hand) and wait for them.

        A slot is refilled as soon as its job ends: a long job (an issuance lane, a backlog of webhooks)
        never keeps the other slots waiting for it. While the database is unreachable every poll fails: the
        loop goes on polling (logging the outage at a bounded rate) and resumes once it answers again.
        """
        running: set[asyncio.Task[None]] = set()
        stopping = asyncio.create_task(stop.wait())
        scheduled = False
        try:
            while not stop.is_set():
                if len(running) < self.concurrency:
                    try:
                        with untraced():
                            if not scheduled:
                                await self.schedule_periodic()
                                scheduled = True
                            jobs = await self._claim(self.concurrency - len(running))
                    except Exception as exc:
                        _log_failure("worker_loop_error", exc)
                        jobs = []
                    for job in jobs:
                        task = asyncio.create_task(self._run_job(job), name=f"job-{job.id}")
                        running.add(task)
                        task.add_done_callback(running.discard)
                        task.add_done_callback(_log_crash)
                # Until a slot frees, the poll interval passes (new jobs may be ready) or the worker stops.
                await asyncio.wait([stopping, *running], timeout=self.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            self.stopping.set()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    def _runs(self, kind: str) -> bool:
        return kind in HANDLERS and (self.kinds is None or kind in self.kinds)

    async def schedule_periodic(self) -> None:
        async with self.session_factory.begin() as session:
            for periodic in PERIODIC.values():
                if self._runs(periodic.kind):
                    await enqueue(session, periodic.kind, {}, dedupe_key=f"periodic:{periodic.kind}")

    async def run_once(self) -> int:
        """Lease a round of ready jobs and run them concurrently to their end; returns how many ran."""
        jobs = await self._claim(self.concurrency)
        if jobs:
            await asyncio.gather(*(self._run_job(job) for job in jobs))
        return len(jobs)

    async def _claim(self, limit: int) -> list[Job]:
        async with self.session_factory.begin() as session:
            repo = JobRepository(session)
            await repo.fail_abandoned()
            kinds = [kind for kind in HANDLERS if self._runs(kind)]
            return list(await repo.claim(self.worker_id, kinds, limit, self.lease_seconds))

    async def run_until_idle(self, max_rounds: int = 1000) -> None:
        """Run jobs until none is ready (tests use it to drain the queue)."""
        for _ in range(max_rounds):
            if await self.run_once() == 0:
                return

    async def _keep_lease(self, job: Job) -> None:
        """Extend the lease while the handler runs, so a long job is never taken over by another worker."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self._heartbeat(job)
            except Exception as exc:
                if kind := unavailable_kind(exc):
                    outage_log.failure(kind)
                else:
                    log.warning("lease_extension_failed")

    async def _heartbeat(self, job: Job) -> None:
        with untraced():
            async with self.session_factory.begin() as session:
                await JobRepository(session).extend_lease(job.id, self.worker_id, self.lease_seconds)

    async def _run_job(self, job: Job) -> None:
        structlog.contextvars.bind_contextvars(job_id=str(job.id), job_kind=job.kind, request_id=job.request_id)
        ctx = JobContext(
            job_id=job.id,
            kind=job.kind,
            payload=job.payload,
            attempt=job.attempts,
            session_factory=self.session_factory,
            state=self.state,
            stopping=self.stopping,
        )
        keeper = asyncio.create_task(self._keep_lease(job), name=f"lease-{job.id}")
        started = time.perf_counter()
        try:
            with job_span(job.kind, str(job.id), job.traceparent, job.attempts, expected=(JobInterrupted,)):
                await HANDLERS[job.kind](ctx)
        except JobInterrupted:
            log.info("job_handed_back", attempts=job.attempts)
            async with self.session_factory.begin() as session:
                await JobRepository(session).hand_back(job.id, self.worker_id)
            outcome = "handed_back"
        except Exception as exc:
            error = type(exc).__name__
            async with self.session_factory.begin() as session:
                repo = JobRepository(session)
                if job.attempts >= job.max_attempts:
                    log.error("job_failed", error=error, attempts=job.attempts)
                    await repo.fail(job.id, self.worker_id, error)
                    outcome = "failed"
                else:
                    delay = backoff_seconds(job.attempts)
                    log.warning("job_retry", error=error, attempts=job.attempts, delay=round(delay, 2))
                    await repo.retry_later(job.id, self.worker_id, delay, error)
                    outcome = "retry"
        else:
            async with self.session_factory.begin() as session:
                repo = JobRepository(session)
                await repo.finish(job.id, self.worker_id)
                periodic = PERIODIC.get(job.kind)
                if periodic is not None:
                    run_at = await repo.after_seconds(periodic.every_seconds)
                    await enqueue(session, job.kind, {}, run_at=run_at, dedupe_key=f"periodic:{job.kind}")
            outcome = "done"
        finally:
            keeper.cancel()
            structlog.contextvars.unbind_contextvars("job_id", "job_kind")
        # Counted once its outcome is recorded: a run whose bookkeeping failed runs again, and counts then.
        metrics.DURATION.labels(job.kind).observe(time.perf_counter() - started)
        metrics.RUNS.labels(job.kind, outcome).inc()
