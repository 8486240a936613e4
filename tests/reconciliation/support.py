"""Disbursements made through the real service: registration, enrolment, funding, maker-checker batches,
and the entitlement state machine recording what the provider did (as its webhooks would)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cbi_service.accounting.service import fund
from cbi_service.entitlements.service import mark_failed, mark_issued
from cbi_service.programmes.models import Programme
from tests.support import Actors, approve_batch, make_actors, make_programme, release_batch

NAMES = [("Ana", "Pérez Mora"), ("Beto", "Cárdenas"), ("Carla", "Duarte Vivas"), ("Diego", "Espinoza"),
         ("Elena", "Fajardo Gil"), ("Fabián", "Guzmán Toro"), ("Gloria", "Herrera Ibáñez")]  # fmt: skip


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


async def make_books(
    client: httpx.AsyncClient, api_key_factory: Any, session_factory: async_sessionmaker[AsyncSession]
) -> SimpleNamespace:
    """Programme "cards" pays E1..E6 100,000.00 COP each; E1..E5 are issued (disbursed in the ledger), E6
    failed at the provider and never was. A voucher programme (provider "vouchers") issues V1. No
    entitlement is left pending, so the worker's issuance lanes, which run with the reconciliation job, have
    nothing to send. `e` holds the entitlement ids by name, `refs` the provider's references."""
    staff = await make_actors(api_key_factory)
    cards = await funded_programme(client, staff, session_factory, name="Cards")
    vouchers = await funded_programme(
        client, staff, session_factory, name="Vouchers", delivery_mechanism="voucher", provider="vouchers"
    )
    people = [await register(client, staff, g, f, born="1990-01-01", sex="female", admin1="Arauca") for g, f in NAMES]
    await enrol(client, staff, cards, people[:6])
    await enrol(client, staff, vouchers, people[6:])
    paid = await released_batch(client, staff, cards, people[:6], cycle="2026-11")
    e = {f"E{i + 1}": paid[person] for i, person in enumerate(people[:6])}
    refs = {name: await issue(session_factory, e[name]) for name in ("E1", "E2", "E3", "E4", "E5")}
    await fail(session_factory, e["E6"])
    voucher = (await released_batch(client, staff, vouchers, people[6:], cycle="2026-11"))[people[6]]
    refs["V1"] = await issue(session_factory, voucher)
    e["V1"] = voucher
    return SimpleNamespace(staff=staff, e=e, refs=refs)


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def window() -> dict[str, str]:
    """Yesterday to today: the disbursements just posted are in the period whatever the hour."""
    now = datetime.now(UTC).date()
    return {"period_start": (now - timedelta(days=1)).isoformat(), "period_end": now.isoformat()}


async def upload(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    content: bytes,
    provider: str = "cards",
    *,
    filename: str = "statement.csv",
    content_type: str = "text/csv",
    **form: str,
) -> httpx.Response:
    return await client.post(
        "/v1/reconciliations",
        data={"provider": provider, **form},
        files={"file": (filename, content, content_type)},
        headers=headers,
    )
