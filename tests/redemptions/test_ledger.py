"""§14 Ledger: a redemption moves its amount from the programme's disbursed money to the merchant's payable
account, `redeemed` rises, and funded = available + committed + disbursed holds in every read, however many
redemptions commit meanwhile; an expiry after a part was spent returns only the rest."""

from __future__ import annotations

import asyncio

from cbi_service.entitlements import service as entitlements
from tests.redemptions.support import checked_balances, redeem, scene, unsettled


async def test_a_redemption_moves_disbursed_money_to_the_merchants_payable(
    client, api_key_factory, session_factory, settings
):
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=2, shops=2)
    before = await checked_balances(client, s.actors, s.programme["id"])
    assert (before["disbursed"], before["redeemed"]) == ("300000.00", "0.00")

    for voucher, shop, amount in zip(s.vouchers, s.shops, ("40000.00", "150000.00"), strict=True):
        assert (await redeem(client, shop, amount, token=voucher["voucher_token"])).status_code == 201
    after = await checked_balances(client, s.actors, s.programme["id"])
    assert after == {**before, "redeemed": "190000.00"}
    assert [await unsettled(client, s.actors, shop) for shop in s.shops] == ["40000.00", "150000.00"]

    accounts = await client.get(
        "/v1/ledger/accounts", params={"programme_id": s.programme["id"]}, headers=s.actors.auditor
    )
    by_code = {a["code"]: a for a in accounts.json()["items"]}
    prefix = f"prog:{s.programme['id']}"
    assert by_code[f"{prefix}:disbursed"]["balance"]["posted"]["amount"] == "110000.00"
    assert by_code[f"{prefix}:redeemed"]["balance"]["posted"]["amount"] == "0.00"
    payable = by_code[f"{prefix}:payable:{s.shops[0].id}"]
    entries = await client.get(f"/v1/ledger/accounts/{payable['id']}/entries", headers=s.actors.auditor)
    [entry] = entries.json()["items"]
    assert entry["kind"] == "redemption"
    assert entry["amount"]["amount"] == "40000.00"
    assert entry["references"]["merchant_id"] == s.shops[0].id
    assert entry["references"]["entitlement_id"] == s.vouchers[0]["id"]


async def test_the_identity_holds_in_every_read_while_redemptions_commit(
    client, api_key_factory, session_factory, settings
):
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=12, shops=2)
    done = asyncio.Event()
    reads = 0

    async def poll() -> None:
        nonlocal reads
        while not done.is_set():
            await checked_balances(client, s.actors, s.programme["id"])
            reads += 1

    async def spend() -> None:
        try:
            await asyncio.gather(
                *(
                    redeem(client, s.shops[n % 2], "50000.00", token=voucher["voucher_token"])
                    for n, voucher in enumerate(s.vouchers)
                    for _ in range(3)
                )
            )
        finally:
            done.set()

    await asyncio.gather(spend(), poll(), poll())
    assert reads >= 2
    figures = await checked_balances(client, s.actors, s.programme["id"])
    assert figures["redeemed"] == "1800000.00"


async def test_an_expiry_after_a_partial_redemption_returns_only_the_rest(
    client, api_key_factory, session_factory, settings
):
    s = await scene(client, api_key_factory, session_factory, settings, vouchers=1, shops=1)
    voucher, shop = s.vouchers[0], s.shops[0]
    assert (await redeem(client, shop, "60000.00", token=voucher["voucher_token"])).status_code == 201
    before = await checked_balances(client, s.actors, s.programme["id"])
    async with session_factory.begin() as session:
        transition = await entitlements.mark_expired(session, voucher["id"], source="test")
    assert transition.applied
    after = await checked_balances(client, s.actors, s.programme["id"])
    minor = {name: int(value.replace(".", "")) for name, value in after.items()}
    assert after["redeemed"] == "60000.00"
    assert after["returned"] == "90000.00"
    assert minor["available"] == int(before["available"].replace(".", "")) + 9_000_000
    assert await unsettled(client, s.actors, shop) == "60000.00"
