from __future__ import annotations

import asyncpg
import pytest

from cbi_service.auth.roles import Role
from tests.conftest import libpq_url
from tests.support import assert_problem, programme_body


async def _create_programmes(client, headers, n):
    return [
        (await client.post("/v1/programmes", json=programme_body(name=f"P{i}"), headers=headers)).json()["id"]
        for i in range(n)
    ]


async def test_filters_and_cursor_pagination(client, api_key_factory):
    officer = await api_key_factory("programme_officer", name="officer")
    admin = await api_key_factory("admin", name="admin")
    auditor = await api_key_factory("auditor")
    ids = await _create_programmes(client, officer, 3) + await _create_programmes(client, admin, 2)

    everything, cursor = [], None
    while True:
        params = {"limit": 2, "resource_type": "programme"} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/audit-events", params=params, headers=auditor)).json()
        everything += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert [e["resource_id"] for e in everything] == ids

    by_officer = (
        await client.get(
            "/v1/audit-events",
            params={"actor_id": everything[0]["actor_id"], "resource_type": "programme"},
            headers=auditor,
        )
    ).json()
    assert [e["resource_id"] for e in by_officer["items"]] == ids[:3]

    window = {"from": everything[1]["occurred_at"], "to": everything[3]["occurred_at"], "resource_type": "programme"}
    windowed = (await client.get("/v1/audit-events", params=window, headers=auditor)).json()["items"]
    assert [e["resource_id"] for e in windowed] == ids[1:3]

    by_action = await client.get(
        "/v1/audit-events", params={"action": "programme.created", "limit": 500}, headers=auditor
    )
    assert len(by_action.json()["items"]) == 5


async def test_bad_filters_are_422(client, api_key_factory):
    auditor = await api_key_factory("auditor")
    assert_problem(await client.get("/v1/audit-events", params={"actor_id": "nope"}, headers=auditor), 422)
    assert_problem(await client.get("/v1/audit-events", params={"from": "yesterday"}, headers=auditor), 422)
    for bad in ("0001-01-01T00:00:00+01:00", "2026-01-01T00:00:00", "9999-12-31T23:59:59-14:00"):
        assert_problem(await client.get("/v1/audit-events", params={"from": bad}, headers=auditor), 422)


async def test_audit_trail_is_append_only(client, api_key_factory, database_url):
    await _create_programmes(client, await api_key_factory("admin"), 1)
    conn = await asyncpg.connect(libpq_url(database_url))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE audit_events SET actor_name = 'someone else'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM audit_events")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("TRUNCATE audit_events")
    finally:
        await conn.close()


async def test_api_key_lifecycle_is_audited(client, api_key_factory, session_factory):
    from cbi_service.auth.service import create_api_key, revoke_api_key

    async with session_factory.begin() as session:
        key, _ = await create_api_key(session, "ops", [Role.finance])
        assert await revoke_api_key(session, key.id)
    auditor = await api_key_factory("auditor")
    events = (await client.get("/v1/audit-events", params={"resource_id": str(key.id)}, headers=auditor)).json()[
        "items"
    ]
    assert [e["action"] for e in events] == ["api_key.created", "api_key.revoked"]
    assert events[0]["after"] == {"name": "ops", "roles": ["finance"]}
    assert "cbi_" not in str(events)
