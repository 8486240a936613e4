"""A whole cycle over HTTP only: registration, enrolment, funding, maker-checker, release, issuance by the
in-process worker against the simulator in its own process, and the books at the end."""

from __future__ import annotations

import asyncio

import pytest

from cbi_service.demo import synthetic_people
from cbi_service.kit.settings import Settings
from tests.conftest import TEST_WEBHOOK_SECRET
from tests.issuance.support import assert_identity, balances, counters, fund, make_actors, provider_settings
from tests.support import make_programme


@pytest.fixture
def settings(database_url, simulator) -> Settings:
    return provider_settings(
        database_url, simulator.base_url, TEST_WEBHOOK_SECRET, run_worker=True, worker_poll_seconds=0.1
    )


async def test_http_cycle_against_the_simulator(client, api_key_factory, simulator):
    actors = await make_actors(api_key_factory)
    registrar = await api_key_factory("registrar", name="registrar")
    programme = await make_programme(client, actors)
    await fund(client, actors, programme["id"], "20000000.00")
    ids = []
    for body in synthetic_people(24):
        response = await client.post("/v1/beneficiaries", json=body, headers=registrar)
        assert response.status_code == 201, response.text
        if response.json()["status"] == "active":
            ids.append(response.json()["id"])
    assert len(ids) >= 20
    enrolled = await client.post(
        f"/v1/programmes/{programme['id']}/enrolments", json={"beneficiary_ids": ids}, headers=registrar
    )
    assert enrolled.status_code == 200, enrolled.text
    rule = {
        "base": {"amount": "200000.00", "currency": "COP"},
        "per_member": {"amount": "50000.00", "currency": "COP"},
        "max": {"amount": "450000.00", "currency": "COP"},
    }
    created = await client.post(
        "/v1/payment-batches",
        json={"programme_id": programme["id"], "name": "Nov", "cycle": "2026-11", "amount_rule": rule},
        headers=actors.officer,
    )
    batch = created.json()
    assert batch["beneficiary_count"] == len(ids)
    url = f"/v1/payment-batches/{batch['id']}"
    assert (await client.post(f"{url}/submit", headers=actors.officer)).status_code == 200
    for approver in (actors.approver1, actors.approver2):
        assert (
            await client.post(f"{url}/approvals", json={"decision": "approve"}, headers=approver)
        ).status_code == 200
    released = await client.post(f"{url}/release", headers={**actors.finance, "Idempotency-Key": "go"})
    assert released.json()["status"] == "processing"
    for _ in range(150):
        batch = (await client.get(url, headers=actors.auditor)).json()
        if batch["status"] == "completed":
            break
        await asyncio.sleep(0.1)
    assert batch["status"] == "completed", batch
    assert batch["counts"] == {"issued": len(ids)}
    assert counters(simulator)["card_loads"] == len(ids)
    figures = await balances(client, actors, programme["id"])
    assert figures["disbursed"] == batch["total"]["amount"]
    assert figures["committed"] == "0.00"
    assert_identity(figures)
    audit = await client.get(
        "/v1/audit-events", params={"resource_id": batch["id"]}, headers=await api_key_factory("auditor")
    )
    actions = [event["action"] for event in audit.json()["items"]]
    for action in (
        "payment_batch.created",
        "payment_batch.submitted",
        "payment_batch.approve",
        "payment_batch.approved",
        "payment_batch.released",
        "payment_batch.completed",
    ):
        assert action in actions
