"""Fault tests with real processes: a worker killed with SIGKILL mid-batch, a 30-second provider outage,
and two workers at once. The simulator's counters prove every entitlement was paid exactly once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from sqlalchemy import func, select

from cbi_service.batches.models import PaymentBatch
from cbi_service.entitlements.models import Entitlement
from cbi_service.jobs.worker import Worker
from tests.issuance.support import (
    assert_identity,
    balances,
    counters,
    released_batch,
)
from tests.support import revealed

ROOT = Path(__file__).resolve().parents[2]
CHUNK = 50


def start_worker(database_url: str, settings) -> subprocess.Popen[bytes]:
    """`cbi-service worker` as its own OS process on the test's database."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CBI_PROVIDERS": revealed(settings.providers),
        "CBI_PROVIDER_STATUS_POLL_SECONDS": "0.5",
        "CBI_LOG_LEVEL": "ERROR",
        "CBI_LOG_FORMAT": "json",
    }
    command = [sys.executable, "-m", "cbi_service", "worker", "--concurrency", "4"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _count(session_factory, batch_id: str, *statuses: str) -> int:
    async with session_factory() as session:
        stmt = select(func.count()).where(Entitlement.batch_id == uuid.UUID(batch_id), Entitlement.status.in_(statuses))
        return int(await session.scalar(stmt) or 0)


async def _wait(predicate, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _completed(session_factory, batch_id: str) -> bool:
    async with session_factory() as session:
        status = await session.scalar(select(PaymentBatch.status).where(PaymentBatch.id == uuid.UUID(batch_id)))
    return status == "completed"


def _faults(simulator, **faults) -> None:
    httpx.patch(f"{simulator.base_url}/admin/faults", json=faults).raise_for_status()


async def _assert_paid_once(client, actors, programme, simulator, size: int) -> dict:
    seen = counters(simulator)
    assert seen["card_loads"] == size
    assert seen["distinct_cards_loaded"] == size
    assert seen["distinct_keys"] == size
    assert seen["issued_minor"] == {"COP": size * 500_000}
    figures = await balances(client, actors, programme["id"])
    assert figures["disbursed"] == f"{size * 5000}.00"
    assert figures["committed"] == "0.00"
    assert_identity(figures)
    return seen


@pytest.fixture
def chunked(settings):
    for provider in settings.providers.values():
        provider["chunk_size"] = CHUNK
    return settings


async def test_worker_killed_mid_batch_resumes_and_pays_each_once(
    client, api_key_factory, session_factory, database_url, chunked, simulator
):
    size = 2000
    actors, programme, batch = await released_batch(client, api_key_factory, session_factory, size, amount="5000.00")
    _faults(simulator, latency_ms=60)
    worker = start_worker(database_url, chunked)
    try:
        await _wait(lambda: _sent_at_least(session_factory, batch["id"], 400), 60, "the first chunks")
    finally:
        worker.kill()
        worker.wait()
    assert await _count(session_factory, batch["id"], "pending") > 0, "killed too late to prove anything"
    _faults(simulator, latency_ms=0)
    restarted = start_worker(database_url, chunked)
    try:
        await _wait(lambda: _completed(session_factory, batch["id"]), 90, "the batch to complete")
    finally:
        restarted.terminate()
        restarted.wait(10)
    assert await _count(session_factory, batch["id"], "issued") == size
    await _assert_paid_once(client, actors, programme, simulator, size)


async def _sent_at_least(session_factory, batch_id: str, count: int) -> bool:
    return await _count(session_factory, batch_id, "submitted", "issued") >= count


async def test_a_30_second_outage_delays_but_never_duplicates(
    client, api_key_factory, session_factory, chunked, simulator
):
    size = 300
    actors, programme, batch = await released_batch(client, api_key_factory, session_factory, size, amount="5000.00")
    _faults(simulator, latency_ms=50)
    stop = asyncio.Event()
    worker = asyncio.create_task(Worker(session_factory, SimpleNamespace(settings=chunked), poll_seconds=0.1).run(stop))
    try:
        await _wait(lambda: _sent_at_least(session_factory, batch["id"], CHUNK), 30, "the first chunk")
        httpx.post(f"{simulator.base_url}/admin/outage", json={"seconds": 30}).raise_for_status()
        _faults(simulator, latency_ms=0)
        started = asyncio.get_running_loop().time()
        assert await _count(session_factory, batch["id"], "pending") > 0
        await _wait(lambda: _completed(session_factory, batch["id"]), 120, "the batch to complete")
        assert asyncio.get_running_loop().time() - started >= 25
    finally:
        stop.set()
        await worker
    seen = await _assert_paid_once(client, actors, programme, simulator, size)
    assert seen["keys_received_more_than_once"] == 0


async def test_two_workers_never_send_an_entitlement_twice(
    client, api_key_factory, session_factory, database_url, chunked, simulator
):
    size = 1000
    actors, programme, batch = await released_batch(client, api_key_factory, session_factory, size, amount="5000.00")
    workers = [start_worker(database_url, chunked) for _ in range(2)]
    try:
        await _wait(lambda: _completed(session_factory, batch["id"]), 90, "the batch to complete")
    finally:
        for process in workers:
            process.terminate()
        for process in workers:
            process.wait(10)
    seen = await _assert_paid_once(client, actors, programme, simulator, size)
    assert seen["keys_received_more_than_once"] == 0
    assert seen["instruction_items_received"] == size
