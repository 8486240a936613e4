"""Exchange rates to USD (§16): recorded by finance with their source, exact, one per currency and month."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from sqlalchemy import text

from tests.support import assert_problem

RATE = {"currency": "COP", "month": "2026-11", "usd_per_unit": "0.00025137", "source": "Banco de la República, TRM"}


async def test_a_rate_is_kept_exactly_with_its_source_and_audited(client, api_key_factory, session_factory):
    finance = await api_key_factory("finance")
    tiny = RATE | {"currency": "VES", "usd_per_unit": "0.00000000000000000001"}
    created = await client.post("/v1/fx-rates", json=RATE, headers=finance)
    assert created.status_code == 201, created.text
    body = created.json()
    assert {k: body[k] for k in RATE} == RATE
    recorded = await client.post("/v1/fx-rates", json=tiny, headers=finance)
    assert recorded.json()["usd_per_unit"] == tiny["usd_per_unit"]
    async with session_factory() as session:
        stored = (await session.execute(text("SELECT currency, usd_per_unit FROM fx_rates ORDER BY currency"))).all()
        audit = (
            await session.execute(text("SELECT action, after FROM audit_events WHERE resource_type = 'fx_rate'"))
        ).all()
    assert stored == [("COP", Decimal("0.00025137")), ("VES", Decimal("1E-20"))]
    assert [(a.action, a.after["usd_per_unit"]) for a in audit] == [
        ("fx_rate.recorded", "0.00025137"),
        ("fx_rate.recorded", "0.00000000000000000001"),
    ]
    every = (await client.get("/v1/fx-rates", headers=await api_key_factory("auditor"))).json()["items"]
    assert [r["currency"] for r in every] == ["COP", "VES"]
    assert (await client.get("/v1/fx-rates", params={"month": "2026-11"}, headers=finance)).json()["items"] == every
    ves = (await client.get("/v1/fx-rates", params={"currency": "VES"}, headers=finance)).json()["items"]
    assert ves == every[1:]
    assert (await client.get("/v1/fx-rates", params={"month": "2026-10"}, headers=finance)).json()["items"] == []


async def test_a_second_rate_for_the_month_is_refused_and_names_the_first(client, api_key_factory):
    finance = await api_key_factory("finance")
    first = (await client.post("/v1/fx-rates", json=RATE, headers=finance)).json()
    again = RATE | {"usd_per_unit": "0.00026", "source": "someone else"}
    problem = assert_problem(await client.post("/v1/fx-rates", json=again, headers=finance), 409)
    assert problem["existing"] == first
    listed = (await client.get("/v1/fx-rates", headers=finance)).json()["items"]
    assert listed == [first]


async def test_two_rates_for_the_same_month_at_once_keep_exactly_one(client, api_key_factory):
    finance = await api_key_factory("finance")
    answers = await asyncio.gather(
        *(client.post("/v1/fx-rates", json=RATE | {"usd_per_unit": f"0.0002{n}"}, headers=finance) for n in range(6))
    )
    assert sorted(a.status_code for a in answers) == [201] + [409] * 5
    assert len((await client.get("/v1/fx-rates", headers=finance)).json()["items"]) == 1


async def test_idempotency_key_replays_the_first_answer(client, api_key_factory):
    headers = await api_key_factory("finance") | {"Idempotency-Key": "rate-1"}
    first = await client.post("/v1/fx-rates", json=RATE, headers=headers)
    second = await client.post("/v1/fx-rates", json=RATE, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.content == second.content
    assert second.headers["idempotent-replayed"] == "true"
    assert_problem(await client.post("/v1/fx-rates", json=RATE | {"source": "other"}, headers=headers), 422)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"usd_per_unit": 0.00025}, "usd_per_unit"),  # a JSON number: a float on the way, never taken
        ({"usd_per_unit": "0"}, "usd_per_unit"),
        ({"usd_per_unit": "0.000"}, "usd_per_unit"),
        ({"usd_per_unit": "-0.1"}, "usd_per_unit"),
        ({"usd_per_unit": "2.5E-4"}, "usd_per_unit"),
        ({"usd_per_unit": "0,00025"}, "usd_per_unit"),
        ({"usd_per_unit": "１"}, "usd_per_unit"),
        ({"usd_per_unit": "0." + "1" * 21}, "usd_per_unit"),
        ({"currency": "USD"}, "currency"),
        ({"currency": "XYZ"}, "currency"),
        ({"currency": "cop"}, "currency"),
        ({"month": "2026-13"}, "month"),
        ({"month": "2026-11-01"}, "month"),
        ({"month": "11/2026"}, "month"),
        ({"source": "  "}, "source"),
        ({"source": "x" * 501}, "source"),
        ({"rate": "1"}, "rate"),
    ],
)
async def test_bad_rates_are_refused_naming_the_field(client, api_key_factory, change, field):
    body = RATE | change
    problem = assert_problem(
        await client.post("/v1/fx-rates", json=body, headers=await api_key_factory("finance")), 422
    )
    assert field in {e["field"] for e in problem["errors"]}, problem


async def test_bad_filters_are_refused(client, api_key_factory):
    finance = await api_key_factory("finance")
    for params in ({"month": "2026-1"}, {"currency": "usd"}, {"cursor": "nonsense"}):
        assert_problem(await client.get("/v1/fx-rates", params=params, headers=finance), 422)
