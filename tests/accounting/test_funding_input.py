"""Hostile text and digits in a funding request: a clear 422 that moves no money and keeps the connection."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from cbi_service.accounting import service
from cbi_service.kit.errors import UnprocessableEntity
from cbi_service.programmes.models import Programme
from tests.support import assert_problem, programme_body


async def _funding_url(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    created = await client.post("/v1/programmes", json=programme_body(), headers=admin)
    assert created.status_code == 201, created.text
    return f"/v1/programmes/{created.json()['id']}"


def _body(amount: str = "10.00", **fields: str) -> dict[str, Any]:
    return {"amount": {"amount": amount, "currency": "COP"}, "source": "ECHO", "reference": "GRANT-1", **fields}


@pytest.mark.parametrize(
    ("field", "value"), [("source", "a\x00b"), ("reference", "a\x00b"), ("source", "\ud800"), ("reference", "x\udfff")]
)
async def test_unstorable_text_in_funding_is_422_and_moves_nothing(client, api_key_factory, field, value):
    admin, finance = await api_key_factory("admin"), await api_key_factory("finance")
    url = await _funding_url(client, admin)

    # Escaped JSON (`\\u0000`, `\\ud800`) is how a client sends such text: valid JSON, unstorable text.
    raw = json.dumps(_body(**{field: value}))
    headers = finance | {"Idempotency-Key": "nul", "Content-Type": "application/json"}
    response = await client.post(f"{url}/funds", content=raw, headers=headers)

    body = assert_problem(response, 422)
    assert [e["field"] for e in body["errors"]] == [field]
    assert (await client.get(f"{url}/balances", headers=admin)).json()["funded"]["amount"] == "0.00"
    # The same key with a clean body is a new request, not a replay of the refusal.
    clean = await client.post(f"{url}/funds", json=_body(), headers=finance | {"Idempotency-Key": "nul"})
    assert clean.status_code == 201, clean.text


@pytest.mark.parametrize("amount", ["１０.００", "1٠.00", "10.०0"])
async def test_funding_with_non_ascii_digits_is_422(client, api_key_factory, amount):
    admin, finance = await api_key_factory("admin"), await api_key_factory("finance")
    url = await _funding_url(client, admin)

    response = await client.post(f"{url}/funds", json=_body(amount), headers=finance | {"Idempotency-Key": "wide"})

    assert_problem(response, 422)
    assert (await client.get(f"{url}/balances", headers=admin)).json()["funded"]["amount"] == "0.00"


async def test_a_funding_the_ledger_refuses_is_a_client_error(client, api_key_factory, session_factory):
    """Behind the edge too: text the ledger refuses in a funding is the client's 422, never a 500."""
    admin = await api_key_factory("admin")
    programme_id = (await _funding_url(client, admin)).rsplit("/", 1)[1]
    async with session_factory() as session:
        programme = await session.get(Programme, uuid.UUID(programme_id))
        assert programme is not None
        with pytest.raises(UnprocessableEntity):
            await service.fund(session, programme, 1000, source="a\x00b", reference="R", request_key="k")
