"""Acceptance (§15): a batch issued through a G2P Connect provider, the simulator in its own process calling
back over real HTTP, completes with every entitlement issued exactly once while callbacks are duplicated,
reordered and dropped, answers are lost (the provider acts, then hangs past the adapter's timeout, so the
chunk is sent again) and the provider is down for 30 seconds. The simulator's counters prove it."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select

from adapters.providers.g2p_connect.signature import public_text, seed_text
from adapters.simulator import SimulatorAdmin, SimulatorProcess
from cbi_service.app import create_app
from cbi_service.batches.models import PaymentBatch
from cbi_service.entitlements.models import Entitlement
from cbi_service.kit.settings import Settings, hidden_secrets
from cbi_service.webhooks.models import WebhookEvent
from tests.adapters.g2p_schema import errors, request_validator
from tests.issuance.support import (
    approved_batch,
    assert_identity,
    balances,
    fund,
    make_actors,
    release,
    seed_beneficiaries,
)
from tests.support import free_port, make_programme

SIZE = 300
CHUNK = 50
SERVICE_KEY = Ed25519PrivateKey.generate()
PROVIDER_KEY = Ed25519PrivateKey.generate()
FAULTS = {
    "duplicate_rate": 0.3,
    "reorder": True,
    "reorder_window_ms": 400,
    "drop_rate": 0.2,
    "timeout_rate": 0.2,
    "hang_seconds": 3,
}


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def g2p_simulator(port: int) -> Iterator[SimulatorProcess]:
    with SimulatorProcess.start(
        f"http://127.0.0.1:{port}/v1/g2p-connect/g2p",
        None,
        protocol="g2p-connect",
        g2p_id="g2p",
        g2p_signing_key=seed_text(PROVIDER_KEY),
        g2p_client_public_key=public_text(SERVICE_KEY),
        callback_max_items=20,
        seed=11,
        **FAULTS,
    ) as process:
        yield process


@pytest.fixture
def settings(database_url: str, tmp_path: Path, g2p_simulator: SimulatorProcess) -> Settings:
    provider = {
        "adapter": "g2p_connect",
        "base_url": g2p_simulator.base_url,
        "signing_key": seed_text(SERVICE_KEY),
        "provider_public_key": public_text(PROVIDER_KEY),
        "receiver_id": "g2p",
        "chunk_size": CHUNK,
        "timeout_seconds": 2,
    }
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        env="development",
        log_format="console",
        log_level="WARNING",
        providers=hidden_secrets({"g2p": provider}),
        run_worker=True,
        worker_poll_seconds=0.1,
        provider_status_poll_seconds=1.0,
        db_pool_size=20,
    )


@pytest.fixture
async def served(settings: Settings, port: int) -> AsyncIterator[httpx.AsyncClient]:
    """The app (API and in-process worker) over real HTTP, where the simulator sends its callbacks."""
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        await asyncio.sleep(0.05)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        yield http
    server.should_exit = True
    await asyncio.to_thread(thread.join, 10)


async def _count(session_factory, batch_id: str, *statuses: str) -> int:
    async with session_factory() as session:
        stmt = select(func.count()).where(Entitlement.batch_id == uuid.UUID(batch_id), Entitlement.status.in_(statuses))
        return int(await session.scalar(stmt) or 0)


async def _until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_every_entitlement_is_issued_once_through_faulty_callbacks_and_a_30_second_outage(
    served, api_key_factory, session_factory, g2p_simulator
):
    actors = await make_actors(api_key_factory)
    programme = await make_programme(served, actors, delivery_mechanism="prepaid_card", provider="g2p")
    await fund(served, actors, programme["id"], "100000000.00")
    await seed_beneficiaries(session_factory, programme["id"], SIZE)
    batch = await approved_batch(served, actors, programme["id"], amount="5000.00")
    async with SimulatorAdmin(g2p_simulator.base_url) as admin:
        await admin.reset()
        await admin.set_faults(latency_ms=40, **FAULTS)
        assert (await release(served, actors, batch["id"])).status_code == 200

        async def first_chunks() -> bool:
            return await _count(session_factory, batch["id"], "submitted", "issued") >= CHUNK

        await _until(first_chunks, 30, "the first chunks")
        await admin.outage(30)
        outage_started = time.monotonic()
        await admin.set_faults(latency_ms=0)
        assert await _count(session_factory, batch["id"], "pending") > 0, "the outage came too late to matter"

        async def completed() -> bool:
            async with session_factory() as session:
                status = await session.scalar(
                    select(PaymentBatch.status).where(PaymentBatch.id == uuid.UUID(batch["id"]))
                )
            return status == "completed"

        await _until(completed, 150, "the batch to complete")
        assert time.monotonic() - outage_started >= 25
        async with asyncio.timeout(30):
            counters = await admin.drained()
        recent = await admin.messages()

    assert await _count(session_factory, batch["id"], "issued") == SIZE
    assert counters["disbursed"] == counters["distinct_references_disbursed"] == SIZE
    assert counters["paid_more_than_once"] == 0
    assert counters["issued_minor"] == {"COP": SIZE * 500_000}
    assert counters["webhooks_duplicated"] > 0, "callbacks were delivered twice"
    assert counters["webhooks_dropped"] > 0, "callbacks were lost for good"
    assert counters["status_requests"] > 0, "what never called back was asked for"
    async with session_factory() as session:
        applied = await session.scalar(
            select(func.count()).where(
                WebhookEvent.event_type == "entitlement.issued", WebhookEvent.status == "applied"
            )
        )
    assert applied == SIZE, "each entitlement moved by exactly one stored outcome"
    figures = await balances(served, actors, programme["id"])
    assert (figures["disbursed"], figures["committed"]) == (f"{SIZE * 5000}.00", "0.00")
    assert_identity(figures)
    for message in recent["received"]:
        schema = {"/disburse": "/disburse", "/disburse/txn/status": "/disburse/txn/status"}[message["path"]]
        assert errors(request_validator(schema), message["body"]) == []
    for message in recent["sent"]:
        schema = {"on-disburse": "/on-disburse", "txn/on-status": "/disburse/txn/on-status"}[message["path"]]
        assert errors(request_validator(schema), message["body"]) == []
