"""Entitlement routes against the provider simulator: list, detail, retry and cancel."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlalchemy import select

from ledger import schema
from tests.issuance.support import (
    approved_batch,
    assert_identity,
    balances,
    counters,
    drain,
    entitlements_of,
    fund,
    make_actors,
    released_batch,
    seed_beneficiaries,
)
from tests.support import assert_problem, make_programme


async def test_list_filters_and_detail_with_history(client, api_key_factory, session_factory, settings, simulator):
    actors, _programme, batch = await released_batch(client, api_key_factory, session_factory, 3, funds="1000000.00")
    await drain(session_factory, settings, batch["id"])
    listed = await client.get("/v1/entitlements", params={"batch_id": batch["id"], "limit": 2}, headers=actors.auditor)
    page = listed.json()
    assert len(page["items"]) == 2
    assert page["next_cursor"]
    rest = await client.get(
        "/v1/entitlements", params={"batch_id": batch["id"], "cursor": page["next_cursor"]}, headers=actors.auditor
    )
    items = page["items"] + rest.json()["items"]
    assert len({item["id"] for item in items}) == 3
    one = items[0]
    assert one["status"] == "issued"
    assert one["amount"] == {"amount": "100000.00", "currency": "COP"}
    assert one["card_token"].startswith("tok_")
    assert len(one["card_last4"]) == 4
    assert one["provider_ref"].startswith("prv_")
    assert one["history"] is None
    by_person = await client.get(
        "/v1/entitlements",
        params={"beneficiary_id": one["beneficiary_id"], "status": "issued"},
        headers=actors.officer,
    )
    assert [e["id"] for e in by_person.json()["items"]] == [one["id"]]
    none = await client.get("/v1/entitlements", params={"status": "failed"}, headers=actors.officer)
    assert none.json()["items"] == []
    detail = (await client.get(f"/v1/entitlements/{one['id']}", headers=actors.finance)).json()
    assert [(h["status"], h["actor"]) for h in detail["history"]] == [
        ("pending", None),
        ("submitted", "worker:cards"),
        ("issued", "status:cards"),
    ]
    loaded = await client.post(
        f"/v1/entitlements/{one['id']}/cancel", headers={**actors.finance, "Idempotency-Key": "c"}
    )
    assert "cannot be cancelled" in assert_problem(loaded, 409)["detail"]
    assert_problem(await client.get(f"/v1/entitlements/{uuid.uuid4()}", headers=actors.auditor), 404)
    assert_problem(await client.get("/v1/entitlements", params={"status": "lost"}, headers=actors.auditor), 422)


async def test_retry_a_failed_entitlement(client, api_key_factory, session_factory, settings, simulator):
    httpx.patch(f"{simulator.base_url}/admin/faults", json={"decline_rate": 1.0}).raise_for_status()
    actors, programme, batch = await released_batch(client, api_key_factory, session_factory, 2, funds="1000000.00")
    await drain(session_factory, settings, batch["id"])
    failed, other = await entitlements_of(session_factory, batch["id"])
    assert (failed.status, other.status) == ("failed", "failed")
    figures = await balances(client, actors, programme["id"])
    assert (figures["available"], figures["committed"]) == ("1000000.00", "0.00")
    httpx.patch(f"{simulator.base_url}/admin/faults", json={"decline_rate": 0.0}).raise_for_status()
    url = f"/v1/entitlements/{failed.id}/retry"
    assert_problem(await client.post(url, headers=actors.finance), 422)
    assert_problem(await client.post(url, headers={**actors.auditor, "Idempotency-Key": "r"}), 403)
    retried = await client.post(url, headers={**actors.officer, "Idempotency-Key": "r"})
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "submitted"
    assert retried.json()["failure"] is None
    replay = await client.post(url, headers={**actors.officer, "Idempotency-Key": "r"})
    assert replay.json() == retried.json()
    assert_problem(await client.post(url, headers={**actors.officer, "Idempotency-Key": "r2"}), 409)
    reopened = (await client.get(f"/v1/payment-batches/{batch['id']}", headers=actors.auditor)).json()
    assert reopened["status"] == "processing"
    assert (await balances(client, actors, programme["id"]))["committed"] == "100000.00"
    await drain(session_factory, settings, batch["id"])
    detail = (await client.get(f"/v1/entitlements/{failed.id}", headers=actors.auditor)).json()
    assert detail["status"] == "issued"
    assert [h["status"] for h in detail["history"]] == ["pending", "submitted", "failed", "submitted", "issued"]
    assert counters(simulator)["instructions_received"][str(failed.id)] == 2
    assert counters(simulator)["card_loads"] == 1
    assert_identity(await balances(client, actors, programme["id"]))


async def test_cancel_before_issue_at_the_provider_and_an_unused_voucher(
    client, api_key_factory, session_factory, settings, simulator
):
    actors, programme, batch = await released_batch(
        client,
        api_key_factory,
        session_factory,
        3,
        funds="1000000.00",
        delivery_mechanism="voucher",
        provider="vouchers",
    )
    first, second, third = await entitlements_of(session_factory, batch["id"])
    response = await client.post(
        f"/v1/entitlements/{first.id}/cancel", headers={**actors.finance, "Idempotency-Key": "c"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert counters(simulator)["cancelled"] == 1
    await drain(session_factory, settings, batch["id"])
    assert str(first.id) not in counters(simulator)["instructions_received"]
    assert (await balances(client, actors, programme["id"]))["available"] == "800000.00"
    unused = await client.post(
        f"/v1/entitlements/{second.id}/cancel", headers={**actors.officer, "Idempotency-Key": "c"}
    )
    assert unused.json()["status"] == "cancelled"
    figures = await balances(client, actors, programme["id"])
    assert (figures["available"], figures["returned"], figures["disbursed"]) == ("900000.00", "100000.00", "100000.00")
    assert_identity(figures)
    voucher = (await client.get(f"/v1/entitlements/{third.id}", headers=actors.auditor)).json()["voucher_code"]
    redeem = {"amount_minor": 100, "merchant": "Tienda"}
    httpx.post(f"{simulator.base_url}/admin/vouchers/{voucher}/redeem", json=redeem).raise_for_status()
    assert_problem(
        await client.post(f"/v1/entitlements/{third.id}/cancel", headers={**actors.officer, "Idempotency-Key": "d"}),
        409,
    )


async def test_cancel_in_an_approved_batch_and_refusals(client, api_key_factory, session_factory):
    actors = await make_actors(api_key_factory)
    programme = await make_programme(client, actors)
    await fund(client, actors, programme["id"], "1000000.00")
    await seed_beneficiaries(session_factory, programme["id"], 2)
    batch = await approved_batch(client, actors, programme["id"])
    first, _ = await entitlements_of(session_factory, batch["id"])
    key = {"Idempotency-Key": "k"}
    response = await client.post(f"/v1/entitlements/{first.id}/cancel", headers={**actors.officer, **key})
    assert response.json()["status"] == "cancelled"
    figures = await balances(client, actors, programme["id"])
    assert (figures["committed"], figures["available"]) == ("100000.00", "900000.00")
    assert_problem(
        await client.post(f"/v1/entitlements/{first.id}/cancel", headers={**actors.officer, "Idempotency-Key": "k2"}),
        409,
    )
    cancel_batch = await client.post(f"/v1/payment-batches/{batch['id']}/cancel", headers=actors.officer)
    assert cancel_batch.json()["status"] == "cancelled"
    figures = await balances(client, actors, programme["id"])
    assert (figures["committed"], figures["available"]) == ("0.00", "1000000.00")
    assert_problem(
        await client.post(
            f"/v1/entitlements/{uuid.uuid4()}/cancel", headers={**actors.officer, "Idempotency-Key": "z"}
        ),
        404,
    )


async def _failed_batch(client, api_key_factory, session_factory, settings, simulator, count=2):
    """A released batch of `count` whose provider declined all: (actors, programme, batch, entitlements)."""
    httpx.patch(f"{simulator.base_url}/admin/faults", json={"decline_rate": 1.0}).raise_for_status()
    actors, programme, batch = await released_batch(client, api_key_factory, session_factory, count, funds="1000000.00")
    await drain(session_factory, settings, batch["id"])
    entitlements = await entitlements_of(session_factory, batch["id"])
    assert {e.status for e in entitlements} == {"failed"}
    httpx.patch(f"{simulator.base_url}/admin/faults", json={"decline_rate": 0.0}).raise_for_status()
    return actors, programme, batch, entitlements


async def _programme_keys(session_factory, programme_id: str, entitlement_id: uuid.UUID) -> list[str]:
    t = schema.transactions
    async with session_factory() as session:
        stmt = select(t.c.key).where(t.c.key.contains(f":{entitlement_id}:")).order_by(t.c.posted_at, t.c.seq)
        return [key.removeprefix(f"prog:{programme_id}:") for key in (await session.execute(stmt)).scalars()]


async def test_cancel_a_failed_entitlement(client, api_key_factory, session_factory, settings, simulator):
    """§7: cancel is allowed before issue, failed included; its budget already went back when it failed."""
    actors, programme, batch, (failed, _) = await _failed_batch(
        client, api_key_factory, session_factory, settings, simulator
    )
    before = await balances(client, actors, programme["id"])
    url = f"/v1/entitlements/{failed.id}"
    cancelled = await client.post(f"{url}/cancel", headers={**actors.officer, "Idempotency-Key": "cancel-failed"})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert [h["status"] for h in cancelled.json()["history"]] == ["pending", "submitted", "failed", "cancelled"]
    assert await balances(client, actors, programme["id"]) == before
    assert before["committed"] == "0.00"
    assert_identity(before)
    assert await _programme_keys(session_factory, programme["id"], failed.id) == [f"release:{failed.id}:failure-1"]
    assert counters(simulator)["cancelled"] == 1
    assert_problem(await client.post(f"{url}/retry", headers={**actors.officer, "Idempotency-Key": "late"}), 409)
    assert_problem(await client.post(f"{url}/cancel", headers={**actors.officer, "Idempotency-Key": "again"}), 409)
    audit = (await client.get("/v1/audit-events", params={"resource_id": str(failed.id)}, headers=actors.admin)).json()
    (event,) = [e for e in audit["items"] if e["action"] == "entitlement.cancelled"]
    assert (event["before"]["status"], event["after"]["status"]) == ("failed", "cancelled")
    view = (await client.get(f"/v1/payment-batches/{batch['id']}", headers=actors.auditor)).json()
    assert (view["status"], view["counts"]) == ("completed", {"cancelled": 1, "failed": 1})


async def test_cancel_and_retry_of_a_failed_entitlement_race(
    client, api_key_factory, session_factory, settings, simulator
):
    """Run together, they serialise on the entitlement's row. Either the cancel wins and the retry is a 409;
    or the retry re-reserves and sends, and the cancel then either cancels it at the provider (releasing
    that reservation) or, the provider having issued it already, is a 409. Each reservation is returned at
    most once and the books balance in every order (six races, started in both orders)."""
    actors, programme, _batch, entitlements = await _failed_batch(
        client, api_key_factory, session_factory, settings, simulator, count=6
    )

    async def race(n: int, entitlement_id: uuid.UUID) -> tuple[int, int]:
        url = f"/v1/entitlements/{entitlement_id}"
        cancel = client.post(f"{url}/cancel", headers={**actors.officer, "Idempotency-Key": f"race-c-{n}"})
        retry = client.post(f"{url}/retry", headers={**actors.finance, "Idempotency-Key": f"race-r-{n}"})
        if n % 2:
            retried, cancelled = await asyncio.gather(retry, cancel)
        else:
            cancelled, retried = await asyncio.gather(cancel, retry)
        return cancelled.status_code, retried.status_code

    outcomes = await asyncio.gather(*(race(n, e.id) for n, e in enumerate(entitlements)))
    committed = 0
    for entitlement, outcome in zip(entitlements, outcomes, strict=True):
        e = entitlement.id
        status = (await client.get(f"/v1/entitlements/{e}", headers=actors.auditor)).json()["status"]
        resent = [f"release:{e}:failure-1", f"reservation:{e}:failure-1"]
        expected = {
            (200, 409): ("cancelled", [f"release:{e}:failure-1"]),
            (200, 200): ("cancelled", [*resent, f"release:{e}:cancelled"]),
            (409, 200): ("submitted", resent),
        }
        assert outcome in expected
        assert (status, await _programme_keys(session_factory, programme["id"], e)) == expected[outcome]
        committed += 100_000_00 if status == "submitted" else 0
    figures = await balances(client, actors, programme["id"])
    assert int(figures["committed"].replace(".", "")) == committed
    assert_identity(figures)


async def test_a_provider_outage_is_not_the_keys_answer(client, api_key_factory, session_factory, settings, simulator):
    """A 503 reached no decision, so it is not stored: the same request under the same key, once the
    provider is back, is carried out."""
    actors, _programme, _batch, (failed, _) = await _failed_batch(
        client, api_key_factory, session_factory, settings, simulator
    )
    keyed = {**actors.officer, "Idempotency-Key": "retry-through-outage"}
    httpx.patch(f"{simulator.base_url}/admin/faults", json={"failure_rate": 1.0}).raise_for_status()
    assert_problem(await client.post(f"/v1/entitlements/{failed.id}/retry", headers=keyed), 503)
    httpx.patch(f"{simulator.base_url}/admin/faults", json={"failure_rate": 0.0}).raise_for_status()
    retried = await client.post(f"/v1/entitlements/{failed.id}/retry", headers=keyed)
    assert retried.status_code == 200, retried.text
    assert (retried.json()["status"], retried.headers.get("Idempotent-Replayed")) == ("submitted", None)
