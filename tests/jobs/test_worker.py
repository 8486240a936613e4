"""The Postgres job queue: transactional enqueue, leasing, retries, crash recovery, periodic jobs."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from sqlalchemy import select, text, update

from cbi_service.jobs import worker as worker_module
from cbi_service.jobs.models import Job
from cbi_service.jobs.repository import JobRepository
from cbi_service.jobs.service import JobContext, enqueue, job_handler
from cbi_service.jobs.worker import Worker, backoff_seconds, load_handlers

RUNS: list[tuple[str, int]] = []
FLAKY_FAILURES = 2


@job_handler("test.record")
async def record(ctx: JobContext) -> None:
    RUNS.append((ctx.payload["name"], ctx.attempt))


@job_handler("test.flaky")
async def flaky(ctx: JobContext) -> None:
    if ctx.attempt <= FLAKY_FAILURES:
        raise ConnectionError("transient")
    RUNS.append(("flaky", ctx.attempt))


@job_handler("test.slow")
async def slow(ctx: JobContext) -> None:
    await asyncio.sleep(0.3)
    RUNS.append((ctx.payload["name"], ctx.attempt))


def _worker(session_factory, **kw):
    return Worker(session_factory, SimpleNamespace(), **kw)


async def _jobs(session_factory):
    async with session_factory() as session:
        return (await session.execute(select(Job).order_by(Job.created_at))).scalars().all()


async def test_enqueue_is_visible_only_after_commit(session_factory):
    RUNS.clear()
    async with session_factory() as session:
        await enqueue(session, "test.record", {"name": "rolled back"})
        await session.rollback()
    async with session_factory.begin() as session:
        await enqueue(session, "test.record", {"name": "committed"})
    await _worker(session_factory).run_until_idle()
    assert RUNS == [("committed", 1)]
    assert [j.status for j in await _jobs(session_factory)] == ["done"]


async def test_dedupe_key_keeps_one_live_job(session_factory):
    async with session_factory.begin() as session:
        first = await enqueue(session, "test.record", {"name": "a"}, dedupe_key="k")
        second = await enqueue(session, "test.record", {"name": "b"}, dedupe_key="k")
    assert first is not None
    assert second is None


async def test_transient_failures_retry_with_backoff(session_factory):
    RUNS.clear()
    async with session_factory.begin() as session:
        await enqueue(session, "test.flaky", {})
    worker = _worker(session_factory)
    for _ in range(FLAKY_FAILURES + 1):
        await worker.run_until_idle()
        async with session_factory.begin() as session:
            await session.execute(update(Job).where(Job.status == "queued").values(run_at=text("now()")))
    await worker.run_until_idle()
    assert RUNS == [("flaky", FLAKY_FAILURES + 1)]
    (job,) = await _jobs(session_factory)
    assert job.status == "done"
    assert job.last_error == "ConnectionError"


async def test_exhausted_attempts_fail_the_job(session_factory):
    async with session_factory.begin() as session:
        await enqueue(session, "test.flaky", {}, max_attempts=1)
    await _worker(session_factory).run_until_idle()
    (job,) = await _jobs(session_factory)
    assert job.status == "failed"


async def test_two_workers_never_run_one_job_twice(session_factory):
    RUNS.clear()
    async with session_factory.begin() as session:
        for n in range(40):
            await enqueue(session, "test.slow", {"name": f"job-{n}"})
    a, b = _worker(session_factory, concurrency=8), _worker(session_factory, concurrency=8)
    await asyncio.gather(a.run_until_idle(), b.run_until_idle())
    names = [name for name, _ in RUNS]
    assert sorted(names) == sorted(f"job-{n}" for n in range(40))
    assert all(j.status == "done" for j in await _jobs(session_factory))


async def test_a_dead_workers_lease_lapses_and_the_job_resumes(session_factory):
    RUNS.clear()
    async with session_factory.begin() as session:
        await enqueue(session, "test.record", {"name": "orphan"})
    dead = _worker(session_factory, lease_seconds=0.2)
    async with session_factory.begin() as session:
        leased = await JobRepository(session).claim(dead.worker_id, ["test.record"], 10, 0.2)
    assert len(leased) == 1
    survivor = _worker(session_factory)
    assert await survivor.run_once() == 0
    await asyncio.sleep(0.3)
    await survivor.run_until_idle()
    assert RUNS == [("orphan", 2)]


async def test_periodic_jobs_reschedule_themselves(session_factory):
    load_handlers()
    worker = _worker(session_factory)
    await worker.schedule_periodic()
    await worker.schedule_periodic()
    await worker.run_until_idle()
    jobs = [j for j in await _jobs(session_factory) if j.kind == "maintenance.purge"]
    assert [j.status for j in jobs] == ["done", "queued"]
    assert jobs[1].run_at > jobs[0].created_at


async def test_run_works_until_asked_to_stop_and_waits_for_the_job_in_hand(session_factory):
    RUNS.clear()
    async with session_factory.begin() as session:
        await enqueue(session, "test.record", {"name": "while running"})
        await enqueue(session, "test.long", {})
    worker = _worker(session_factory, poll_seconds=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(0.2)
    assert RUNS == [("while running", 1)]
    assert not worker.stopping.is_set()
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert worker.stopping.is_set()
    assert RUNS == [("while running", 1), ("long", 1)]
    jobs = [j for j in await _jobs(session_factory) if j.kind.startswith("test.")]
    assert sorted((j.kind, j.status) for j in jobs) == [("test.long", "done"), ("test.record", "done")]


def test_backoff_is_bounded_and_grows():
    assert all(0 <= backoff_seconds(1) <= 1 for _ in range(50))
    assert all(0 <= backoff_seconds(20) <= 300 for _ in range(50))
    assert max(backoff_seconds(6) for _ in range(200)) > 1


@job_handler("test.long")
async def long_job(ctx: JobContext) -> None:
    await asyncio.sleep(0.6)
    RUNS.append(("long", ctx.attempt))


async def test_the_lease_is_kept_while_a_long_job_runs(session_factory):
    RUNS.clear()
    async with session_factory.begin() as session:
        await enqueue(session, "test.long", {})
    busy = _worker(session_factory, lease_seconds=0.3)
    other = _worker(session_factory, lease_seconds=0.3)
    running = asyncio.create_task(busy.run_once())
    await asyncio.sleep(0.45)
    assert await other.run_once() == 0
    await running
    assert RUNS == [("long", 1)]


async def test_a_job_whose_worker_keeps_dying_is_failed_not_retried_forever(session_factory):
    async with session_factory.begin() as session:
        await enqueue(session, "test.record", {"name": "cursed"}, max_attempts=1)
    async with session_factory.begin() as session:
        assert len(await JobRepository(session).claim("dead-worker", ["test.record"], 10, 0.05)) == 1
    await asyncio.sleep(0.1)
    assert await _worker(session_factory).run_once() == 0
    (job,) = await _jobs(session_factory)
    assert job.status == "failed"


GATE = asyncio.Event()


@job_handler("test.gated")
async def gated(ctx: JobContext) -> None:
    await GATE.wait()
    RUNS.append(("gated", ctx.attempt))


async def test_a_long_job_does_not_hold_the_other_slots(session_factory):
    """Jobs enqueued while a long one runs start in the free slots at once, not when it ends."""
    RUNS.clear()
    GATE.clear()
    async with session_factory.begin() as session:
        await enqueue(session, "test.gated", {})
    stop = asyncio.Event()
    task = asyncio.create_task(_worker(session_factory, concurrency=2, poll_seconds=0.05).run(stop))
    try:
        async with asyncio.timeout(10):
            while not [j for j in await _jobs(session_factory) if j.status == "running"]:
                await asyncio.sleep(0.02)
            for name in ("first", "second", "third"):
                async with session_factory.begin() as session:
                    await enqueue(session, "test.record", {"name": name})
            while len(RUNS) < 3:
                await asyncio.sleep(0.02)
        assert sorted(RUNS) == [("first", 1), ("second", 1), ("third", 1)]
    finally:
        GATE.set()
        stop.set()
        await asyncio.wait_for(task, timeout=5)
    assert ("gated", 1) in RUNS


class _Events:
    """Records the events logged through it (the worker's module logger may be cached by earlier tests)."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def __getattr__(self, level: str):
        return lambda event, **_: self.events.append(event)


async def test_a_job_task_that_crashes_is_logged(session_factory, monkeypatch):
    """Bookkeeping that fails after the handler (the database gone) ends the job's task with an error that no
    one awaits: the worker logs it, and the job's lapsed lease lets it run again."""
    events = _Events()
    monkeypatch.setattr(worker_module, "log", events)
    worker = _worker(session_factory, poll_seconds=0.05)

    async def broken_bookkeeping(job):
        raise ConnectionError("database gone")

    worker._run_job = broken_bookkeeping
    async with session_factory.begin() as session:
        await enqueue(session, "test.record", {"name": "lost"})
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))

    async def lost_job_status() -> str:
        (job,) = [j for j in await _jobs(session_factory) if j.kind == "test.record"]
        return job.status

    async with asyncio.timeout(5):
        while "job_crashed" not in events.events or await lost_job_status() != "running":
            await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert await lost_job_status() == "running"


async def test_a_worker_limited_to_some_kinds_runs_and_schedules_only_those(session_factory):
    RUNS.clear()
    load_handlers()
    async with session_factory.begin() as session:
        await enqueue(session, "test.record", {"name": "mine"})
        await enqueue(session, "test.slow", {"name": "not mine"})
    worker = _worker(session_factory, kinds=["test.record"])

    await worker.schedule_periodic()
    await worker.run_until_idle()

    assert RUNS == [("mine", 1)]
    assert {(j.kind, j.status) for j in await _jobs(session_factory)} == {
        ("test.record", "done"),
        ("test.slow", "queued"),
    }
