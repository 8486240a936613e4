"""A database outage answers 503 with Retry-After, logs a bounded number of lines, and no error reaches the
server twice (once logged by the app, once more by uvicorn with its traceback)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import create_async_engine

from cbi_service.app import create_app
from cbi_service.jobs.worker import Worker
from cbi_service.kit.db import make_session_factory
from cbi_service.kit.logging import configure_logging
from cbi_service.kit.outage import OutageLog, unavailable_kind
from cbi_service.kit.settings import DatabaseUrl
from tests.beneficiaries.support import person_body
from tests.support import assert_problem, free_port

WELL_FORMED_KEY = {"Authorization": "Bearer cbi_" + "k" * 43}


class SqlStateError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def test_connection_failures_are_outages_and_other_errors_are_not():
    assert unavailable_kind(SqlStateError("57P01")) == "SqlStateError"
    assert unavailable_kind(SqlStateError("57P03")) == "SqlStateError"
    assert unavailable_kind(SqlStateError("08006")) == "SqlStateError"
    assert unavailable_kind(PoolTimeoutError("pool exhausted")) == "PoolTimeout"
    invalidated = DBAPIError("SELECT 1", {}, ConnectionResetError(), connection_invalidated=True)
    assert unavailable_kind(invalidated) == "ConnectionResetError"
    wrapped = DBAPIError("SELECT 1", {}, SqlStateError("57P02"))
    assert unavailable_kind(wrapped) == "SqlStateError"
    assert unavailable_kind(DBAPIError("INSERT", {}, SqlStateError("23505"))) is None
    assert unavailable_kind(ValueError("bad")) is None
    with pytest.raises(FileNotFoundError) as not_the_database:
        open("/nonexistent/file")  # noqa: SIM115 - an OSError raised outside the database driver
    assert unavailable_kind(not_the_database.value) is None


def _events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """What structlog handed the standard library at WARNING or above, one dict per line written."""
    return [r.msg for r in caplog.records if r.levelno >= logging.WARNING and isinstance(r.msg, dict)]


@pytest.fixture
def structured_logging() -> None:
    """Logging set up as the service does it (before caplog attaches its handler for the test's call)."""
    configure_logging("console")


@pytest.mark.usefixtures("structured_logging")
def test_the_outage_log_writes_one_line_per_interval_and_counts_the_rest(caplog):
    outage = OutageLog("database_unavailable", interval=60)
    for _ in range(100):
        outage.failure("ConnectionRefusedError")
    outage.failure("CannotConnectNowError")
    outage.interval = 0
    outage.failure("ConnectionRefusedError")
    assert [(e["error_type"], e["suppressed"]) for e in _events(caplog)] == [
        ("ConnectionRefusedError", 0),
        ("CannotConnectNowError", 0),
        ("ConnectionRefusedError", 99),
    ]


@pytest.fixture
async def dead_app(settings) -> AsyncIterator[FastAPI]:
    """The app against a port where no PostgreSQL listens: every connection attempt is refused."""
    down_url = DatabaseUrl(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x")
    down = settings.model_copy(update={"database_url": down_url})
    application = create_app(down)
    async with application.router.lifespan_context(application):
        yield application


async def test_an_outage_is_503_with_retry_after_and_one_log_line(dead_app, caplog):
    # raise_app_exceptions: an error the app let through to the server would be logged by it again
    transport = httpx.ASGITransport(app=dead_app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for _ in range(20):
            response = await client.get("/v1/programmes", headers=WELL_FORMED_KEY)
            assert_problem(response, 503)
            assert response.headers["retry-after"].isdigit()
            created = await client.post("/v1/beneficiaries", json=person_body(), headers=WELL_FORMED_KEY)
            assert_problem(created, 503)
            # An online redemption reads its key on a lookup connection, outside a unit of work: 503 all the same.
            redeemed = await client.post(
                "/v1/voucher-redemptions",
                json={"code": "7KQM-X3PD-W9R2", "amount": {"amount": "1.00", "currency": "COP"}},
                headers=WELL_FORMED_KEY | {"Idempotency-Key": "outage-1"},
            )
            assert_problem(redeemed, 503)
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "not_ready"
    assert [e["event"] for e in _events(caplog)] == ["database_unavailable"]
    assert not any(r.exc_info for r in caplog.records)


async def test_an_unexpected_error_is_logged_once_and_not_passed_on_to_the_server(app, caplog):
    async def explode() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/v1/_explode", explode)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        assert_problem(await client.get("/v1/_explode"), 500)
    assert [e["event"] for e in _events(caplog)] == ["unhandled_error"]


async def test_the_worker_outlives_an_outage_with_bounded_logs(caplog):
    engine = create_async_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x")
    worker = Worker(make_session_factory(engine), None, poll_seconds=0.02)
    stop = asyncio.Event()
    try:
        task = asyncio.create_task(worker.run(stop))
        await asyncio.sleep(1.0)
        assert not task.done(), task.exception() if task.done() else None
        stop.set()
        await asyncio.wait_for(task, 5)
    finally:
        await engine.dispose()
    events = _events(caplog)
    assert [e["event"] for e in events] == ["worker_database_unavailable"]
    assert not any(r.exc_info for r in caplog.records)
