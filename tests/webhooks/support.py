"""Signing and posting webhooks exactly as a provider does (the `standardwebhooks` library), and inbox reads."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks import Webhook

from cbi_service.app import create_app
from cbi_service.entitlements.models import Entitlement
from cbi_service.kit.settings import Settings
from cbi_service.webhooks import service
from cbi_service.webhooks.models import WebhookEvent
from tests.conftest import TEST_WEBHOOK_SECRET
from tests.issuance.support import (
    Actors,
    approved_batch,
    entitlements_of,
    fund,
    make_actors,
    release,
    seed_beneficiaries,
)
from tests.support import make_programme


def event_body(event_type: str, entitlement_id: uuid.UUID | str, **data: Any) -> bytes:
    body = {
        "type": event_type,
        "timestamp": data.pop("timestamp", datetime.now(UTC).isoformat()),
        "data": {"entitlement_id": str(entitlement_id), "provider_ref": data.pop("provider_ref", "ref-1"), **data},
    }
    return json.dumps(body).encode()


def card_issued(entitlement_id: uuid.UUID | str, **data: Any) -> bytes:
    return event_body("entitlement.issued", entitlement_id, card_token="tok_123", card_last4="4242", **data)


def signed_headers(
    body: bytes, *, secret: str = TEST_WEBHOOK_SECRET, webhook_id: str | None = None, at: datetime | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers a provider sends with `body`."""
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, at, body.decode()),
    }


async def deliver(client: httpx.AsyncClient, provider: str, body: bytes, **signing: Any) -> httpx.Response:
    return await client.post(f"/v1/webhooks/{provider}", content=body, headers=signed_headers(body, **signing))


async def stored_events(session_factory: async_sessionmaker[AsyncSession]) -> list[WebhookEvent]:
    async with session_factory() as session:
        return list((await session.execute(select(WebhookEvent).order_by(WebhookEvent.id))).scalars())


async def count_events(session_factory: async_sessionmaker[AsyncSession]) -> int:
    async with session_factory() as session:
        return int(await session.scalar(select(func.count()).select_from(WebhookEvent)) or 0)


@asynccontextmanager
async def client_for(settings: Settings, **changes: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client on an app built from `settings` with `changes` (e.g. other provider secrets)."""
    app = create_app(settings.model_copy(update=changes))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


@dataclass
class Released:
    """A released batch's entitlements (still `pending`: no worker runs in tests) and who can read them."""

    programme: dict[str, Any]
    batch_id: str
    entitlements: list[Entitlement]
    actors: Actors


async def released_entitlements(
    client: httpx.AsyncClient,
    api_key_factory: Any,
    session_factory: async_sessionmaker[AsyncSession],
    *,
    mechanism: str = "voucher",
    count: int = 2,
    amount: str = "100000.00",
    **programme: Any,
) -> Released:
    """Programme → funding → enrolled people → batch → two approvals → release, through the HTTP API."""
    actors = await make_actors(api_key_factory)
    provider = "vouchers" if mechanism == "voucher" else "cards"
    created = await make_programme(client, actors, delivery_mechanism=mechanism, provider=provider, **programme)
    await fund(client, actors, created["id"], "100000000.00")
    await seed_beneficiaries(session_factory, created["id"], count)
    batch = await approved_batch(client, actors, created["id"], amount=amount)
    response = await release(client, actors, batch["id"])
    assert response.status_code == 200, response.text
    return Released(created, batch["id"], await entitlements_of(session_factory, batch["id"]), actors)


async def entitlement(session_factory: async_sessionmaker[AsyncSession], entitlement_id: uuid.UUID) -> Entitlement:
    async with session_factory() as session:
        found = await session.get(Entitlement, entitlement_id)
        assert found is not None
        return found


async def apply_all(session_factory: async_sessionmaker[AsyncSession]) -> None:
    """What the worker's `webhooks.apply` job does, run to the end of the queue."""
    await service.drain(session_factory, max_seconds=60)
