"""Fault test: PostgreSQL stopped for 30 s under load. Requests answer 503 (never 500), the log stays short,
service comes back without a restart, and nothing accepted before the stop is lost.

It runs on a PostgreSQL of its own (the binaries of the `pgserver` wheel, in a temporary folder), never on
the server the rest of the suite shares, against a real `cbi-service serve` process with its worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import string
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pgserver
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from cbi_service.auth.roles import Role
from cbi_service.auth.service import create_api_key
from cbi_service.kit.db import make_session_factory
from cbi_service.kit.settings import to_asyncpg_url
from cbi_service.migrate import upgrade
from tests.beneficiaries.support import person_body
from tests.conftest import TEST_PROVIDERS
from tests.support import free_port, programme_body

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
OUTAGE_SECONDS = 30
MAX_OUTAGE_LOG_LINES = 40  # one line per kind of failure per 10 s, from the API and from the worker


class DedicatedPostgres:
    """A PostgreSQL in a temporary folder that this test alone may stop and start."""

    def __init__(self, folder: Path) -> None:
        server = pgserver.get_server(folder / "pgdata", cleanup_mode=None)
        self.pgdata = folder / "pgdata"
        self.user = server.system_user
        self.socket_dir = server.get_postmaster_info().socket_dir
        self.url = server.get_uri()

    def _pg_ctl(self, *args: str) -> None:
        pgserver.pg_ctl(["-w", *args], pgdata=self.pgdata, user=self.user, timeout=60)

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "stop")

    def start(self) -> None:
        self._pg_ctl("-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.pgdata / "log"), "start")


@pytest.fixture
def postgres() -> Iterator[DedicatedPostgres]:
    with tempfile.TemporaryDirectory(prefix="cbi-outage-pg-") as tmp:
        server = DedicatedPostgres(Path(tmp))
        try:
            yield server
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
                server.stop()


def _name() -> str:
    """A made-up name unlike any other, so that deduplication lets every registration through."""
    return "".join(random.choices(string.ascii_lowercase, k=10)).capitalize()


@dataclass
class Outcome:
    phase: str
    kind: str
    status: int
    retry_after: str | None
    resource_id: str | None
    detail: str = ""


@dataclass
class Load:
    """Bounded client load: registrations, fundings and balance reads, each tagged with the phase it began in."""

    client: httpx.AsyncClient
    headers: dict[str, dict[str, str]]
    programme_id: str
    phase: str = "before"
    outcomes: list[Outcome] = field(default_factory=list)
    running: bool = True
    numbers: Iterator[int] = field(default_factory=itertools.count)

    async def _send(self, kind: str, method: str, url: str, **kw: Any) -> None:
        phase = self.phase
        try:
            response = await self.client.request(method, url, **kw)
        except httpx.TransportError:
            self.outcomes.append(Outcome(phase, kind, 0, None, None))
            return
        body = response.json() if response.headers.get("content-type", "").endswith("json") else {}
        resource = body.get("id") or body.get("transaction_id") if isinstance(body, dict) else None
        detail = str(body.get("detail", "")) if isinstance(body, dict) else ""
        self.outcomes.append(
            Outcome(
                phase,
                kind,
                response.status_code,
                response.headers.get("retry-after"),
                resource and str(resource),
                detail,
            )
        )

    async def register(self) -> None:
        while self.running:
            n = next(self.numbers)
            person = person_body(
                given_names=_name(),
                family_names=_name(),
                date_of_birth=(date(1940, 1, 1) + timedelta(days=n * 37 % 20_000)).isoformat(),
                documents=[{"type": "national_id", "number": f"V-{10_000_000 + n}", "issuing_country": "VE"}],
                external_ref=f"OUT-{n}",
            )
            await self._send("register", "POST", "/v1/beneficiaries", json=person, headers=self.headers["registrar"])
            await asyncio.sleep(0.05)

    async def fund(self) -> None:
        while self.running:
            body = {"amount": {"amount": "1000.00", "currency": "COP"}, "source": "ECHO", "reference": "G-1"}
            headers = self.headers["finance"] | {"Idempotency-Key": str(uuid.uuid4())}
            await self._send("fund", "POST", f"/v1/programmes/{self.programme_id}/funds", json=body, headers=headers)
            await asyncio.sleep(0.05)

    async def read(self) -> None:
        while self.running:
            url = f"/v1/programmes/{self.programme_id}/balances"
            await self._send("read", "GET", url, headers=self.headers["finance"])
            await self._send("ready", "GET", "/readyz")
            await asyncio.sleep(0.05)


async def _keys(url: str) -> dict[str, dict[str, str]]:
    engine = create_async_engine(to_asyncpg_url(url))
    headers = {}
    try:
        for role in (Role.admin, Role.registrar, Role.finance):
            async with make_session_factory(engine).begin() as session:
                _, raw = await create_api_key(session, f"outage {role.value}", [role])
            headers[role.value] = {"Authorization": f"Bearer {raw}"}
    finally:
        await engine.dispose()
    return headers


async def _wait_ready(client: httpx.AsyncClient, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError("the service did not become ready")


def _log_lines(path: Path, start: int, end: int) -> list[str]:
    with path.open("rb") as log:
        log.seek(start)
        return log.read(end - start).decode(errors="replace").splitlines()


async def _scenario(postgres: DedicatedPostgres, log_path: Path, port: int) -> dict[str, Any]:
    headers = await _keys(postgres.url)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as client:
        await _wait_ready(client, 60)
        created = await client.post("/v1/programmes", json=programme_body(), headers=headers["admin"])
        assert created.status_code == 201, created.text
        load = Load(client, headers, created.json()["id"])
        tasks = [asyncio.create_task(t) for t in (load.register(), load.register(), load.fund(), load.read())]
        await asyncio.sleep(4)

        load.phase = "stopping"
        await asyncio.to_thread(postgres.stop)
        load.phase = "down"
        down_from = log_path.stat().st_size
        await asyncio.sleep(OUTAGE_SECONDS)
        load.phase = "starting"
        down_to = log_path.stat().st_size
        await asyncio.to_thread(postgres.start)

        load.phase = "recovering"
        await _wait_ready(client, 30)
        load.phase = "after"
        await asyncio.sleep(4)
        load.running = False
        await asyncio.gather(*tasks)
        balances = (await client.get(f"/v1/programmes/{load.programme_id}/balances", headers=headers["finance"])).json()
    return {
        "outcomes": load.outcomes,
        "outage_log": _log_lines(log_path, down_from, down_to),
        "balances": balances,
    }


async def _stored(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        people = {str(r[0]) for r in await conn.fetch("SELECT id FROM beneficiaries")}
        unaudited = await conn.fetchval(
            "SELECT count(*) FROM beneficiaries b WHERE NOT EXISTS "
            "(SELECT 1 FROM audit_events a WHERE a.resource_type = 'beneficiary' AND a.resource_id = b.id::text)"
        )
    finally:
        await conn.close()
    return {"people": people, "unaudited": unaudited}


def test_a_thirty_second_outage_under_load(postgres: DedicatedPostgres, tmp_path: Path) -> None:
    upgrade(postgres.url)
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": postgres.url,
        "CBI_ENV": "development",
        "CBI_LOG_FORMAT": "json",
        "CBI_RUN_WORKER": "true",
        "CBI_PROVIDERS": json.dumps(TEST_PROVIDERS),
    }
    with log_path.open("wb") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "cbi_service", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        result = asyncio.run(_scenario(postgres, log_path, port))
        assert serve.poll() is None, "serve died"
    finally:
        serve.terminate()
        serve.wait(30)
    outcomes: list[Outcome] = result["outcomes"]

    assert not [o for o in outcomes if o.status >= 500 and o.status != 503], "a 5xx other than 503"
    assert not [o for o in outcomes if o.status == 0], "a connection the service dropped"
    down = [o for o in outcomes if o.phase == "down"]
    assert len(down) > 200
    assert {o.status for o in down if o.kind != "ready"} == {503}
    assert {o.status for o in down if o.kind == "ready"} == {503}
    assert all(o.retry_after and o.retry_after.isdigit() for o in down if o.kind != "ready")

    # a bounded log, one line per failure kind now and then, and no traceback
    assert len(result["outage_log"]) <= MAX_OUTAGE_LOG_LINES, result["outage_log"]
    assert not [line for line in result["outage_log"] if "Traceback" in line or '"exception"' in line]

    # full service again, without a restart
    after = [o for o in outcomes if o.phase == "after"]
    assert {o.kind for o in after if o.status in {200, 201}} == {"register", "fund", "read", "ready"}
    assert {o.status for o in after} <= {200, 201}, [o for o in after if o.status not in {200, 201}]

    # nothing lost: every registration and every funding acknowledged is there, and nothing half-written
    stored = asyncio.run(_stored(postgres.url))
    registered = {o.resource_id for o in outcomes if o.kind == "register" and o.status == 201}
    assert registered <= stored["people"]
    assert len(stored["people"] - registered) <= 2  # at most the requests in flight when the server stopped
    assert stored["unaudited"] == 0
    funded = sum(1 for o in outcomes if o.kind == "fund" and o.status == 201)
    balances = {k: Decimal(v["amount"]) for k, v in result["balances"].items() if isinstance(v, dict)}
    assert funded * 1000 <= balances["funded"] <= (funded + 1) * 1000
    assert balances["funded"] == balances["available"] + balances["committed"] + balances["disbursed"]
