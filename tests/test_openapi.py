"""The committed spec is the app's own, and the app honours it under generated input (schemathesis)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from cbi_service.app import create_app
from cbi_service.auth.roles import STAFF_ROLES
from cbi_service.auth.service import create_api_key
from cbi_service.kit.db import make_engine, make_session_factory
from cbi_service.kit.settings import Settings, to_asyncpg_url
from cbi_service.openapi_spec import render_openapi
from tests.conftest import TEST_PROVIDERS, _admin, _in_thread, with_database
from tests.support import free_port

SPEC = Path(__file__).resolve().parents[1] / "openapi" / "openapi.json"


def test_committed_spec_is_current():
    assert SPEC.read_text() == render_openapi(), "openapi/openapi.json is stale: run `cbi-service openapi`"


async def _all_roles_key(settings: Settings) -> str:
    assert settings.async_database_url
    engine = make_engine(settings.async_database_url, settings)
    try:
        async with make_session_factory(engine).begin() as session:
            _, raw = await create_api_key(session, "schemathesis", sorted(STAFF_ROLES))
    finally:
        await engine.dispose()
    return raw


@pytest.fixture
def live_server(server_url: str, template_database: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """The real app over real HTTP in its own thread and event loop, on a fresh database."""
    name = f"cbi_t_{uuid.uuid4().hex[:12]}"
    _in_thread(asyncio.run, _admin(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'))
    settings = Settings(
        database_url=to_asyncpg_url(with_database(server_url, name)),
        data_dir=tmp_path / "data",
        run_worker=False,
        providers=TEST_PROVIDERS,
        log_level="WARNING",
    )
    key = _in_thread(asyncio.run, _all_roles_key(settings))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield base, {"Authorization": f"Bearer {key}"}
    server.should_exit = True
    thread.join(timeout=10)
    _in_thread(asyncio.run, _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_api_honours_its_schema(live_server):
    """Every operation, fed generated input, answers no 5xx and nothing outside its documented schema."""
    base, headers = live_server
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json").exclude(path_regex=r"^/metrics$")
    checks = [not_a_server_error, response_schema_conformance, content_type_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 5

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True
        )
        def exercise(case):
            case.headers = {**(case.headers or {}), **headers}
            case.call_and_validate(base_url=base, checks=checks)

        exercise()


def test_live_server_answers(live_server):
    base, headers = live_server
    assert httpx.get(f"{base}/v1/programmes", headers=headers).status_code == 200
