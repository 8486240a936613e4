"""A separate `cbi-service worker` serves what it does on its own metrics port: with `serve` running no worker
(`CBI_RUN_WORKER=false`), a batch issued against the provider simulator shows up there, and not in the
API's `/metrics`, while both show the same database gauges."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from cbi_service.issuance.service import ISSUE_JOB, LANES
from tests.conftest import TEST_WEBHOOK_SECRET, libpq_url
from tests.issuance.support import released_batch
from tests.support import free_port, running_serve

COUNTERS = (
    "cbi_jobs_total",
    "cbi_issuance_chunks_total",
    "cbi_issuance_instructions_total",
    "cbi_provider_calls_total",
)


def _env(tmp_path: Path, database_url: str, simulator_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CBI_", "OTEL_"))}
    env["CBI_MASTER_KEY"] = os.environ["CBI_MASTER_KEY"]  # the test's own process opens what they seal
    providers = {"cards": {"adapter": "prepaid_card", "base_url": simulator_url, "webhook_secret": TEST_WEBHOOK_SECRET}}
    return env | {
        "DATABASE_URL": libpq_url(database_url),
        "CBI_DATA_DIR": str(tmp_path / "data"),
        "CBI_LOG_FORMAT": "json",
        "CBI_PROVIDERS": json.dumps(providers),
        **extra,
    }


@contextmanager
def running_worker(env: dict[str, str], log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """`cbi-service worker ARGS`, stopped with SIGTERM on the way out; it must stop cleanly."""
    with log.open("wb") as output:
        worker = subprocess.Popen(
            [sys.executable, "-m", "cbi_service", "worker", *args], env=env, stdout=output, stderr=output
        )
        try:
            yield worker
        finally:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=60)
    assert worker.returncode == 0, log.read_text()


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Samples by name, then by sorted labels."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def wait_for_metrics(port: int, worker: subprocess.Popen[bytes], log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            scrape(port)
            return
        except httpx.TransportError:
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the worker never served its metrics"
            time.sleep(0.2)


def value(samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


async def test_a_separate_workers_issuance_is_on_its_metrics_port(
    tmp_path, database_url, simulator, api_key_factory, session_factory
):
    env = _env(tmp_path, database_url, simulator.base_url, CBI_RUN_WORKER="false")
    metrics_port = free_port()
    log = tmp_path / "worker.log"
    serving = running_serve(env)
    working = running_worker(env, log, "--metrics-port", str(metrics_port))
    with serving as (_, api_port, ready), working as worker:
        assert ready.status_code == 200
        wait_for_metrics(metrics_port, worker, log)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as client:
            await released_batch(client, api_key_factory, session_factory, 5)

        def issued(samples) -> bool:
            """Both lanes done (one of them sent the chunk, the other found it taken) and all 5 accepted."""
            accepted = value(samples, "cbi_issuance_instructions_total", provider="cards", outcome="accepted")
            return accepted == 5 and value(samples, "cbi_jobs_total", kind=ISSUE_JOB, outcome="done") >= LANES

        deadline = time.monotonic() + 60
        while not issued(worker_samples := scrape(metrics_port)):
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the worker's counters never showed the issuance"
            await asyncio.sleep(0.25)
        api_samples = scrape(api_port)

    assert value(worker_samples, "cbi_issuance_chunks_total", provider="cards", outcome="answered") >= 1
    assert value(worker_samples, "cbi_provider_calls_total", provider="cards", operation="issue", outcome="ok") >= 1
    assert value(worker_samples, "cbi_job_duration_seconds_count", kind=ISSUE_JOB) >= 1

    for name in COUNTERS:
        assert not any(api_samples.get(name, {}).values()), f"{name}: no work was done in the API's process"
    assert value(api_samples, "cbi_http_requests_total", method="POST", route="/v1/programmes", status="201") >= 1
    for samples in (worker_samples, api_samples):  # the same figures, read from the database by each
        assert sum(samples["cbi_entitlements"].values()) == 5
        assert ("status", "queued") in {label for labels in samples["cbi_job_queue_depth"] for label in labels}
    with pytest.raises(httpx.TransportError):
        scrape(metrics_port)  # stopped with its worker


def _listening(pid: int) -> set[int]:
    return {c.laddr.port for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


async def _has_run_a_job(session_factory, worker: subprocess.Popen[bytes], log: Path) -> None:
    """Until the worker has run a job (its periodic ones come due within seconds): it is fully up."""
    deadline = time.monotonic() + 60
    while True:
        async with session_factory() as session:
            query = text("SELECT count(*) FROM jobs WHERE status = 'done' AND locked_by LIKE :me")
            if await session.scalar(query, {"me": f"%:{worker.pid}:%"}):
                return
        assert worker.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the worker ran no job"
        await asyncio.sleep(0.2)


async def test_the_metrics_port_comes_from_the_option_else_the_setting_else_none(
    tmp_path, database_url, simulator, session_factory
):
    setting, option = free_port(), free_port()
    env = _env(tmp_path, database_url, simulator.base_url, CBI_METRICS_PORT=str(setting))
    log = tmp_path / "worker.log"
    with running_worker(env, log, "--metrics-port", str(option)) as worker:
        wait_for_metrics(option, worker, log)
        assert _listening(worker.pid) == {option}
    with running_worker(env, log) as worker:
        wait_for_metrics(setting, worker, log)
        assert _listening(worker.pid) == {setting}

    env.pop("CBI_METRICS_PORT")
    with running_worker(env, log) as worker:
        await _has_run_a_job(session_factory, worker, log)
        assert _listening(worker.pid) == set()


def test_a_metrics_port_in_use_refuses_to_start(tmp_path, database_url, simulator):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "cbi_service", "worker", "--metrics-port", str(port)],
            env=_env(tmp_path, database_url, simulator.base_url),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
