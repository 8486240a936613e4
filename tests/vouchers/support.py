"""Builders of the paper-voucher tests: a released paper-voucher batch, and checking tokens as a merchant's
app would, with nothing but the JWKS."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import jwt
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cbi_service.kit.settings import Settings
from tests.issuance.support import approved_batch, fund, release, seed_beneficiaries
from tests.support import Actors, make_actors, make_programme, run_jobs

PAPER = {"delivery_mechanism": "paper_voucher", "provider": "paper_voucher", "voucher_validity_days": 30}
AMOUNT = "150000.00"
AMOUNT_MINOR = 15_000_000


async def paper_voucher_batch(
    client: httpx.AsyncClient,
    api_key_factory: Any,
    session_factory: async_sessionmaker[AsyncSession],
    settings: Settings,
    count: int,
    *,
    people: Sequence[dict[str, Any]] = (),
    release_it: bool = True,
) -> tuple[Actors, dict[str, Any], dict[str, Any]]:
    """A funded paper-voucher programme, `count` enrolled people (and `people`, registration bodies,
    registered and enrolled over the API), their batch approved and released, and the worker run until it
    has nothing left to do: (actors, programme, batch). `release_it=False` stops at approved."""
    actors = await make_actors(api_key_factory)
    programme = await make_programme(client, actors, **PAPER)
    await fund(client, actors, programme["id"], "10000000.00")
    await seed_beneficiaries(session_factory, programme["id"], count)
    registered = []
    for person in people:
        response = await client.post("/v1/beneficiaries", json=person, headers=actors.registrar)
        assert response.status_code == 201, response.text
        registered.append(response.json()["id"])
    if registered:
        response = await client.post(
            f"/v1/programmes/{programme['id']}/enrolments",
            json={"beneficiary_ids": registered},
            headers=actors.registrar,
        )
        assert response.status_code == 200, response.text
    batch = await approved_batch(client, actors, programme["id"], amount=AMOUNT)
    if release_it:
        assert (await release(client, actors, batch["id"])).status_code == 200
        await run_jobs(session_factory, settings)
    return actors, programme, batch


async def entitlements_of_batch(client: httpx.AsyncClient, actors: Actors, batch_id: str) -> list[dict[str, Any]]:
    response = await client.get("/v1/entitlements", params={"batch_id": batch_id}, headers=actors.auditor)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def fetch_jwks(client: httpx.AsyncClient) -> dict[str, Any]:
    """The public keys, fetched without any credentials, as a merchant's app does."""
    response = await client.get("/v1/vouchers/keys")
    assert response.status_code == 200, response.text
    return dict(response.json())


def verify(token: str, jwks: dict[str, Any]) -> dict[str, Any]:
    """The token's claims if its signature holds under the JWKS key its `kid` names (PyJWT raises otherwise)."""
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    return dict(jwt.decode(token, key.key, algorithms=["EdDSA"]))
