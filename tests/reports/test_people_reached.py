"""People reached, against a hand count.

Programme A (multipurpose cash) pays in October and November, programme B (food, vouchers) in November:
- Lucía, girl born 2022-06-01, Norte de Santander: A in Oct and Nov, B in Nov (two sectors, paid thrice);
- Jorge, man born 1960-01-15, Norte de Santander: A in Oct; his November entitlement is never issued;
- Valentina, born 2008-11-20, Norte de Santander: A on 5 Oct and 25 Nov, 18 both times: ages are counted
  by birth year (the year is what stays in clear, §13), so 17 until her birthday does not count;
- Alex, sex "other", born 1990-05-05, Arauca: A in Oct, B in Nov;
- Samuel, born 2016-02-02, Arauca: B, but the provider failed: not reached;
- Pedro, born 1985-03-03, no admin1: A in September, before the period: not reached.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest

from tests.reconciliation.support import (
    enrol,
    fail,
    funded_programme,
    issue,
    register,
    released_batch,
)
from tests.support import assert_problem, make_actors

NDS = "Norte de Santander"


def at(day: str) -> datetime:
    return datetime.fromisoformat(f"{day}T15:00:00").replace(tzinfo=UTC)


@pytest.fixture
async def reached(client, api_key_factory, session_factory):
    staff = await make_actors(api_key_factory)
    cash = await funded_programme(client, staff, session_factory, name="Cash Cúcuta")
    food = await funded_programme(
        client,
        staff,
        session_factory,
        name="Food Arauca",
        sector="food_security",
        delivery_mechanism="voucher",
        provider="vouchers",
    )
    lucia = await register(client, staff, "Lucía", "Fernández Ríos", born="2022-06-01", sex="female", admin1=NDS)
    jorge = await register(client, staff, "Jorge Enrique", "Mendoza", born="1960-01-15", sex="male", admin1=NDS)
    valentina = await register(client, staff, "Valentina", "Rojas Paz", born="2008-11-20", sex="female", admin1=NDS)
    alex = await register(client, staff, "Alex", "Quintero Lugo", born="1990-05-05", sex="other", admin1="Arauca")
    samuel = await register(client, staff, "Samuel", "Ortiz Bello", born="2016-02-02", sex="male", admin1="Arauca")
    pedro = await register(client, staff, "Pedro Pablo", "Gómez", born="1985-03-03", sex="male", admin1=None)
    await enrol(client, staff, cash, [lucia, jorge, valentina, alex, pedro])
    await enrol(client, staff, food, [lucia, alex, samuel])

    september = await released_batch(client, staff, cash, [pedro], cycle="2026-09")
    await issue(session_factory, september[pedro], at("2026-09-15"))
    october = await released_batch(client, staff, cash, [lucia, jorge, valentina, alex], cycle="2026-10")
    for person in (lucia, jorge, valentina):
        await issue(session_factory, october[person], at("2026-10-05"))
    await issue(session_factory, october[alex], at("2026-10-20"))
    november = await released_batch(client, staff, cash, [lucia, jorge, valentina], cycle="2026-11")
    await issue(session_factory, november[lucia], at("2026-11-03"))
    await issue(session_factory, november[valentina], at("2026-11-25"))
    vouchers = await released_batch(client, staff, food, [lucia, alex, samuel], cycle="2026-11")
    await issue(session_factory, vouchers[lucia], at("2026-11-10"))
    await issue(session_factory, vouchers[alex], at("2026-11-12"))
    await fail(session_factory, vouchers[samuel])
    return staff


PERIOD_ROWS = [
    ("CO", "Arauca", "food_security", "other", "18-59", 1),
    ("CO", "Arauca", "multipurpose_cash", "other", "18-59", 1),
    ("CO", NDS, "food_security", "female", "0-5", 1),
    ("CO", NDS, "multipurpose_cash", "female", "0-5", 1),
    ("CO", NDS, "multipurpose_cash", "female", "18-59", 1),
    ("CO", NDS, "multipurpose_cash", "male", "60+", 1),
]
MONTHLY_ROWS = [
    ("2026-10", "CO", "Arauca", "multipurpose_cash", "other", "18-59", 1),
    ("2026-10", "CO", NDS, "multipurpose_cash", "female", "0-5", 1),
    ("2026-10", "CO", NDS, "multipurpose_cash", "female", "18-59", 1),
    ("2026-10", "CO", NDS, "multipurpose_cash", "male", "60+", 1),
    ("2026-11", "CO", "Arauca", "food_security", "other", "18-59", 1),
    ("2026-11", "CO", NDS, "food_security", "female", "0-5", 1),
    ("2026-11", "CO", NDS, "multipurpose_cash", "female", "0-5", 1),
    ("2026-11", "CO", NDS, "multipurpose_cash", "female", "18-59", 1),
]
PERIOD = {"from": "2026-10-01", "to": "2026-11-30"}


async def test_figures_match_the_hand_count(client, reached):
    response = await client.get("/v1/reports/people-reached", params=PERIOD, headers=reached.officer)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["people_reached"] == 4
    assert [
        (r["country"], r["admin1"], r["sector"], r["sex"], r["age_group"], r["people"]) for r in report["rows"]
    ] == PERIOD_ROWS
    assert report["months"] == [{"month": "2026-10", "people": 4}, {"month": "2026-11", "people": 3}]
    assert [
        (r["month"], r["country"], r["admin1"], r["sector"], r["sex"], r["age_group"], r["people"])
        for r in report["monthly"]
    ] == MONTHLY_ROWS


async def test_the_period_bounds_are_whole_days(client, reached):
    one_day = {"from": "2026-09-15", "to": "2026-09-15"}
    report = (await client.get("/v1/reports/people-reached", params=one_day, headers=reached.auditor)).json()
    assert report["people_reached"] == 1
    assert report["rows"] == [
        {
            "country": "CO",
            "admin1": None,
            "sector": "multipurpose_cash",
            "sex": "male",
            "age_group": "18-59",
            "people": 1,
        }
    ]
    november = {"from": "2026-11-01", "to": "2026-11-30"}
    report = (await client.get("/v1/reports/people-reached", params=november, headers=reached.auditor)).json()
    assert report["people_reached"] == 3
    assert ("CO", NDS, "multipurpose_cash", "female", "18-59", 1) in [
        (r["country"], r["admin1"], r["sector"], r["sex"], r["age_group"], r["people"]) for r in report["rows"]
    ]


async def test_csv_holds_the_same_figures(client, reached):
    headers = {**reached.registrar, "Accept": "text/csv"}
    response = await client.get("/v1/reports/people-reached", params=PERIOD, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    period = [
        (r["country"], r["admin1"], r["sector"], r["sex"], r["age_group"], int(r["people"]))
        for r in rows
        if r["scope"] == "period"
    ]
    assert period == PERIOD_ROWS
    monthly = [
        (r["month"], r["country"], r["admin1"], r["sector"], r["sex"], r["age_group"], int(r["people"]))
        for r in rows
        if r["scope"] == "month"
    ]
    assert monthly == MONTHLY_ROWS
    totals = {(r["scope"], r["month"]): int(r["people"]) for r in rows if r["scope"].endswith("total")}
    assert totals == {("period_total", ""): 4, ("month_total", "2026-10"): 4, ("month_total", "2026-11"): 3}


async def test_an_empty_period_and_bad_bounds(client, api_key_factory):
    headers = await api_key_factory("approver")
    empty = await client.get(
        "/v1/reports/people-reached", params={"from": "2020-01-01", "to": "2020-12-31"}, headers=headers
    )
    assert empty.json() == {
        "period_start": "2020-01-01",
        "period_end": "2020-12-31",
        "people_reached": 0,
        "rows": [],
        "months": [],
        "monthly": [],
    }
    backwards = {"from": "2026-11-30", "to": "2026-11-01"}
    assert_problem(await client.get("/v1/reports/people-reached", params=backwards, headers=headers), 422)
    assert_problem(await client.get("/v1/reports/people-reached", params={"from": "2026-11-01"}, headers=headers), 422)


async def test_csv_cells_a_spreadsheet_would_evaluate_are_neutralised(client, api_key_factory, session_factory):
    staff = await make_actors(api_key_factory)
    cash = await funded_programme(client, staff, session_factory, name="Cash Arauca")
    formula = "=cmd|' /C calc'!A0"
    person = await register(client, staff, "Rosa", "Linares", born="1990-01-01", sex="female", admin1=formula)
    await enrol(client, staff, cash, [person])
    paid = await released_batch(client, staff, cash, [person], cycle="2026-11")
    await issue(session_factory, paid[person], at("2026-11-05"))
    headers = {**staff.auditor, "Accept": "text/csv"}
    response = await client.get("/v1/reports/people-reached", params=PERIOD, headers=headers)
    assert formula not in response.text.replace("'" + formula, "")
    [row] = [r for r in csv.DictReader(io.StringIO(response.text)) if r["scope"] == "period"]
    assert (row["admin1"], row["people"]) == ("'" + formula, "1")
