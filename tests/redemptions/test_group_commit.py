"""§14 Online redemptions are carried out in groups (`kit.group_commit`): requests that arrive together share one
transaction, and each still gets, stores and replays the answer it would have had alone."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import text

from cbi_service.kit.errors import PROBLEM_JSON
from tests.redemptions.support import checked_balances, cop, scene


async def test_a_group_answers_each_request_as_if_it_were_alone(client, api_key_factory, session_factory, settings):
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=4, shops=2)
    a, b, c, d = s.vouchers
    header, claims, signature = c["voucher_token"].split(".")
    forged = f"{header}.{claims}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    asked = [
        (0, "ok-a", {"token": a["voucher_token"], "amount": cop("100000.00")}),
        (1, "ok-b", {"code": b["voucher_code"], "amount": cop("150000.00")}),
        (0, "too-much", {"token": d["voucher_token"], "amount": cop("150000.01")}),
        (1, "forged", {"token": forged, "amount": cop("1.00")}),
        (0, "typo", {"code": "NOT-A-CODE", "amount": cop("1.00")}),
        (1, "usd", {"token": d["voucher_token"], "amount": {"amount": "1.00", "currency": "USD"}}),
        (1, "rest-a", {"code": a["voucher_code"], "amount": cop("50000.00")}),
    ]

    def send(shop: int, key: str, body: dict) -> object:
        headers = s.shops[shop].key | {"Idempotency-Key": key}
        return client.post("/v1/voucher-redemptions", json=body, headers=headers)

    first = await asyncio.gather(*(send(*request) for request in asked))
    statuses = {key: r.status_code for (_, key, _), r in zip(asked, first, strict=True)}
    assert statuses == {
        "ok-a": 201,
        "ok-b": 201,
        "too-much": 422,
        "forged": 422,
        "typo": 422,
        "usd": 422,
        "rest-a": 201,
    }, [r.text for r in first]
    by_key = dict(zip((key for _, key, _ in asked), first, strict=True))
    # Whichever of the two parts of `a` came second left nothing of it.
    assert cop("0.00") in (by_key["ok-a"].json()["remaining"], by_key["rest-a"].json()["remaining"])
    assert by_key["ok-b"].json()["remaining"] == cop("0.00")
    for refused in ("too-much", "forged", "typo", "usd"):
        assert by_key[refused].headers["content-type"].startswith(PROBLEM_JSON)

    # Every answer, refusals included, was stored under its key and replays; nothing is redeemed again.
    again = await asyncio.gather(*(send(*request) for request in asked))
    for before, after in zip(first, again, strict=True):
        assert after.status_code == before.status_code
        assert after.json() == before.json()
        assert after.headers["Idempotent-Replayed"] == "true"

    spent = await send(0, "spent-a", {"code": a["voucher_code"], "amount": cop("0.01")})
    assert spent.status_code == 409, spent.text
    assert spent.json()["reason"] == "fully_redeemed"
    figures = await checked_balances(client, s.actors, s.programme["id"])
    assert figures["redeemed"] == "300000.00"
    async with session_factory() as session:
        recorded = (
            await session.execute(
                text("SELECT voucher_id, amount_minor FROM voucher_redemptions ORDER BY amount_minor")
            )
        ).all()
        stored = (await session.execute(text("SELECT key, response_status FROM idempotency_keys"))).all()
    # Only what was applied is recorded: a refusal in a group leaves nothing behind.
    assert sorted((str(v), n) for v, n in recorded) == sorted(
        [(a["id"], 5_000_000), (a["id"], 10_000_000), (b["id"], 15_000_000)]
    )
    mine = {key: status for key, status in stored if key in statuses or key == "spent-a"}
    assert mine == statuses | {"spent-a": 409}


async def test_one_key_sent_twice_at_once_is_carried_out_once(client, api_key_factory, session_factory, settings):
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=1, shops=1)
    voucher, shop = s.vouchers[0], s.shops[0]
    body = {"token": voucher["voucher_token"], "amount": cop("10000.00")}
    headers = shop.key | {"Idempotency-Key": "twice"}
    responses = await asyncio.gather(
        *(client.post("/v1/voucher-redemptions", json=body, headers=headers) for _ in range(6))
    )
    applied = [r for r in responses if r.status_code == 201]
    # Each of the others is told the key is in flight (409, not stored) or replays the one answer.
    assert {r.status_code for r in responses} <= {201, 409}, [r.text for r in responses]
    assert len({r.json()["id"] for r in applied}) == 1
    figures = await checked_balances(client, s.actors, s.programme["id"])
    assert figures["redeemed"] == "10000.00"
    other = await client.post("/v1/voucher-redemptions", json={**body, "amount": cop("1.00")}, headers=headers)
    assert other.status_code == 422, other.text
    assert other.json()["errors"][0]["field"] == "Idempotency-Key"


async def test_each_redemption_of_a_group_names_its_own_merchant_and_request(
    client, api_key_factory, session_factory, settings
):
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=6, shops=3)
    request_ids = [f"req-{n}-{uuid.uuid4().hex[:8]}" for n in range(6)]

    def send(n: int) -> object:
        shop = s.shops[n % 3]
        headers = shop.key | {"Idempotency-Key": f"k{n}", "X-Request-ID": request_ids[n]}
        body = {"token": s.vouchers[n]["voucher_token"], "amount": cop("1000.00")}
        return client.post("/v1/voucher-redemptions", json=body, headers=headers)

    responses = await asyncio.gather(*(send(n) for n in range(6)))
    assert [r.status_code for r in responses] == [201] * 6, [r.text for r in responses]
    keys = {}
    async with session_factory() as session:
        for shop in s.shops:
            [(key_id,)] = (
                await session.execute(text("SELECT id FROM api_keys WHERE merchant_id = :m"), {"m": uuid.UUID(shop.id)})
            ).all()
            keys[shop.id] = key_id
        events = (
            await session.execute(
                text("SELECT resource_id, actor_id, request_id FROM audit_events WHERE action = 'entitlement.redeemed'")
            )
        ).all()
    expected = {(s.vouchers[n]["id"], keys[s.shops[n % 3].id], request_ids[n]) for n in range(6)}
    assert {(resource, actor, request) for resource, actor, request in events} == expected
