"""Hostile text and digits in a funding request: a clear 422 that moves no money and keeps the connection."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.helpers import assert_problem, programme_body


async def _funding_url(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    created = await client.post("/v1/programmes", json=programme_body(), headers=admin)
    assert created.status_code == 201, created.text
    return f"/v1/programmes/{created.json()['id']}"


def _body(amount: str = "10.00", **fields: str) -> dict[str, Any]:
    return {"amount": {"amount": amount, "currency": "COP"}, "source": "ECHO", "reference": "GRANT-1", **fields}


@pytest.mark.parametrize("amount", ["１０.００", "1٠.00", "10.०0"])
async def test_funding_with_non_ascii_digits_is_422(client, api_key_factory, amount):
    admin, finance = await api_key_factory("admin"), await api_key_factory("finance")
    url = await _funding_url(client, admin)

    response = await client.post(f"{url}/funds", json=_body(amount), headers=finance | {"Idempotency-Key": "wide"})

    assert_problem(response, 422)
    assert (await client.get(f"{url}/balances", headers=admin)).json()["funded"]["amount"] == "0.00"
