"""OpenTelemetry traces of requests, SQL, provider calls and jobs, on only when an OTLP endpoint is configured.

The standard variables decide: `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) turns
tracing on, `OTEL_SDK_DISABLED=true` keeps it off, and the exporter reads the rest (`OTEL_EXPORTER_OTLP_HEADERS`,
`OTEL_SERVICE_NAME`, …) itself. Without an endpoint nothing of the SDK is imported, no instrumentation is
installed and no exporter thread starts: `current_traceparent` and `job_span` cost a context lookup.

A job carries the W3C `traceparent` of the span that enqueued it (a request, or another job), so the worker
that runs it, in this process or another, starts the job's span as that span's child: one trace from the
request to the provider call its job makes. Span attributes never hold a query string (it may carry a
partner's reference) nor an exception's message, as logs hold neither.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from sqlalchemy.ext.asyncio import AsyncEngine

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
UNTRACED_URLS = "/healthz,/readyz,/metrics"
"""Probes and scrapes: frequent, and nothing to follow in them."""
_URL_ATTRIBUTES = ("http.url", "url.full", "http.target")

_PROPAGATOR = TraceContextTextMapPropagator()


class _Tracing:
    """This process's tracing: its provider once started, and the engines traced."""

    def __init__(self) -> None:
        self.provider: TracerProvider | None = None
        self.engines: weakref.WeakSet[Any] = weakref.WeakSet()


_tracing = _Tracing()


def otlp_endpoint_configured(environ: Mapping[str, str] = os.environ) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def tracing_enabled() -> bool:
    return _tracing.provider is not None


def start_tracing(service_name: str, exporter: SpanExporter | None = None) -> bool:
    """Install this process's tracer provider (OTLP over HTTP, batched) and trace httpx; returns whether
    tracing is on. `exporter` replaces OTLP, spans then exported one by one (tests read them back)."""
    if _tracing.provider is not None:
        return True
    if exporter is None and not otlp_endpoint_configured():
        return False
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor: Any = BatchSpanProcessor(OTLPSpanExporter())
    else:
        processor = SimpleSpanProcessor(exporter)
    processor = _without_error_text(processor)
    # OTEL_SERVICE_NAME, when set, names the service; explicit attributes would override it.
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(processor)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    _tracing.provider = provider
    return True


def _without_error_text(inner: Any) -> Any:
    """`inner`, handed each span with an error status's text cut to an exception type at most: the SQLAlchemy
    instrumentation writes the driver's message there, and asyncpg's carries the row's DETAIL (values)."""
    from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

    class WithoutErrorText(SpanProcessor):
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            inner.on_start(span, parent_context=parent_context)

        def on_end(self, span: ReadableSpan) -> None:
            description = span.status.description
            if description and not description.isidentifier():
                span = ReadableSpan(
                    name=span.name,
                    context=span.context,
                    parent=span.parent,
                    resource=span.resource,
                    attributes=span.attributes,
                    events=span.events,
                    links=span.links,
                    kind=span.kind,
                    status=Status(span.status.status_code),
                    start_time=span.start_time,
                    end_time=span.end_time,
                    instrumentation_scope=span.instrumentation_scope,
                )
            inner.on_end(span)

        def shutdown(self) -> None:
            inner.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return bool(inner.force_flush(timeout_millis))

    return WithoutErrorText()


def stop_tracing() -> None:
    """Flush what is pending and remove every instrumentation (the process goes on untraced)."""
    provider = _tracing.provider
    if provider is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    HTTPXClientInstrumentor().uninstrument()
    if SQLAlchemyInstrumentor().is_instrumented_by_opentelemetry:
        SQLAlchemyInstrumentor().uninstrument()
    _tracing.engines.clear()
    _tracing.provider = None
    provider.shutdown()


def instrument_app(app: FastAPI) -> None:
    """Server spans named by route template; call before the app serves its first request."""
    if _tracing.provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=_tracing.provider, excluded_urls=UNTRACED_URLS, server_request_hook=_without_query
    )


def instrument_engine(engine: AsyncEngine) -> None:
    """A span per SQL statement (its text, never its parameters) on `engine`, besides those already traced."""
    if _tracing.provider is None:
        return
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    instrumentor = SQLAlchemyInstrumentor()
    # The instrumentor takes its engines all at once: add this one by instrumenting them all again.
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    _tracing.engines.add(engine.sync_engine)
    # Its declared range stops below SQLAlchemy 2.1, whose engine events it listens to all the same.
    instrumentor.instrument(engines=list(_tracing.engines), tracer_provider=_tracing.provider, skip_dep_check=True)


def _without_query(span: Any, scope: Mapping[str, Any]) -> None:
    attributes = getattr(span, "attributes", None) or {}
    for name in _URL_ATTRIBUTES:
        value = attributes.get(name)
        if isinstance(value, str) and "?" in value:
            span.set_attribute(name, value.split("?", 1)[0])
    if "url.query" in attributes:
        span.set_attribute("url.query", "")


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, for work that continues elsewhere; None untraced."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


@contextlib.contextmanager
def job_span(
    kind: str, job_id: str, traceparent: str | None, attempt: int, expected: tuple[type[BaseException], ...] = ()
) -> Iterator[None]:
    """The span of one run of a job: a child of the span that enqueued it when it has a traceparent.

    An exception other than `expected` marks it failed with the exception's type (never its message).
    """
    if _tracing.provider is None:
        yield
        return
    parent = _PROPAGATOR.extract({"traceparent": traceparent}) if traceparent else None
    tracer = _tracing.provider.get_tracer(__name__)
    with tracer.start_as_current_span(
        f"job {kind}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes={"cbi.job.kind": kind, "cbi.job.id": job_id, "cbi.job.attempt": attempt},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield
        except expected:
            raise
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """No spans for what runs inside (the worker's polling, which is no job's work)."""
    if _tracing.provider is None:
        yield
        return
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    with suppress_instrumentation():
        yield
