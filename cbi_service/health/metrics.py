"""Gauges read from the database when Prometheus scrapes, and the worker's own metrics port.

Counters count what one process did (each serves its own); the gauges say how things stand (the queue, the
entitlements, the imports under way), which is the same for every process, so the API's `/metrics` and each
worker's port show the same figures. They are read at scrape time through the health repository on the loop
that owns the engine, waiting at most `WAIT_SECONDS`: a slow or unreachable database never holds a scrape
up, which then shows the last figures read (`cbi_gauges_age_seconds` says how old they are) and, before any
were read, none. One read runs at a time; a scrape that comes while it runs waits for that one.

No label holds personal data: job kinds, statuses and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future

import structlog
from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from cbi_service.entitlements.models import ENTITLEMENT_STATUSES
from cbi_service.health.repository import GaugeRows, gauge_rows
from cbi_service.jobs.service import HANDLERS
from cbi_service.kit.outage import OutageLog, unavailable_kind

log = structlog.get_logger(__name__)
outage_log = OutageLog("metrics_gauges_database_unavailable")

WAIT_SECONDS = 1.0
"""How long a scrape waits for fresh figures before it answers with the last ones."""
STATEMENT_TIMEOUT_MS = 5_000
"""A read still running this long is cut off; until then it may finish after its scrape, for the next."""
QUEUE_STATUSES = ("queued", "running")


class DatabaseGauges(Collector):
    """The gauges of the database attached last (one per process: the API's engine, or the worker's)."""

    def __init__(self, wait_seconds: float = WAIT_SECONDS) -> None:
        self.wait_seconds = wait_seconds
        self._lock = threading.RLock()
        self._source: tuple[AsyncEngine, asyncio.AbstractEventLoop] | None = None
        self._pending: Future[GaugeRows] | None = None
        self._last: tuple[float, GaugeRows] | None = None

    def attach(self, engine: AsyncEngine) -> None:
        """Read through `engine`, on the running loop (called by whoever owns the engine, on its loop)."""
        with self._lock:
            self._source = (engine, asyncio.get_running_loop())
            self._pending = None
            self._last = None

    def detach(self, engine: AsyncEngine) -> None:
        with self._lock:
            if self._source is not None and self._source[0] is engine:
                self._source = None
                self._pending = None
                self._last = None

    def describe(self) -> Iterable[Metric]:
        return _families(None, 0.0)

    def collect(self) -> Iterable[Metric]:
        last = self._read()
        if last is None:
            return []
        read_at, rows = last
        return _families(rows, time.monotonic() - read_at)

    def _read(self) -> tuple[float, GaugeRows] | None:
        with self._lock:
            source = self._source
            if source is None or source[1].is_closed():
                return self._last
            engine, loop = source
            if self._pending is None or self._pending.done():
                self._pending = asyncio.run_coroutine_threadsafe(gauge_rows(engine, STATEMENT_TIMEOUT_MS), loop)
                self._pending.add_done_callback(self._keep)
            pending = self._pending
        if _running_loop() is loop:
            return self._last  # waiting here would stop the very loop that has to do the read
        with contextlib.suppress(Exception):
            pending.result(self.wait_seconds)
        return self._last

    def _keep(self, done: Future[GaugeRows]) -> None:
        if done.cancelled():
            return
        error = done.exception()
        if error is None:
            with self._lock:
                if self._pending is done:
                    self._last = (time.monotonic(), done.result())
        elif kind := unavailable_kind(error):
            outage_log.failure(kind)
        else:
            log.warning("metrics_gauges_unread", error=type(error).__name__)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _families(rows: GaugeRows | None, age_seconds: float) -> list[Metric]:
    depth = GaugeMetricFamily(
        "cbi_job_queue_depth", "Jobs waiting (queued) and running, by kind", labels=["kind", "status"]
    )
    waited = GaugeMetricFamily(
        "cbi_job_queue_wait_seconds", "How long the oldest job ready to run has waited, by kind", labels=["kind"]
    )
    failed = GaugeMetricFamily(
        "cbi_jobs_failed", "Jobs given up after their last attempt, awaiting an operator, by kind", labels=["kind"]
    )
    entitlements = GaugeMetricFamily("cbi_entitlements", "Entitlements by status", labels=["status"])
    imports = GaugeMetricFamily("cbi_imports_running", "Beneficiary imports running")
    rows_done = GaugeMetricFamily("cbi_import_rows_done", "Rows the running beneficiary imports have processed")
    rows_expected = GaugeMetricFamily(
        "cbi_import_rows_expected", "Rows of the running beneficiary imports, where their size is known yet"
    )
    age = GaugeMetricFamily("cbi_gauges_age_seconds", "Seconds since the database gauges were read")
    families: list[Metric] = [depth, waited, failed, entitlements, imports, rows_done, rows_expected, age]
    if rows is None:
        return families
    counts = {(kind, status): 0 for kind in HANDLERS for status in (*QUEUE_STATUSES, "failed")}
    waits = dict.fromkeys(HANDLERS, 0.0)
    for kind, status, count, oldest in rows.jobs:
        counts[kind, status] = count
        if oldest is not None:
            waits[kind] = float(oldest)
    for (kind, status), count in sorted(counts.items()):
        if status == "failed":
            failed.add_metric([kind], count)
        else:
            depth.add_metric([kind, status], count)
    for kind, seconds in sorted(waits.items()):
        waited.add_metric([kind], seconds)
    by_status = dict.fromkeys(ENTITLEMENT_STATUSES, 0) | dict(rows.entitlements)
    for status, count in by_status.items():
        entitlements.add_metric([status], count)
    running, done, expected = rows.imports
    imports.add_metric([], running)
    rows_done.add_metric([], done)
    rows_expected.add_metric([], expected)
    age.add_metric([], age_seconds)
    return families


GAUGES = DatabaseGauges()
REGISTRY.register(GAUGES)


@contextlib.contextmanager
def metrics_server(host: str, port: int) -> Iterator[int]:
    """Serve this process's metrics over HTTP on a thread of their own; yields the port bound."""
    server, thread = start_http_server(port, addr=host)
    try:
        yield int(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
