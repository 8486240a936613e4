"""Disbursements made through the real service: registration, enrolment, funding, maker-checker batches,
and the entitlement state machine recording what the provider did (as its webhooks would)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cbi_service.accounting.service import fund
from cbi_service.entitlements.service import mark_failed, mark_issued
from cbi_service.programmes.models import Programme
from tests.support import Actors, approve_batch, make_programme, release_batch


async def _ok(response: httpx.Response, *statuses: int) -> Any:
    assert response.status_code in (statuses or (200, 201)), response.text
    return response.json()


async def funded_programme(
    client: httpx.AsyncClient,
    staff: Actors,
    session_factory: async_sessionmaker[AsyncSession],
    *,
    funds_minor: int = 100_000_000,
    **overrides: Any,
) -> str:
    """A funded programme needing one approval per batch."""
    programme_id = (await make_programme(client, staff, approvals_required=1, **overrides))["id"]
    async with session_factory.begin() as session:
        programme = await session.get(Programme, uuid.UUID(programme_id))
        assert programme is not None
        await fund(session, programme, funds_minor, source="ECHO", reference="grant", request_key=programme_id)
    return str(programme_id)


async def register(
    client: httpx.AsyncClient,
    staff: Actors,
    given: str,
    family: str,
    *,
    born: str,
    sex: str,
    admin1: str | None,
    country: str = "CO",
) -> str:
    body = {
        "given_names": given,
        "family_names": family,
        "date_of_birth": born,
        "sex": sex,
        "nationality": "VE",
        "documents": [],
        "location": {"country": country, "admin1": admin1},
        "household_size": 1,
        "consent": {"given": True, "date": "2026-09-01", "purpose": "cash assistance"},
    }
    registered = await _ok(await client.post("/v1/beneficiaries", json=body, headers=staff.registrar), 201)
    assert registered["status"] == "active", registered
    return str(registered["id"])


async def enrol(client: httpx.AsyncClient, staff: Actors, programme_id: str, people: list[str]) -> None:
    url = f"/v1/programmes/{programme_id}/enrolments"
    result = await _ok(await client.post(url, json={"beneficiary_ids": people}, headers=staff.registrar))
    assert not result["rejected"], result


async def released_batch(
    client: httpx.AsyncClient,
    staff: Actors,
    programme_id: str,
    people: list[str],
    *,
    cycle: str,
    amount: str = "100000.00",
    currency: str = "COP",
) -> dict[str, str]:
    """Created, submitted, approved and released; returns each person's entitlement id."""
    body = {
        "programme_id": programme_id,
        "name": f"Cycle {cycle}",
        "cycle": cycle,
        "amount": {"amount": amount, "currency": currency},
        "beneficiary_ids": people,
    }
    batch = await approve_batch(client, body, officer=staff.officer, approvers=[staff.approver])
    released = await _ok(await release_batch(client, batch["id"], finance=staff.finance))
    assert released["status"] == "processing", released
    page = await _ok(await client.get("/v1/entitlements", params={"batch_id": batch["id"]}, headers=staff.auditor))
    return {item["beneficiary_id"]: item["id"] for item in page["items"]}


async def issue(
    session_factory: async_sessionmaker[AsyncSession], entitlement_id: str, at: datetime | None = None
) -> str:
    """The provider loaded the card: the state machine posts the disbursement. Returns the provider's ref."""
    provider_ref = f"PRV-{entitlement_id[-8:]}"
    async with session_factory.begin() as session:
        transition = await mark_issued(session, uuid.UUID(entitlement_id), provider_ref, card_last4="4242", at=at)
    assert transition.applied, transition
    return provider_ref


async def fail(session_factory: async_sessionmaker[AsyncSession], entitlement_id: str) -> None:
    async with session_factory.begin() as session:
        transition = await mark_failed(session, uuid.UUID(entitlement_id), "card blocked", False)
    assert transition.applied, transition
