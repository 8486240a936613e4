"""Idempotency-Key (contract §2): replay, mismatch, in-flight, concurrency and scope."""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy import func, select

from cbi_service.auth.service import hash_key
from cbi_service.programmes.models import Programme
from tests.conftest import libpq_url
from tests.support import assert_problem, programme_body


async def _count_programmes(session_factory) -> int:
    async with session_factory() as session:
        return (await session.execute(select(func.count()).select_from(Programme))).scalar_one()


async def test_same_key_same_body_replays_first_response(client, api_key_factory, session_factory):
    headers = await api_key_factory("admin") | {"Idempotency-Key": "create-1"}
    first = await client.post("/v1/programmes", json=programme_body(), headers=headers)
    second = await client.post("/v1/programmes", json=programme_body(), headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.content == second.content
    assert second.headers["idempotent-replayed"] == "true"
    assert await _count_programmes(session_factory) == 1


async def test_a_stored_response_is_the_models_own_json_and_replays_byte_for_byte(client, api_key_factory):
    """The body is serialised by the response model itself, as every other response is (UTF-8, not escaped)."""
    headers = await api_key_factory("admin") | {"Idempotency-Key": "create-utf8"}
    body = programme_body(name="Alimentación Ñuñoa")
    first = await client.post("/v1/programmes", json=body, headers=headers)
    second = await client.post("/v1/programmes", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.content == second.content
    assert "Alimentación Ñuñoa".encode() in first.content
    read = await client.get(f"/v1/programmes/{first.json()['id']}", headers=headers)
    assert {k: v for k, v in read.json().items() if k in first.json()} == first.json()


async def test_same_key_different_body_is_422(client, api_key_factory, session_factory):
    headers = await api_key_factory("admin") | {"Idempotency-Key": "create-2"}
    assert (await client.post("/v1/programmes", json=programme_body(), headers=headers)).status_code == 201
    other = await client.post("/v1/programmes", json=programme_body(name="Other"), headers=headers)
    body = assert_problem(other, 422)
    assert body["errors"][0]["field"] == "Idempotency-Key"
    assert await _count_programmes(session_factory) == 1


async def test_key_while_first_in_flight_is_409(client, api_key_factory, database_url):
    headers = await api_key_factory("admin")
    raw = headers["Authorization"].removeprefix("Bearer ")
    conn = await asyncpg.connect(libpq_url(database_url))
    try:
        key_id = await conn.fetchval("SELECT id FROM api_keys WHERE key_hash = $1", hash_key(raw))
        await conn.execute("BEGIN")
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"idem:{key_id}:busy")
        response = await client.post(
            "/v1/programmes", json=programme_body(), headers=headers | {"Idempotency-Key": "busy"}
        )
        assert_problem(response, 409)
        await conn.execute("ROLLBACK")
    finally:
        await conn.close()
    retried = await client.post("/v1/programmes", json=programme_body(), headers=headers | {"Idempotency-Key": "busy"})
    assert retried.status_code == 201


async def test_concurrent_identical_requests_create_one_thing(client, api_key_factory, session_factory):
    headers = await api_key_factory("admin") | {"Idempotency-Key": "race"}
    responses = await asyncio.gather(
        *(client.post("/v1/programmes", json=programme_body(), headers=headers) for _ in range(8))
    )
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}
    assert 201 in statuses
    created = {r.json()["id"] for r in responses if r.status_code == 201}
    assert len(created) == 1
    assert await _count_programmes(session_factory) == 1


async def test_keys_are_scoped_to_the_caller(client, api_key_factory, session_factory):
    alice = await api_key_factory("admin", name="alice") | {"Idempotency-Key": "shared"}
    bob = await api_key_factory("admin", name="bob") | {"Idempotency-Key": "shared"}
    a = await client.post("/v1/programmes", json=programme_body(), headers=alice)
    b = await client.post("/v1/programmes", json=programme_body(), headers=bob)
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]
    assert await _count_programmes(session_factory) == 2


async def test_a_refused_request_is_the_keys_first_response(client, api_key_factory, session_factory):
    """A 4xx is replayed like a success; a corrected request needs a new key (§2: a new body is a 422)."""
    headers = await api_key_factory("admin") | {"Idempotency-Key": "fix-and-retry"}
    failed = await client.post("/v1/programmes", json=programme_body(provider="unknown"), headers=headers)
    assert_problem(failed, 422)
    again = await client.post("/v1/programmes", json=programme_body(provider="unknown"), headers=headers)
    assert_problem(again, 422)
    assert (again.content, again.headers["idempotent-replayed"]) == (failed.content, "true")
    fixed = await client.post("/v1/programmes", json=programme_body(), headers=headers)
    assert assert_problem(fixed, 422)["errors"][0]["field"] == "Idempotency-Key"
    assert await _count_programmes(session_factory) == 0
    created = await client.post("/v1/programmes", json=programme_body(), headers=headers | {"Idempotency-Key": "new"})
    assert created.status_code == 201
    assert await _count_programmes(session_factory) == 1


async def test_malformed_key_is_422(client, api_key_factory):
    headers = await api_key_factory("admin") | {"Idempotency-Key": "x" * 256}
    assert_problem(await client.post("/v1/programmes", json=programme_body(), headers=headers), 422)
