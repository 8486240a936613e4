"""One trace from the release request to the provider call: the request's span, the issuance job's span as
its child (the job carries the request's traceparent), and the job's SQL and HTTP spans under it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from cbi_service.app import create_app
from cbi_service.issuance.service import ISSUE_JOB
from cbi_service.kit.settings import Settings
from tests.issuance.support import drain, released_batch


@pytest.fixture
async def app(settings: Settings, spans: InMemorySpanExporter) -> AsyncIterator[FastAPI]:
    """Built once tracing is on, as `serve` does: its routes and its engine are traced."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    names = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        names.append(span.name)
    return names


async def test_a_release_and_the_issuance_it_starts_share_one_trace(app, client, api_key_factory, spans):
    settings = app.state.settings
    _, _, batch = await released_batch(client, api_key_factory, app.state.session_factory, 3)
    await drain(app.state.session_factory, settings, batch["id"])

    finished = spans.get_finished_spans()
    release_path = "/v1/payment-batches/{batch_id}/release"
    (release,) = [s for s in finished if s.kind is SpanKind.SERVER and s.attributes.get("http.route") == release_path]
    trace_id = release.context.trace_id
    in_trace = [s for s in finished if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in in_trace}

    lanes = [s for s in in_trace if s.name == f"job {ISSUE_JOB}"]
    assert lanes, "the lanes the release enqueued run in the release's trace"
    for lane in lanes:
        assert lane.kind is SpanKind.CONSUMER
        assert lane.parent is not None
        assert lane.parent.span_id == release.context.span_id

    sent = [s for s in in_trace if s.kind is SpanKind.CLIENT and s.attributes.get("http.method") == "POST"]
    assert sent, [s.name for s in in_trace]
    for call in sent:
        assert f"job {ISSUE_JOB}" in _ancestors(call, by_id)
        assert "?" not in str(call.attributes.get("http.url", ""))
    statements = [s for s in in_trace if s.attributes.get("db.system") == "postgresql"]
    assert any(f"job {ISSUE_JOB}" in _ancestors(s, by_id) for s in statements), "the job's SQL is in the trace"
    assert any(s.parent is not None and s.parent.span_id == release.context.span_id for s in statements)
    assert all(s.name != "job disbursement.sweep" for s in in_trace), "periodic jobs start traces of their own"


async def test_request_spans_keep_no_query_string(app, client, api_key_factory, spans):
    headers = await api_key_factory("registrar")
    response = await client.get("/v1/beneficiaries", params={"external_ref": "NRC-501"}, headers=headers)
    assert response.status_code == 200
    (server,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert server.name == "GET /v1/beneficiaries"
    assert "NRC-501" not in repr(dict(server.attributes)), dict(server.attributes)


async def test_probes_and_scrapes_are_not_traced(app, client, spans):
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await client.get(path)).status_code == 200
    assert not [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
