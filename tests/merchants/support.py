"""Builders of the merchant tests: a merchant over the API, and its key."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.support import make_programme
from tests.vouchers.support import PAPER

#: Colombia has no IBAN: an account number and a bank code.
PAYOUT_CO = {"account_name": "Tienda La Esperanza SAS", "account_number": "0123456789", "bank_code": "1007"}
#: Germany uses IBANs: an IBAN and its bank's BIC.
PAYOUT_DE = {"account_name": "Laden am Markt GmbH", "iban": "DE89 3704 0044 0532 0130 00", "bic": "COBADEFFXXX"}


def merchant_body(programme_ids: list[str], **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Tienda La Esperanza",
        "country": "CO",
        "programme_ids": programme_ids,
        "payout": PAYOUT_CO,
    }
    body.update(overrides)
    return body


async def make_merchant(
    client: httpx.AsyncClient, admin: dict[str, str], programme_ids: list[str], **overrides: Any
) -> dict[str, Any]:
    response = await client.post("/v1/merchants", json=merchant_body(programme_ids, **overrides), headers=admin)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def paper_voucher_merchant(client: httpx.AsyncClient, api_key_factory: Any) -> dict[str, Any]:
    """A merchant of a new paper-voucher programme, made by a new admin."""
    admin = await api_key_factory("admin", name="merchant-admin")
    programme = await make_programme(client, admin, **PAPER)
    return await make_merchant(client, admin, [programme["id"]])


async def merchant_key(api_key_factory: Any, merchant_id: str | uuid.UUID, name: str | None = None) -> dict[str, str]:
    return dict(await api_key_factory("merchant", name=name or f"merchant-{merchant_id}", merchant_id=merchant_id))
