"""`serve` with the standard OTLP variable exports its spans over OTLP/HTTP, to a collector stood in for here."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import libpq_url
from tests.support import running_serve


class Collector(ThreadingHTTPServer):
    """Takes OTLP/HTTP trace exports and keeps the names of the spans, by service."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.spans: list[tuple[str, str]] = []
        self.paths: list[str] = []


class _Receive(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.paths.append(self.path)
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            service = next(a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name")
            for scope_spans in resource_spans.scope_spans:
                self.server.spans.extend((service, span.name) for span in scope_spans.spans)
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _env(tmp_path, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CBI_", "OTEL_"))}
    env["CBI_MASTER_KEY"] = os.environ["CBI_MASTER_KEY"]  # the test's own process opens what they seal
    return env | {
        "DATABASE_URL": libpq_url(database_url),
        "CBI_DATA_DIR": str(tmp_path / "data"),
        "CBI_RUN_WORKER": "false",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        **extra,
    }


def test_serve_exports_its_spans_to_the_configured_endpoint(tmp_path, database_url, collector):
    endpoint = f"http://127.0.0.1:{collector.server_port}"
    with running_serve(_env(tmp_path, database_url, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint)) as (_, port, ready):
        assert ready.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/v1/programmes", timeout=5).status_code == 401
        deadline = time.monotonic() + 30
        while ("cbi-service", "GET /v1/programmes") not in collector.spans:
            assert time.monotonic() < deadline, collector.spans
            time.sleep(0.1)
    assert set(collector.paths) == {"/v1/traces"}
    assert not [name for _, name in collector.spans if "readyz" in name], "probes are not traced"
