"""A provider event carrying a full card number is kept for review with the number redacted, never applied,
and the number is nowhere at rest: not in the entitlement, the inbox, the audit trail or the logs."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tests.webhooks.support import (
    apply_all,
    deliver,
    entitlement,
    event_body,
    released_entitlements,
    stored_events,
)

PAN = "4111111111111111"


async def _database_text(session_factory: async_sessionmaker[AsyncSession]) -> str:
    """Every row of every table of the service and the ledger as text, with spaces and dashes dropped."""
    async with session_factory() as session:
        tables = (
            await session.execute(
                text(
                    "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables"
                    " WHERE table_schema IN ('public', 'ledger') AND table_type = 'BASE TABLE'"
                )
            )
        ).scalars()
        rows = [
            await session.scalar(text(f"SELECT coalesce(string_agg(t::text, ' '), '') FROM {table} AS t"))
            for table in tables
        ]
    return re.sub(r"[\s\-]", "", " ".join(rows))


def _rejected(reason: str) -> float:
    labels = {"provider": "cards", "type": "entitlement.issued", "reason": reason}
    return REGISTRY.get_sample_value("cbi_webhook_events_rejected_total", labels) or 0.0


@pytest.mark.parametrize(
    "card_fields",
    [
        {"card_token": PAN, "card_last4": "1111"},
        {"card_token": "4111 1111 1111 1111", "card_last4": "1111"},
        {"card_token": "tok_4111-1111-1111-1111", "card_last4": "1111"},
        {"card_token": "tok_123", "card_last4": PAN},
        {"card_token": "tok_123", "card_last4": "4242", "card_number": PAN},
        {"card_token": "tok_123", "card_last4": "4242", "card": {"pan": int(PAN)}},
    ],
    ids=["token", "token-spaced", "token-embedded", "last4", "extra-field", "extra-nested"],
)
async def test_a_card_number_is_kept_for_review_redacted_and_stored_nowhere(
    client, api_key_factory, session_factory, capfd, card_fields
):
    released = await released_entitlements(client, api_key_factory, session_factory, mechanism="prepaid_card")
    first = released.entitlements[0]
    before = _rejected("card_number")

    response = await deliver(client, "cards", event_body("entitlement.issued", first.id, **card_fields))
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "refused"
    await apply_all(session_factory)

    loaded = await entitlement(session_factory, first.id)
    assert (loaded.status, loaded.card_token, loaded.card_last4) == ("pending", None, None)
    (event,) = await stored_events(session_factory)
    assert (event.status, event.entitlement_id, event.event_type) == ("refused", first.id, "entitlement.issued")
    assert "full card number" in (event.detail or "")
    assert "[redacted]" in event.body
    assert "card_token" not in event.event
    assert _rejected("card_number") == before + 1
    assert PAN not in await _database_text(session_factory)
    logged = capfd.readouterr()
    assert PAN not in re.sub(r"[\s\-]", "", logged.out + logged.err)

    listed = await client.get("/v1/webhooks/events", params={"status": "refused"}, headers=released.actors.auditor)
    assert listed.status_code == 200, listed.text
    (item,) = listed.json()["items"]
    assert (item["id"], item["entitlement_id"]) == (str(event.id), str(first.id))
    assert PAN not in json.dumps(listed.json())


async def test_a_redelivery_of_a_refused_event_is_a_duplicate(client, api_key_factory, session_factory):
    released = await released_entitlements(client, api_key_factory, session_factory, mechanism="prepaid_card")
    body = event_body("entitlement.issued", released.entitlements[0].id, card_token=PAN, card_last4="1111")
    first = await deliver(client, "cards", body, webhook_id="msg_pan")
    again = await deliver(client, "cards", body, webhook_id="msg_pan")
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json() == {"id": first.json()["id"], "status": "refused", "duplicate": True}


async def test_a_token_that_fails_the_luhn_check_is_applied(client, api_key_factory, session_factory):
    released = await released_entitlements(client, api_key_factory, session_factory, mechanism="prepaid_card")
    first = released.entitlements[0]
    body = event_body("entitlement.issued", first.id, card_token="4111111111111112", card_last4="1112")
    response = await deliver(client, "cards", body)
    assert response.json()["status"] == "received"
    await apply_all(session_factory)
    loaded = await entitlement(session_factory, first.id)
    assert (loaded.status, loaded.card_token) == ("issued", "4111111111111112")


async def test_a_card_number_event_without_an_entitlement_id_is_422(client, session_factory):
    body = json.dumps(
        {"type": "entitlement.issued", "timestamp": "2026-11-22T10:00:00Z", "data": {"card_token": PAN}}
    ).encode()
    response = await deliver(client, "cards", body)
    assert response.status_code == 422, response.text
    assert PAN not in response.text
    assert await stored_events(session_factory) == []
