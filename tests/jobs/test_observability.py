"""What the worker tells operators: its runs counted by kind and outcome."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import REGISTRY
from sqlalchemy import update

from cbi_service.jobs.models import Job
from cbi_service.jobs.service import JobContext, JobInterrupted, enqueue, job_handler
from cbi_service.jobs.worker import Worker

ATTEMPTS_BEFORE_SUCCESS = 2


@job_handler("test.metrics.ok")
async def succeeds(ctx: JobContext) -> None:
    return None


@job_handler("test.metrics.flaky")
async def fails_twice(ctx: JobContext) -> None:
    if ctx.attempt <= ATTEMPTS_BEFORE_SUCCESS:
        raise ConnectionError("transient")


@job_handler("test.metrics.broken")
async def always_fails(ctx: JobContext) -> None:
    raise ValueError("never works")


INTERRUPTIONS: list[int] = []


@job_handler("test.metrics.interrupted")
async def interrupted(ctx: JobContext) -> None:
    """Stops at its checkpoint the first time (a hand-back does not count as an attempt), then finishes."""
    if not INTERRUPTIONS:
        INTERRUPTIONS.append(ctx.attempt)
        raise JobInterrupted


def runs(kind: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("cbi_jobs_total", {"kind": kind, "outcome": outcome}) or 0.0


async def _drain(session_factory) -> None:
    worker = Worker(session_factory, SimpleNamespace())
    for _ in range(10):
        await worker.run_until_idle()
        async with session_factory.begin() as session:  # retries are due at once
            await session.execute(update(Job).where(Job.status == "queued").values(run_at=Job.created_at))


async def test_each_run_is_counted_by_kind_and_outcome(session_factory):
    kinds = ("ok", "flaky", "broken", "interrupted")
    outcomes = ("done", "retry", "failed", "handed_back")
    INTERRUPTIONS.clear()
    before = {(k, o): runs(f"test.metrics.{k}", o) for k in kinds for o in outcomes}
    async with session_factory.begin() as session:
        for kind in kinds:
            await enqueue(session, f"test.metrics.{kind}", {}, max_attempts=3)
    await _drain(session_factory)

    counted = {key: runs(f"test.metrics.{key[0]}", key[1]) - value for key, value in before.items()}
    assert {key: n for key, n in counted.items() if n} == {
        ("ok", "done"): 1,
        ("flaky", "retry"): 2,
        ("flaky", "done"): 1,
        ("broken", "retry"): 2,
        ("broken", "failed"): 1,
        ("interrupted", "handed_back"): 1,
        ("interrupted", "done"): 1,
    }
    duration = REGISTRY.get_sample_value("cbi_job_duration_seconds_count", {"kind": "test.metrics.flaky"})
    assert duration is not None
    assert duration >= 3
