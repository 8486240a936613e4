"""Creating batches: who is included, who is excluded and why, and how amounts are priced."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from cbi_service.entitlements.models import Entitlement
from cbi_service.kit.ids import new_id
from tests.issuance.support import create_batch, entitlements_of, make_actors, seed_beneficiaries
from tests.support import assert_problem, make_programme


async def test_default_list_is_enrolled_active_people_priced_by_household(client, api_key_factory, session_factory):
    actors = await make_actors(api_key_factory)
    programme = await make_programme(client, actors)
    await seed_beneficiaries(session_factory, programme["id"], 5)
    await seed_beneficiaries(session_factory, programme["id"], 2, status="inactive")
    await seed_beneficiaries(session_factory, None, 2)
    rule = {
        "base": {"amount": "50000.00", "currency": "COP"},
        "per_member": {"amount": "20000.00", "currency": "COP"},
        "max": {"amount": "120000.00", "currency": "COP"},
    }
    batch = await create_batch(client, actors, programme["id"], amount_rule=rule)
    assert batch["status"] == "draft"
    assert batch["beneficiary_count"] == 5
    assert batch["counts"] == {"pending": 5}
    assert batch["excluded"] == []
    assert batch["excluded_count"] == 0
    # households 1..5: 70k, 90k, 110k, then the 120k cap twice
    assert batch["total"] == {"amount": "510000.00", "currency": "COP"}
    assert batch["amount_rule"] == rule
    amounts = sorted(e.amount_minor for e in await entitlements_of(session_factory, batch["id"]))
    assert amounts == [7_000_000, 9_000_000, 11_000_000, 12_000_000, 12_000_000]


async def test_listed_beneficiaries_report_every_exclusion(client, api_key_factory, session_factory):
    actors = await make_actors(api_key_factory)
    programme = await make_programme(client, actors)
    (active,) = await seed_beneficiaries(session_factory, programme["id"], 1)
    (inactive,) = await seed_beneficiaries(session_factory, programme["id"], 1, status="inactive")
    (pending,) = await seed_beneficiaries(session_factory, programme["id"], 1, status="pending_adjudication")
    (not_enrolled,) = await seed_beneficiaries(session_factory, None, 1)
    unknown = uuid.uuid4()
    ids = [str(i) for i in (active, active, inactive, pending, not_enrolled, unknown)]
    batch = await create_batch(client, actors, programme["id"], beneficiary_ids=ids)
    assert batch["beneficiary_count"] == 1
    reasons = {row["beneficiary_id"]: row["reason"] for row in batch["excluded"]}
    assert reasons == {
        str(inactive): "not_active",
        str(pending): "not_active",
        str(not_enrolled): "not_enrolled",
        str(unknown): "not_found",
    }
    assert batch["excluded_count"] == 4


async def test_one_live_entitlement_per_programme_cycle(client, api_key_factory, session_factory):
    actors = await make_actors(api_key_factory)
    programme = await make_programme(client, actors)
    people = await seed_beneficiaries(session_factory, programme["id"], 3)
    first = await create_batch(client, actors, programme["id"])
    second = await create_batch(client, actors, programme["id"])
    assert second["beneficiary_count"] == 0
    held = {e.beneficiary_id: e.id for e in await entitlements_of(session_factory, first["id"])}
    assert {(row["beneficiary_id"], row["reason"], row["entitlement_id"]) for row in second["excluded"]} == {
        (str(p), "already_paid_in_cycle", str(held[p])) for p in people
    }
    other_cycle = await create_batch(client, actors, programme["id"], cycle="2026-12")
    assert other_cycle["beneficiary_count"] == 3
    # the rule is the database's, whatever code writes
    with pytest.raises(IntegrityError):
        async with session_factory.begin() as session:
            await session.execute(
                insert(Entitlement).values(
                    id=new_id(),
                    batch_id=uuid.UUID(second["id"]),
                    programme_id=uuid.UUID(programme["id"]),
                    beneficiary_id=people[0],
                    cycle="2026-11",
                    currency="COP",
                    amount_minor=100,
                )
            )


async def test_concurrent_batches_split_people_without_overlap(client, api_key_factory, session_factory):
    actors = await make_actors(api_key_factory)
    programme = await make_programme(client, actors)
    await seed_beneficiaries(session_factory, programme["id"], 200)
    results = await asyncio.gather(*(create_batch(client, actors, programme["id"]) for _ in range(3)))
    assert sum(batch["beneficiary_count"] for batch in results) == 200
    assert sum(batch["excluded_count"] for batch in results) == 400


async def test_invalid_requests(client, api_key_factory, session_factory):
    actors = await make_actors(api_key_factory)
    programme = await make_programme(client, actors)
    base = {"programme_id": programme["id"], "name": "N", "cycle": "2026-11"}
    money = {"amount": "1000.00", "currency": "COP"}
    cases = [
        ({**base, "amount": {"amount": "1000.00", "currency": "USD"}}, 422),
        ({**base}, 422),
        ({**base, "amount": money, "amount_rule": {"base": money, "per_member": money}}, 422),
        ({**base, "amount": {"amount": "0.00", "currency": "COP"}}, 422),
        ({**base, "amount": {"amount": "10.5", "currency": "COP"}}, 422),
        ({**base, "amount": money, "cycle": "no spaces"}, 422),
        ({**base, "amount": money, "programme_id": str(uuid.uuid4())}, 404),
    ]
    for body, status in cases:
        assert_problem(await client.post("/v1/payment-batches", json=body, headers=actors.officer), status)


async def test_list_and_filters(client, api_key_factory, session_factory):
    actors = await make_actors(api_key_factory)
    programme = await make_programme(client, actors)
    other = await make_programme(client, actors)
    await seed_beneficiaries(session_factory, programme["id"], 2)
    made = [await create_batch(client, actors, programme["id"], cycle=f"2026-{m:02d}") for m in (1, 2, 3)]
    await create_batch(client, actors, other["id"])
    response = await client.get(
        "/v1/payment-batches", params={"programme_id": programme["id"], "limit": 2}, headers=actors.auditor
    )
    page = response.json()
    assert [b["id"] for b in page["items"]] == [b["id"] for b in made[:2]]
    assert page["items"][0]["counts"] == {"pending": 2}
    assert page["items"][0]["excluded"] is None
    response = await client.get(
        "/v1/payment-batches",
        params={"programme_id": programme["id"], "cursor": page["next_cursor"], "status": "draft"},
        headers=actors.auditor,
    )
    assert [b["id"] for b in response.json()["items"]] == [made[2]["id"]]
    detail = await client.get(f"/v1/payment-batches/{made[0]['id']}", headers=actors.finance)
    assert detail.status_code == 200
    assert detail.json()["id"] == made[0]["id"]
    assert_problem(await client.get(f"/v1/payment-batches/{uuid.uuid4()}", headers=actors.auditor), 404)
