"""Builders of the redemption tests: released paper vouchers, merchants of their programme with keys, and
the money figures every redemption must keep true."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from tests.issuance.support import assert_identity, balances
from tests.merchants.support import make_merchant, merchant_key
from tests.support import Actors
from tests.vouchers.support import entitlements_of_batch, paper_voucher_batch


@dataclass
class Shop:
    merchant: dict[str, Any]
    key: dict[str, str]

    @property
    def id(self) -> str:
        return str(self.merchant["id"])


@dataclass
class Scene:
    actors: Actors
    programme: dict[str, Any]
    vouchers: list[dict[str, Any]]
    shops: list[Shop]


async def scene(
    client: httpx.AsyncClient, api_key_factory: Any, session_factory: Any, settings: Any, *, vouchers: int, shops: int
) -> Scene:
    """`vouchers` paper vouchers of 150000.00 COP issued, and `shops` merchants of their programme."""
    actors, programme, batch = await paper_voucher_batch(client, api_key_factory, session_factory, settings, vouchers)
    made = []
    for n in range(shops):
        merchant = await make_merchant(client, actors.admin, [programme["id"]], name=f"Tienda {n}")
        made.append(Shop(merchant, await merchant_key(api_key_factory, merchant["id"])))
    return Scene(actors, programme, await entitlements_of_batch(client, actors, batch["id"]), made)


def cop(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "COP"}


async def redeem(client: httpx.AsyncClient, shop: Shop, amount: str, **voucher: str) -> httpx.Response:
    headers = shop.key | {"Idempotency-Key": str(uuid.uuid4())}
    return await client.post("/v1/voucher-redemptions", json={**voucher, "amount": cop(amount)}, headers=headers)


async def unsettled(client: httpx.AsyncClient, actors: Actors, shop: Shop) -> str:
    response = await client.get(f"/v1/merchants/{shop.id}", headers=actors.finance)
    assert response.status_code == 200, response.text
    return str(response.json()["unsettled"]["amount"])


async def checked_balances(client: httpx.AsyncClient, actors: Actors, programme_id: str) -> dict[str, str]:
    """The programme's balances, with funded = available + committed + disbursed and its ledger balanced."""
    figures = await balances(client, actors, programme_id)
    assert_identity(figures)
    trial = await client.get("/v1/ledger/trial-balance", params={"programme_id": programme_id}, headers=actors.auditor)
    assert trial.status_code == 200, trial.text
    assert trial.json()["balanced"], trial.json()
    return figures
