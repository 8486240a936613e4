"""§14 Redeeming offline: a device's scans synced later, one outcome each; the earliest scan of a voucher wins,
conflicts are kept for review, tokens that do not hold are rejected with a reason, and a resent sync redeems
nothing twice."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from cbi_service.app import create_app
from cbi_service.kit.settings import Settings
from cbi_service.vouchers.keys import voucher_keys
from cbi_service.vouchers.tokens import sign_voucher
from tests.merchants.support import make_merchant, merchant_key
from tests.redemptions.support import Shop, checked_balances, cop, redeem, scene, unsettled
from tests.support import assert_problem, make_programme
from tests.vouchers.support import AMOUNT_MINOR, PAPER

NOW = datetime.now(UTC)


def scan(local_id: str, voucher: dict[str, Any], amount: str, minutes_ago: int, **overrides: Any) -> dict[str, Any]:
    item = {
        "local_id": local_id,
        "token": voucher["voucher_token"],
        "amount": cop(amount),
        "scanned_at": (NOW - timedelta(minutes=minutes_ago)).isoformat(),
    }
    return item | overrides


async def sync(client, shop: Shop, items: list[dict[str, Any]], device: str = "phone-1") -> Any:
    return await client.post(
        "/v1/voucher-redemptions/sync", json={"device_id": device, "items": items}, headers=shop.key
    )


def outcomes(response) -> dict[str, tuple[str, str | None]]:
    assert response.status_code == 200, response.text
    return {item["local_id"]: (item["outcome"], item["reason"]) for item in response.json()["items"]}


async def test_scans_are_accepted_once_and_a_resent_sync_is_replayed(
    client, api_key_factory, session_factory, settings
):
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=2, shops=1)
    shop = s.shops[0]
    items = [scan("a", s.vouchers[0], "150000.00", 30), scan("b", s.vouchers[1], "20000.00", 20)]
    first = await sync(client, shop, items)
    assert outcomes(first) == {"a": ("accepted", None), "b": ("accepted", None)}
    assert first.json()["counts"] == {"accepted": 2, "replayed": 0, "conflict": 0, "rejected": 0}
    assert [i["remaining"] for i in first.json()["items"]] == [cop("0.00"), cop("130000.00")]
    assert await unsettled(client, s.actors, shop) == "170000.00"

    again = await sync(client, shop, [*items, scan("c", s.vouchers[1], "30000.00", 10)])
    assert outcomes(again) == {"a": ("replayed", None), "b": ("replayed", None), "c": ("accepted", None)}
    replayed = {i["local_id"]: i for i in again.json()["items"]}
    assert replayed["a"]["redemption_id"] == first.json()["items"][0]["redemption_id"]
    assert replayed["a"]["first_outcome"] == "accepted"
    assert await unsettled(client, s.actors, shop) == "200000.00"
    figures = await checked_balances(client, s.actors, s.programme["id"])
    assert figures["redeemed"] == "200000.00"

    # Another device's local ids are its own.
    other = await sync(client, shop, [scan("a", s.vouchers[1], "1.00", 5)], device="phone-2")
    assert outcomes(other) == {"a": ("accepted", None)}


async def test_the_earliest_scan_wins_and_the_rest_are_kept_for_review(
    client, api_key_factory, session_factory, settings
):
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=2, shops=2)
    shop, rival = s.shops
    voucher, spent_online = s.vouchers
    # Sent latest first: the order of the scans decides, not the order of the items.
    items = [scan("late", voucher, "100000.00", 5), scan("early", voucher, "100000.00", 50)]
    result = await sync(client, shop, items)
    assert outcomes(result) == {"late": ("conflict", "exceeds_remaining"), "early": ("accepted", None)}

    assert (await redeem(client, rival, "150000.00", token=spent_online["voucher_token"])).status_code == 201
    result = await sync(client, shop, [scan("after", spent_online, "10.00", 1)])
    assert outcomes(result) == {"after": ("conflict", "fully_redeemed")}

    review = await client.get("/v1/voucher-redemptions", params={"status": "conflict"}, headers=s.actors.finance)
    assert review.status_code == 200, review.text
    kept = [(r["local_id"], r["reason"], r["merchant_id"], r["device_id"]) for r in review.json()["items"]]
    assert kept == [("late", "exceeds_remaining", shop.id, "phone-1"), ("after", "fully_redeemed", shop.id, "phone-1")]
    mine = await client.get("/v1/voucher-redemptions", params={"status": "conflict"}, headers=rival.key)
    assert mine.json()["items"] == []
    assert [await unsettled(client, s.actors, x) for x in (shop, rival)] == ["100000.00", "150000.00"]
    await checked_balances(client, s.actors, s.programme["id"])


async def test_scans_whose_token_does_not_hold_are_rejected_with_a_reason(
    client, api_key_factory, session_factory, settings
):
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=1, shops=1)
    shop, voucher = s.shops[0], s.vouchers[0]
    header, claims, signature = voucher["voucher_token"].split(".")
    raised = json.loads(base64.urlsafe_b64decode(claims + "=="))
    raised["amt"] *= 10
    altered = base64.urlsafe_b64encode(json.dumps(raised).encode()).rstrip(b"=").decode()
    tampered = f"{header}.{altered}.{signature}"
    # The same voucher signed as if it had expired an hour ago (the tokens printed hold 30 days).
    lapsed = sign_voucher(
        voucher_keys(settings),
        voucher_id=uuid.UUID(voucher["id"]),
        programme_id=uuid.UUID(s.programme["id"]),
        amount_minor=AMOUNT_MINOR,
        currency="COP",
        expires_at=NOW - timedelta(hours=1),
    )

    elsewhere = await make_programme(client, s.actors, **PAPER, name="Otro programa")
    stranger = await make_merchant(client, s.actors.admin, [elsewhere["id"]], name="Otra tienda")
    outsider = Shop(stranger, await merchant_key(api_key_factory, stranger["id"]))

    items = [
        scan("tampered", voucher, "1.00", 1, token=tampered),
        scan("garbage", voucher, "1.00", 1, token="not-a-token"),
        scan("late", voucher, "1.00", 30, token=lapsed),
        scan("future", voucher, "1.00", -60),
        scan("too-much", voucher, "150000.01", 1),
        {**scan("dollars", voucher, "1.00", 1), "amount": {"amount": "1.00", "currency": "USD"}},
    ]
    result = await sync(client, shop, items)
    assert outcomes(result) == {
        "tampered": ("rejected", "bad_signature"),
        "garbage": ("rejected", "bad_signature"),
        "late": ("rejected", "expired_at_scan"),
        "future": ("rejected", "scanned_in_future"),
        "too-much": ("rejected", "exceeds_value"),
        "dollars": ("rejected", "wrong_currency"),
    }
    assert outcomes(await sync(client, outsider, [scan("x", voucher, "1.00", 1)])) == {
        "x": ("rejected", "wrong_programme")
    }
    resent = await sync(client, shop, items[:1])
    assert resent.json()["items"][0]["outcome"] == "replayed"
    assert resent.json()["items"][0]["first_outcome"] == "rejected"
    assert resent.json()["items"][0]["reason"] == "bad_signature"
    assert await unsettled(client, s.actors, shop) == "0.00"


async def test_a_sync_naming_one_local_id_twice_is_refused(client, api_key_factory, session_factory, settings):
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=1, shops=1)
    items = [scan("a", s.vouchers[0], "1.00", 2), scan("a", s.vouchers[0], "1.00", 1)]
    problem = assert_problem(await sync(client, s.shops[0], items), 422)
    assert problem["errors"][0]["field"] == "items[1].local_id"


async def test_the_same_sync_sent_twice_at_once_redeems_once(client, api_key_factory, session_factory, settings):
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=3, shops=1)
    shop = s.shops[0]
    items = [scan(f"s{n}", voucher, "50000.00", 10 - n) for n, voucher in enumerate(s.vouchers)]
    both = await asyncio.gather(sync(client, shop, items), sync(client, shop, items))
    seen = sorted(tuple(sorted(outcomes(r).values())) for r in both)
    assert seen == [(("accepted", None),) * 3, (("replayed", None),) * 3]
    assert await unsettled(client, s.actors, shop) == "150000.00"


async def test_two_merchants_syncing_scans_of_the_same_vouchers_at_once_spend_each_once(
    client, api_key_factory, session_factory, settings
):
    """A double spend across two shops' devices syncing together: neither sync fails (they take turns on the
    vouchers, never deadlock), and each voucher is accepted once, the other scan kept as a conflict."""
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=12, shops=2)
    shop, rival = s.shops
    mine = [scan(f"m{n}", voucher, "150000.00", 20) for n, voucher in enumerate(s.vouchers)]
    theirs = [scan(f"t{n}", voucher, "150000.00", 10) for n, voucher in enumerate(reversed(s.vouchers))]
    for _ in range(2):
        both = await asyncio.gather(sync(client, shop, mine), sync(client, rival, theirs))
        assert [r.status_code for r in both] == [200, 200], [r.text for r in both]
        mine, theirs = [{**i, "local_id": f"again-{i['local_id']}"} for i in theirs], mine
    counts = [r.json()["counts"] for r in both]
    assert sum(c["accepted"] for c in counts) == 0, "the second round finds every voucher spent"
    redeemed = [await unsettled(client, s.actors, shop), await unsettled(client, s.actors, rival)]
    assert sum(int(r.replace(".", "")) for r in redeemed) == 12 * AMOUNT_MINOR
    await checked_balances(client, s.actors, s.programme["id"])


async def test_vouchers_signed_by_a_key_dropped_from_the_ring_are_refused_online_and_offline(
    client, api_key_factory, session_factory, settings
):
    """A token identical to the one issued is trusted without a signature check, but only while the key that
    signed it is still in the ring: dropping a key revokes what it signed, as a rotation keeping it does not."""
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=2, shops=1)
    shop = s.shops[0]
    signed_by = voucher_keys(settings).verifying[0][1].public_bytes_raw()
    seed = base64.b64encode(Ed25519PrivateKey.generate().private_bytes_raw()).decode()
    kept = settings.model_copy(
        update={
            "voucher_signing_key": SecretStr(seed),
            "voucher_previous_keys": [base64.urlsafe_b64encode(signed_by).decode()],
        }
    )
    dropped = kept.model_copy(update={"voucher_previous_keys": []})
    async with _client_of(dropped) as rotated:
        assert outcomes(await sync(rotated, shop, [scan("a", s.vouchers[0], "1.00", 5)])) == {
            "a": ("rejected", "bad_signature")
        }
        refused = assert_problem(await redeem(rotated, shop, "1.00", token=s.vouchers[1]["voucher_token"]), 422)
        assert refused["errors"][0]["field"] == "token"
    async with _client_of(kept) as rotated:
        assert outcomes(await sync(rotated, shop, [scan("b", s.vouchers[0], "1.00", 5)])) == {"b": ("accepted", None)}
        assert (await redeem(rotated, shop, "1.00", token=s.vouchers[1]["voucher_token"])).status_code == 201
    assert await unsettled(client, s.actors, shop) == "2.00"


@contextlib.asynccontextmanager
async def _client_of(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the service started with `settings` (its own app, the same database)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http
