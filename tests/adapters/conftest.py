"""A real simulator process and a real webhook receiver on 127.0.0.1: no database, no mocks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from adapters.providers import ProviderAdapter, build_provider
from adapters.simulator import Faults, SimulatorAdmin, SimulatorProcess
from cbi_service.kit.settings import Settings
from tests.adapters.support import API_KEY, ProviderConfig, WebhookReceiver, new_secret


@pytest.fixture(scope="session")
def webhook_secret() -> str:
    return new_secret()


@pytest.fixture(scope="session")
def receiver(webhook_secret: str) -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(webhook_secret)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def simulator(receiver: WebhookReceiver, webhook_secret: str) -> Iterator[SimulatorProcess]:
    with SimulatorProcess.start(receiver.url, webhook_secret, api_key=API_KEY, seed=1) as process:
        yield process


@pytest.fixture(autouse=True)
async def _fresh_provider(request: pytest.FixtureRequest) -> None:
    """Each test that uses the simulator starts with empty books, no faults and no recorded webhooks."""
    if "simulator" not in request.fixturenames:
        return
    simulator: SimulatorProcess = request.getfixturevalue("simulator")
    receiver: WebhookReceiver = request.getfixturevalue("receiver")
    async with SimulatorAdmin(simulator.base_url) as admin:
        await admin.set_faults(**Faults().model_dump())
        await admin.outage(0)
        async with asyncio.timeout(10):
            await admin.drained()
        await admin.reset()
    receiver.clear()


@pytest.fixture
async def admin(simulator: SimulatorProcess) -> AsyncIterator[SimulatorAdmin]:
    async with SimulatorAdmin(simulator.base_url) as client:
        yield client


@pytest.fixture
def provider_config(simulator: SimulatorProcess) -> ProviderConfig:
    def make(adapter: str, **options: Any) -> dict[str, Any]:
        """An entry as the service's settings hold it, its secrets (api_key, webhook_secret) as SecretStr."""
        base = {"adapter": adapter, "base_url": simulator.base_url, "api_key": API_KEY}
        entry = base | {"webhook_secret": "whsec_c2VjcmV0", "timeout_seconds": 2.0} | options
        return Settings(providers={"entry": entry}).providers["entry"]

    return make


@pytest.fixture
async def card_adapter(provider_config: ProviderConfig) -> AsyncIterator[ProviderAdapter]:
    adapter = build_provider("acme_cards", provider_config("prepaid_card"))
    yield adapter
    await adapter.aclose()


@pytest.fixture
async def voucher_adapter(provider_config: ProviderConfig) -> AsyncIterator[ProviderAdapter]:
    adapter = build_provider("acme_vouchers", provider_config("voucher"))
    yield adapter
    await adapter.aclose()
