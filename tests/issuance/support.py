"""Builders shared by the batch, entitlement and disbursement tests: people, programmes, money, actors."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from types import SimpleNamespace
from typing import Any

import httpx
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.simulator import Faults, SimulatorProcess
from cbi_service.batches.models import PaymentBatch
from cbi_service.beneficiaries.models import Beneficiary, Enrolment
from cbi_service.entitlements.models import Entitlement
from cbi_service.issuance.service import poll_overdue
from cbi_service.jobs.worker import Worker
from cbi_service.kit.ids import new_id
from cbi_service.kit.settings import Settings
from tests.support import Actors, approve_batch, make_actors, make_programme, release_batch, sealed_person

REGISTRAR_ID = uuid.UUID(int=1)


async def seed_beneficiaries(
    session_factory: async_sessionmaker[AsyncSession],
    programme_id: uuid.UUID | str | None,
    count: int,
    *,
    status: str = "active",
    household_size: int | None = None,
) -> list[uuid.UUID]:
    """Registered (and, with a programme, enrolled) people; household sizes cycle 1..5 unless fixed."""
    rows: list[dict[str, Any]] = []
    async with session_factory() as session:
        for i in range(count):
            ident = new_id()
            rows.append(
                {
                    "id": ident,
                    "status": status,
                    "sex": "female" if i % 2 else "male",
                    "nationality": "VE",
                    "location_country": "CO",
                    "household_size": household_size or 1 + i % 5,
                    "consent_date": date(2026, 11, 1),
                    "consent_purpose": "assistance",
                    "registered_by": REGISTRAR_ID,
                    **await sealed_person(session, ident, f"Persona {i}", "Prueba", date(1990, 1, 1 + i % 28)),
                }
            )
    async with session_factory.begin() as session:
        for start in range(0, count, 5000):
            await session.execute(insert(Beneficiary), rows[start : start + 5000])
        if programme_id is not None:
            enrolments = [
                {
                    "id": new_id(),
                    "programme_id": uuid.UUID(str(programme_id)),
                    "beneficiary_id": row["id"],
                    "enrolled_by": REGISTRAR_ID,
                }
                for row in rows
            ]
            for start in range(0, count, 5000):
                await session.execute(insert(Enrolment), enrolments[start : start + 5000])
    return [row["id"] for row in rows]


async def set_beneficiary(
    session_factory: async_sessionmaker[AsyncSession], beneficiary_id: uuid.UUID, **values: Any
) -> None:
    async with session_factory.begin() as session:
        person = await session.get(Beneficiary, beneficiary_id)
        assert person is not None
        for name, value in values.items():
            setattr(person, name, value)


async def entitlements_of(session_factory: async_sessionmaker[AsyncSession], batch_id: str) -> list[Entitlement]:
    async with session_factory() as session:
        stmt = select(Entitlement).where(Entitlement.batch_id == uuid.UUID(batch_id)).order_by(Entitlement.id)
        return list((await session.execute(stmt)).scalars())


async def fund(
    client: httpx.AsyncClient, actors: Actors, programme_id: str, amount: str, currency: str = "COP"
) -> None:
    response = await client.post(
        f"/v1/programmes/{programme_id}/funds",
        json={"amount": {"amount": amount, "currency": currency}, "source": "ECHO", "reference": f"grant-{amount}"},
        headers={**actors.finance, "Idempotency-Key": f"fund-{uuid.uuid4()}"},
    )
    assert response.status_code in (200, 201), response.text


async def balances(client: httpx.AsyncClient, actors: Actors, programme_id: str) -> dict[str, str]:
    response = await client.get(f"/v1/programmes/{programme_id}/balances", headers=actors.auditor)
    assert response.status_code == 200, response.text
    return {name: value["amount"] for name, value in response.json().items() if isinstance(value, dict)}


def assert_identity(figures: dict[str, str]) -> None:
    """funded = available + committed + disbursed, in minor units."""

    def minor(name: str) -> int:
        return int(figures[name].replace(".", ""))

    assert minor("funded") == minor("available") + minor("committed") + minor("disbursed"), figures


async def create_batch(
    client: httpx.AsyncClient, actors: Actors, programme_id: str, *, amount: str = "100000.00", **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"programme_id": programme_id, "name": "Noviembre", "cycle": "2026-11", **extra}
    if "amount_rule" not in extra:
        body["amount"] = {"amount": amount, "currency": "COP"}
    response = await client.post("/v1/payment-batches", json=body, headers=actors.officer)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def approved_batch(client: httpx.AsyncClient, actors: Actors, programme_id: str, **extra: Any) -> dict[str, Any]:
    """Created, submitted and approved by two distinct approvers (the programme default)."""
    body: dict[str, Any] = {"programme_id": programme_id, "name": "Noviembre", "cycle": "2026-11", **extra}
    amount = body.pop("amount", "100000.00")
    if "amount_rule" not in extra:
        body["amount"] = {"amount": amount, "currency": "COP"}
    return await approve_batch(client, body, officer=actors.officer, approvers=[actors.approver1, actors.approver2])


async def release(client: httpx.AsyncClient, actors: Actors, batch_id: str) -> httpx.Response:
    return await release_batch(client, batch_id, finance=actors.finance)


async def released_batch(
    client: httpx.AsyncClient,
    api_key_factory: Any,
    session_factory: async_sessionmaker[AsyncSession],
    count: int,
    *,
    funds: str = "100000000.00",
    amount: str = "100000.00",
    **programme: Any,
) -> tuple[Actors, dict[str, Any], dict[str, Any]]:
    """A programme (made with `programme`) funded with `funds`, `count` enrolled beneficiaries, and their
    batch of `amount` each, approved and released: (actors, programme, batch)."""
    actors = await make_actors(api_key_factory)
    made = await make_programme(client, actors, **programme)
    await fund(client, actors, made["id"], funds)
    await seed_beneficiaries(session_factory, made["id"], count)
    batch = await approved_batch(client, actors, made["id"], amount=amount)
    assert (await release(client, actors, batch["id"])).status_code == 200
    return actors, made, batch


DEAD_WEBHOOK_URL = "http://127.0.0.1:9/v1/webhooks/sim"
"""Provider events are not consumed in these tests: issuance is confirmed by the status poll."""


def provider_settings(database_url: str, base_url: str, secret: str, **overrides: Any) -> Settings:
    chunk_size = overrides.pop("chunk_size", 100)
    providers = {
        "cards": {"adapter": "prepaid_card", "base_url": base_url, "webhook_secret": secret, "chunk_size": chunk_size},
        "vouchers": {"adapter": "voucher", "base_url": base_url, "webhook_secret": secret, "chunk_size": chunk_size},
    }
    values: dict[str, Any] = {
        "database_url": database_url,
        "env": "development",
        "log_format": "console",
        "log_level": "WARNING",
        "run_worker": False,
        "providers": providers,
        "db_pool_size": 20,
        "provider_status_poll_seconds": 0.2,
        **overrides,
    }
    return Settings(**values)


def reset_simulator(simulator: SimulatorProcess) -> None:
    httpx.post(f"{simulator.base_url}/admin/reset", timeout=5).raise_for_status()
    httpx.patch(f"{simulator.base_url}/admin/faults", json=Faults().model_dump(), timeout=5).raise_for_status()


def counters(simulator: SimulatorProcess) -> dict[str, Any]:
    response = httpx.get(f"{simulator.base_url}/admin/counters", timeout=10)
    response.raise_for_status()
    return dict(response.json())


async def drain(
    session_factory: async_sessionmaker[AsyncSession], settings: Settings, batch_id: str, timeout: float = 30
) -> None:
    """Run the worker in this process until the batch completes: lanes, then the provider status poll."""
    worker = Worker(session_factory, SimpleNamespace(settings=settings))
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        await worker.run_until_idle()
        await poll_overdue(session_factory, settings)
        async with session_factory() as session:
            status = await session.scalar(select(PaymentBatch.status).where(PaymentBatch.id == uuid.UUID(batch_id)))
        if status == "completed":
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"batch {batch_id} did not complete in {timeout} s (status {status})")
