"""Test harness: a real PostgreSQL (DATABASE_URL, or an embedded pgserver), migrated once into a template
database with `alembic upgrade`, and a fresh copy of that template for every test."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from cbi_service.app import create_app
from cbi_service.auth.roles import Role
from cbi_service.auth.service import create_api_key
from cbi_service.embedded import embedded_postgres
from cbi_service.kit.settings import Settings, to_asyncpg_url
from cbi_service.migrate import upgrade

# One master key for every process the tests start (the service, workers, commands): personal data
# sealed by one of them must open in the others. Tests of key handling set their own.
TEST_MASTER_KEY = "q5m0Vc3dTz8P1yYl7fX2c9Jr4KbN6wHs0AeUiGoD3tM="
os.environ.setdefault("CBI_MASTER_KEY", TEST_MASTER_KEY)
TEST_WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TEST_PROVIDERS: dict[str, dict[str, Any]] = {
    "cards": {
        "adapter": "prepaid_card",
        "base_url": "http://127.0.0.1:9",
        "webhook_secret": TEST_WEBHOOK_SECRET,
    },
    "vouchers": {
        "adapter": "voucher",
        "base_url": "http://127.0.0.1:9",
        "webhook_secret": TEST_WEBHOOK_SECRET,
    },
}


def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run blocking set-up that calls asyncio.run() away from pytest-asyncio's loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args).result()


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def libpq_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, parts.fragment))


async def _admin(server_url: str, *statements: str) -> None:
    conn = await asyncpg.connect(libpq_url(server_url))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """An admin URL of the PostgreSQL server the suite uses."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield libpq_url(configured)
        return
    with tempfile.TemporaryDirectory(prefix="cbi-test-pg-") as tmp, embedded_postgres(Path(tmp)) as url:
        yield url


@pytest.fixture(scope="session")
def template_database(server_url: str) -> Iterator[str]:
    """A database migrated with `alembic upgrade`, copied for each test."""
    name = f"cbi_tpl_{uuid.uuid4().hex[:12]}"
    _in_thread(asyncio.run, _admin(server_url, f'CREATE DATABASE "{name}"'))
    _in_thread(upgrade, with_database(server_url, name))
    yield name
    _in_thread(asyncio.run, _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def database_url(server_url: str, template_database: str) -> AsyncIterator[str]:
    """asyncpg URL of a fresh, migrated database owned by this test alone."""
    name = f"cbi_t_{uuid.uuid4().hex[:12]}"
    await _admin(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    yield to_asyncpg_url(with_database(server_url, name))
    await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_async_engine(database_url, pool_size=20, max_overflow=20)
    yield eng
    await eng.dispose()


@pytest.fixture
def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        env="development",
        log_format="console",
        run_worker=False,
        providers=TEST_PROVIDERS,
        db_pool_size=20,
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


ApiKeyFactory = Callable[..., Awaitable[dict[str, str]]]


@pytest.fixture
def api_key_factory(session_factory: async_sessionmaker[AsyncSession]) -> ApiKeyFactory:
    """`await api_key_factory("admin", "finance")` → Authorization headers of a new key with those roles;
    `api_key_factory("merchant", merchant_id=...)` a merchant's key."""

    async def make(*roles: str, name: str | None = None, merchant_id: uuid.UUID | str | None = None) -> dict[str, str]:
        merchant = uuid.UUID(str(merchant_id)) if merchant_id is not None else None
        async with session_factory.begin() as session:
            _, raw = await create_api_key(
                session, name or f"test-{'-'.join(roles)}", [Role(r) for r in roles], merchant_id=merchant
            )
        return {"Authorization": f"Bearer {raw}"}

    return make


@pytest.fixture
def spans() -> Iterator[Any]:
    """Tracing on for the test, its spans kept in memory (an InMemorySpanExporter) to be read back."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from cbi_service.kit import telemetry

    exporter = InMemorySpanExporter()
    assert telemetry.start_tracing("cbi-service-test", exporter=exporter)
    try:
        yield exporter
    finally:
        telemetry.stop_tracing()
