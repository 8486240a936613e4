"""Timestamps and dates from clients are RFC 3339 and nothing else: never a Unix time in disguise."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from pydantic import TypeAdapter, ValidationError

from cbi_service.kit.timeutil import AwareDatetimeQuery, IsoDate
from tests.beneficiaries.support import person_body
from tests.support import assert_problem

NOT_TIMESTAMPS = ["0.5", "0", "1700000000", "1e9", "2026-11-22", "2026-11-22T08:30:00", "２０２６-11-22T08:30:00Z"]


@pytest.mark.parametrize("value", [*NOT_TIMESTAMPS, 0.5, 1700000000])
def test_only_rfc3339_timestamps_are_timestamps(value):
    with pytest.raises(ValidationError):
        TypeAdapter(AwareDatetimeQuery).validate_python(value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T08:30:00Z", datetime(2026, 11, 22, 8, 30, tzinfo=UTC)),
        ("2026-11-22t03:30:00.250-05:00", datetime(2026, 11, 22, 8, 30, 0, 250000, tzinfo=UTC)),
    ],
)
def test_rfc3339_timestamps_are_read_in_utc(text, expected):
    assert TypeAdapter(AwareDatetimeQuery).validate_python(text) == expected


@pytest.mark.parametrize(
    "value", ["0", "86400", "0.5", 0, 86400, "2026-11-22T00:00:00Z", "22/11/2026", "２０２６-11-22"]
)
def test_only_rfc3339_full_dates_are_dates(value):
    with pytest.raises(ValidationError):
        TypeAdapter(IsoDate).validate_python(value)
    assert TypeAdapter(IsoDate).validate_python("2026-11-22") == date(2026, 11, 22)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/ledger/trial-balance", {"as_of": "0.5"}),
        ("/v1/audit-events", {"to": "0.5"}),
        ("/v1/audit-events", {"from": "0.5"}),
        ("/v1/ledger/export", {"from": "0.5"}),
        ("/v1/ledger/export", {"to": "1700000000"}),
        ("/v1/reports/people-reached", {"from": "0", "to": "86400"}),
    ],
)
async def test_numbers_for_times_in_queries_are_422(client, api_key_factory, path, params):
    headers = await api_key_factory("auditor")
    body = assert_problem(await client.get(path, params=params, headers=headers), 422)
    assert {e["field"] for e in body["errors"]} <= set(params)


async def test_rfc3339_query_times_are_accepted(client, api_key_factory):
    headers = await api_key_factory("auditor")
    response = await client.get("/v1/ledger/trial-balance", params={"as_of": "2026-11-22T08:30:00Z"}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["as_of"] == "2026-11-22T08:30:00Z"


async def test_a_number_for_a_date_of_birth_is_422(client, api_key_factory):
    headers = await api_key_factory("registrar")
    response = await client.post("/v1/beneficiaries", json=person_body(date_of_birth=0), headers=headers)
    body = assert_problem(response, 422)
    assert [e["field"] for e in body["errors"]] == ["date_of_birth"]
