"""Against the provider simulator in its own process: its signed webhooks, redelivered and reordered on
purpose, reach the service over real HTTP and every voucher ends exactly where the provider says it is."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from adapters.simulator import SimulatorProcess
from cbi_service.app import create_app
from cbi_service.entitlements.models import Entitlement
from cbi_service.kit.settings import Settings
from cbi_service.webhooks.models import WebhookEvent
from tests.conftest import TEST_WEBHOOK_SECRET
from tests.issuance.support import (
    approved_batch,
    assert_identity,
    balances,
    entitlements_of,
    fund,
    make_actors,
    release,
    seed_beneficiaries,
)
from tests.support import free_port, make_programme

VOUCHERS = 12


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def simulator(port: int) -> Iterator[SimulatorProcess]:
    """A provider that delivers a third of its webhooks twice and holds each back up to 300 ms."""
    url = f"http://127.0.0.1:{port}/v1/webhooks/vouchers"
    options: dict[str, Any] = {"duplicate_rate": 0.3, "reorder": True, "reorder_window_ms": 300, "seed": 7}
    with SimulatorProcess.start(url, TEST_WEBHOOK_SECRET, **options) as process:
        yield process


@pytest.fixture
def settings(settings: Settings, simulator: SimulatorProcess) -> Settings:
    provider = {"adapter": "voucher", "base_url": simulator.base_url, "webhook_secret": TEST_WEBHOOK_SECRET}
    return settings.model_copy(
        update={"providers": {"vouchers": provider}, "run_worker": True, "worker_poll_seconds": 0.1}
    )


@pytest.fixture
async def served(settings: Settings, port: int) -> AsyncIterator[httpx.AsyncClient]:
    """The app (API and in-process worker) over real HTTP, where the simulator sends its webhooks."""
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


async def _until(check: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "the simulator's webhooks were not all applied in time"
        await asyncio.sleep(0.2)


async def test_redelivered_and_reordered_webhooks_apply_once(served, api_key_factory, session_factory, simulator):
    actors = await make_actors(api_key_factory)
    programme = await make_programme(served, actors, delivery_mechanism="voucher", provider="vouchers")
    await fund(served, actors, programme["id"], "10000000.00")
    await seed_beneficiaries(session_factory, programme["id"], VOUCHERS)
    batch = await approved_batch(served, actors, programme["id"])
    assert (await release(served, actors, batch["id"])).status_code == 200

    async def all_issued() -> bool:
        return all(e.status == "issued" for e in await entitlements_of(session_factory, batch["id"]))

    await _until(all_issued)
    vouchers = await entitlements_of(session_factory, batch["id"])
    admin = f"{simulator.base_url}/admin/vouchers"

    async def all_delivered() -> bool:
        async with httpx.AsyncClient(timeout=10) as provider:
            pending = (await provider.get(f"{simulator.base_url}/admin/counters", params={"per_key": False})).json()
        async with session_factory() as session:
            waiting = await session.scalar(select(func.count()).where(WebhookEvent.status == "received"))
        return pending["webhooks_pending"] == 0 and waiting == 0

    async with httpx.AsyncClient(timeout=10) as provider:
        for voucher in vouchers:
            assert voucher.voucher_code is not None
            for amount_minor in (1_500_000, 2_500_000):
                spent = await provider.post(
                    f"{admin}/{voucher.voucher_code}/redeem", json={"amount_minor": amount_minor, "merchant": "M"}
                )
                assert spent.status_code == 200, spent.text
        await _until(all_delivered)
        for voucher in vouchers[::3]:
            assert (await provider.post(f"{admin}/{voucher.voucher_code}/expire")).status_code == 200
        await _until(all_delivered)
        counters = (await provider.get(f"{simulator.base_url}/admin/counters", params={"per_key": False})).json()

    assert counters["webhooks_duplicated"] > 0, "the provider did redeliver some webhooks"
    expired = {v.id for v in vouchers[::3]}
    async with session_factory() as session:
        rows = (
            await session.execute(select(Entitlement).where(Entitlement.batch_id == vouchers[0].batch_id))
        ).scalars()
        final = {e.id: (e.status, e.redeemed_minor) for e in rows}
        stored = (await session.execute(select(WebhookEvent.status, func.count()).group_by(WebhookEvent.status))).all()
    assert final == {v.id: ("expired" if v.id in expired else "redeemed", 4_000_000) for v in vouchers}
    assert dict(stored) == {"applied": counters["webhooks_emitted"]}, "each emitted event stored and applied once"
    figures = await balances(served, actors, programme["id"])
    assert (figures["redeemed"], figures["returned"]) == (f"{VOUCHERS * 40000}.00", f"{len(expired) * 60000}.00")
    assert_identity(figures)
