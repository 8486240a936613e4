"""§14 Redeeming online: a merchant redeems a voucher by code or token, in parts up to its value, exactly once
when two merchants race for it, and never a voucher that is spent, expired, cancelled, tampered with or of a
programme it does not serve."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import update

from cbi_service.entitlements.models import Entitlement
from cbi_service.vouchers.codes import new_code
from tests.merchants.support import make_merchant, merchant_key
from tests.redemptions.support import Shop, checked_balances, cop, redeem, scene, unsettled
from tests.support import assert_problem, make_programme
from tests.vouchers.support import PAPER


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_a_voucher_is_redeemed_in_parts_up_to_its_value(client, api_key_factory, session_factory, settings):
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=1, shops=1)
    voucher, shop = s.vouchers[0], s.shops[0]

    first = await redeem(client, shop, "50000.00", token=voucher["voucher_token"])
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["voucher_id"] == voucher["id"]
    assert body["amount"] == cop("50000.00")
    assert body["remaining"] == cop("100000.00")
    assert uuid.UUID(body["id"])

    typed = voucher["voucher_code"].lower().replace("-", " ")  # as a person might type it
    rest = await redeem(client, shop, "100000.00", code=typed)
    assert rest.status_code == 201, rest.text
    assert rest.json()["remaining"] == cop("0.00")

    spent = assert_problem(await redeem(client, shop, "1.00", code=voucher["voucher_code"]), 409)
    assert spent["reason"] == "fully_redeemed"
    entitlement = (await client.get(f"/v1/entitlements/{voucher['id']}", headers=s.actors.auditor)).json()
    assert entitlement["status"] == "redeemed"
    assert entitlement["redeemed"] == cop("150000.00")
    assert [change["status"] for change in entitlement["history"]][-2:] == ["redeemed", "redeemed"]
    assert await unsettled(client, s.actors, shop) == "150000.00"

    listed = await client.get("/v1/voucher-redemptions", headers=shop.key)
    assert [(r["amount"]["amount"], r["channel"], r["status"]) for r in listed.json()["items"]] == [
        ("50000.00", "online", "accepted"),
        ("100000.00", "online", "accepted"),
    ]


async def test_more_than_remains_is_a_422_and_changes_nothing(client, api_key_factory, session_factory, settings):
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=1, shops=1)
    voucher, shop = s.vouchers[0], s.shops[0]
    assert (await redeem(client, shop, "100000.00", token=voucher["voucher_token"])).status_code == 201
    problem = assert_problem(await redeem(client, shop, "50000.01", token=voucher["voucher_token"]), 422)
    assert problem["errors"][0]["field"] == "amount"
    assert "50000.00" in problem["errors"][0]["message"]
    assert_problem(await redeem(client, shop, "1.00", token=voucher["voucher_token"], code="X"), 422)
    usd = {"token": voucher["voucher_token"], "amount": {"amount": "1.00", "currency": "USD"}}
    headers = shop.key | {"Idempotency-Key": "usd"}
    assert_problem(await client.post("/v1/voucher-redemptions", json=usd, headers=headers), 422)
    assert await unsettled(client, s.actors, shop) == "100000.00"


async def test_a_tampered_token_or_a_mistyped_code_is_refused(client, api_key_factory, session_factory, settings):
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=1, shops=1)
    voucher, shop = s.vouchers[0], s.shops[0]
    header, claims, signature = voucher["voucher_token"].split(".")
    raised = json.loads(base64.urlsafe_b64decode(claims + "=="))
    raised["amt"] *= 10
    tampered = f"{header}.{_b64(json.dumps(raised).encode())}.{signature}"
    problem = assert_problem(await redeem(client, shop, "1.00", token=tampered), 422)
    assert problem["errors"][0]["field"] == "token"
    forged = jwt.encode(
        {**raised, "amt": 100}, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": "forged"}
    )
    assert_problem(await redeem(client, shop, "1.00", token=forged), 422)
    code = voucher["voucher_code"]
    mistyped = code[:-1] + ("2" if code[-1] != "2" else "3")
    problem = assert_problem(await redeem(client, shop, "1.00", code=mistyped), 422)
    assert problem["errors"][0]["field"] == "code"
    assert_problem(await redeem(client, shop, "1.00", code=new_code()), 404)  # a well-formed code of no voucher
    assert await unsettled(client, s.actors, shop) == "0.00"


async def test_expired_cancelled_and_other_programmes_vouchers_are_409(
    client, api_key_factory, session_factory, settings
):
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=3, shops=1)
    shop = s.shops[0]
    expired, cancelled, kept = s.vouchers
    async with session_factory.begin() as session:
        past = datetime.now(UTC) - timedelta(seconds=1)
        await session.execute(update(Entitlement).where(Entitlement.id == expired["id"]).values(expires_at=past))
    cancel = await client.post(
        f"/v1/entitlements/{cancelled['id']}/cancel", headers=s.actors.finance | {"Idempotency-Key": "c"}
    )
    assert cancel.status_code == 200, cancel.text

    assert (
        assert_problem(await redeem(client, shop, "1.00", token=expired["voucher_token"]), 409)["reason"] == "expired"
    )
    problem = assert_problem(await redeem(client, shop, "1.00", token=cancelled["voucher_token"]), 409)
    assert problem["reason"] == "cancelled"

    elsewhere = await make_programme(client, s.actors, **PAPER, name="Otro programa")
    stranger = await make_merchant(client, s.actors.admin, [elsewhere["id"]], name="Otra tienda")
    outsider = Shop(stranger, await merchant_key(api_key_factory, stranger["id"]))
    problem = assert_problem(await redeem(client, outsider, "1.00", token=kept["voucher_token"]), 409)
    assert "programme" in problem["detail"]
    assert await unsettled(client, s.actors, outsider) == "0.00"


async def test_the_idempotency_key_is_required_and_replays_the_first_answer(
    client, api_key_factory, session_factory, settings
):
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=1, shops=1)
    voucher, shop = s.vouchers[0], s.shops[0]
    body = {"token": voucher["voucher_token"], "amount": cop("10000.00")}
    assert_problem(await client.post("/v1/voucher-redemptions", json=body, headers=shop.key), 422)
    headers = shop.key | {"Idempotency-Key": "once"}
    first = await client.post("/v1/voucher-redemptions", json=body, headers=headers)
    again = await client.post("/v1/voucher-redemptions", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await unsettled(client, s.actors, shop) == "10000.00"


async def test_sixteen_redemptions_of_one_voucher_by_two_merchants_at_once_have_one_winner(
    client, api_key_factory, session_factory, settings
):
    # Two vouchers issued: the programme's disbursed money could cover a second redemption of the one raced for.
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=2, shops=2)
    voucher = s.vouchers[0]
    attempts = [redeem(client, s.shops[n % 2], "150000.00", token=voucher["voucher_token"]) for n in range(16)]
    responses = await asyncio.gather(*attempts)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 15, [r.text for r in responses]
    owed = sorted([await unsettled(client, s.actors, shop) for shop in s.shops])
    assert owed == ["0.00", "150000.00"]
    figures = await checked_balances(client, s.actors, s.programme["id"])
    assert figures["redeemed"] == "150000.00"
    # The losers' records, written before their spend was refused, went with their units of work.
    listed = await client.get("/v1/voucher-redemptions", params={"voucher_id": voucher["id"]}, headers=s.actors.finance)
    assert listed.status_code == 200, listed.text
    [record] = listed.json()["items"]
    assert record["id"] == next(r.json()["id"] for r in responses if r.status_code == 201)


async def test_a_revoked_merchant_key_is_refused_from_its_next_redemption(
    client, api_key_factory, session_factory, settings
):
    """The online route authenticates on a lookup connection of its own, not in a unit of work: every request
    still reads the key, so a revocation holds at once and a refused request redeems nothing."""
    from cbi_service.auth.repository import ApiKeyRepository
    from cbi_service.auth.service import hash_key, revoke_api_key

    s = await scene(client, api_key_factory, session_factory, settings, vouchers=1, shops=1)
    voucher, shop = s.vouchers[0], s.shops[0]
    assert (await redeem(client, shop, "10000.00", token=voucher["voucher_token"])).status_code == 201
    raw = shop.key["Authorization"].removeprefix("Bearer ")
    async with session_factory.begin() as session:
        key = await ApiKeyRepository(session).find_active_by_hash(hash_key(raw))
        assert key is not None
        assert await revoke_api_key(session, key.id)

    refused = await redeem(client, shop, "10000.00", token=voucher["voucher_token"])
    assert_problem(refused, 401)
    assert refused.headers["www-authenticate"] == "Bearer"
    entitlement = (await client.get(f"/v1/entitlements/{voucher['id']}", headers=s.actors.auditor)).json()
    assert entitlement["redeemed"] == cop("10000.00")
