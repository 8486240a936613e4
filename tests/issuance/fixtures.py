"""Provider-simulator fixtures shared by the entitlement and disbursement tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.simulator import SimulatorProcess
from cbi_service.kit.settings import Settings
from tests.conftest import TEST_WEBHOOK_SECRET
from tests.issuance.support import DEAD_WEBHOOK_URL, provider_settings, reset_simulator


@pytest.fixture(scope="session")
def simulator_process() -> Iterator[SimulatorProcess]:
    """One provider simulator process for the session; each test starts it from zero."""
    with SimulatorProcess.start(DEAD_WEBHOOK_URL, TEST_WEBHOOK_SECRET, delivery_concurrency=4) as process:
        yield process


@pytest.fixture
def simulator(simulator_process: SimulatorProcess) -> SimulatorProcess:
    reset_simulator(simulator_process)
    return simulator_process


@pytest.fixture
def settings(database_url: str, simulator: SimulatorProcess) -> Settings:
    return provider_settings(database_url, simulator.base_url, TEST_WEBHOOK_SECRET)
