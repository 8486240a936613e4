"""What the worker tells operators: its runs counted by kind and outcome, and the trace a job continues."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client import REGISTRY
from sqlalchemy import select, update

from cbi_service.jobs.models import Job
from cbi_service.jobs.service import JobContext, JobInterrupted, enqueue, job_handler
from cbi_service.jobs.worker import Worker
from cbi_service.kit import telemetry

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


async def _traceparent_of(session_factory, job_id) -> str | None:
    async with session_factory() as session:
        return await session.scalar(select(Job.traceparent).where(Job.id == job_id))


async def test_a_job_enqueued_inside_a_span_keeps_its_traceparent(session_factory):
    async with session_factory.begin() as session:
        untraced = await enqueue(session, "test.metrics.ok", {})
    assert await _traceparent_of(session_factory, untraced) is None

    tracer = TracerProvider().get_tracer(__name__)
    with tracer.start_as_current_span("request") as span:
        async with session_factory.begin() as session:
            traced = await enqueue(session, "test.metrics.ok", {})
    context = span.get_span_context()
    assert await _traceparent_of(session_factory, traced) == (
        f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    )


async def test_the_run_is_a_child_of_the_span_that_enqueued_it(session_factory, spans):
    request = TracerProvider()
    request.add_span_processor(SimpleSpanProcessor(spans))
    with request.get_tracer(__name__).start_as_current_span("request") as parent:
        async with session_factory.begin() as session:
            await enqueue(session, "test.metrics.broken", {}, max_attempts=1)
    async with session_factory.begin() as session:
        await enqueue(session, "test.metrics.ok", {})
    await Worker(session_factory, SimpleNamespace()).run_until_idle()

    runs_ = {span.name: span for span in spans.get_finished_spans() if span.name.startswith("job ")}
    broken, ok = runs_["job test.metrics.broken"], runs_["job test.metrics.ok"]
    assert broken.context.trace_id == parent.get_span_context().trace_id
    assert broken.parent is not None
    assert broken.parent.span_id == parent.get_span_context().span_id
    assert broken.status.status_code.name == "ERROR"
    assert broken.attributes["error.type"] == "ValueError"
    assert broken.attributes["cbi.job.kind"] == "test.metrics.broken"
    assert broken.attributes["cbi.job.attempt"] == 1
    assert not broken.events, "no exception event: its message could hold anything"
    assert ok.parent is None
    assert ok.context.trace_id != broken.context.trace_id
    assert ok.status.status_code.name == "UNSET"


NO_SDK_PROBE = """
import sys
from cbi_service.app import create_app
from cbi_service.kit import telemetry
from cbi_service.kit.settings import Settings
assert not telemetry.start_tracing("cbi-service")
create_app(Settings(database_url="postgresql://nobody@127.0.0.1:9/none"))
print(sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.instrumentation",
                                                     "opentelemetry.exporter"))))
"""


def test_without_an_endpoint_nothing_is_traced(monkeypatch):
    for name in telemetry.ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not telemetry.start_tracing("cbi-service-test")
    assert not telemetry.tracing_enabled()
    assert telemetry.current_traceparent() is None
    probe = subprocess.run([sys.executable, "-c", NO_SDK_PROBE], capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "[]", "neither the SDK nor an instrumentation is even imported"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert telemetry.otlp_endpoint_configured()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not telemetry.otlp_endpoint_configured()


async def test_a_failed_statement_leaves_no_value_in_its_span(database_url, spans):
    """asyncpg's message names the row's values (its DETAIL); the span keeps that it failed, not why."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from cbi_service.kit.settings import to_asyncpg_url

    engine = create_async_engine(to_asyncpg_url(database_url))
    telemetry.instrument_engine(engine)
    try:
        async with engine.connect() as connection:
            with pytest.raises(Exception, match="V-14887321"):
                await connection.execute(text("SELECT CAST('V-14887321' AS integer)"))
    finally:
        await engine.dispose()

    failed = [span for span in spans.get_finished_spans() if span.status.status_code.name == "ERROR"]
    assert failed, "the statement's span is kept, marked failed"
    for span in failed:
        assert "V-14887321" not in str(span.status.description), span.status.description
