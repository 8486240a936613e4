"""Every error path answers RFC 9457 problem+json and reveals nothing internal."""

from __future__ import annotations

import pytest

from tests.support import assert_problem, programme_body


async def test_unknown_route_is_404(client):
    assert_problem(await client.get("/v1/nothing-here"), 404)


async def test_wrong_method_is_405(client):
    body = assert_problem(await client.delete("/v1/programmes"), 405)
    assert body["title"] == "Method Not Allowed"


async def test_malformed_json_is_400(client, api_key_factory):
    headers = await api_key_factory("admin") | {"content-type": "application/json"}
    body = assert_problem(await client.post("/v1/programmes", content=b'{"name": ', headers=headers), 400)
    assert "errors" not in body


async def test_validation_is_422_with_field_errors(client, api_key_factory):
    headers = await api_key_factory("admin")
    body = assert_problem(await client.post("/v1/programmes", json={"name": ""}, headers=headers), 422)
    fields = {e["field"] for e in body["errors"]}
    assert {"name", "country", "currency", "sector", "provider"} <= fields
    assert all(e["message"] for e in body["errors"])


async def test_unknown_fields_are_refused(client, api_key_factory):
    headers = await api_key_factory("admin")
    body = assert_problem(
        await client.post("/v1/programmes", json=programme_body(balance="1000.00"), headers=headers), 422
    )
    assert body["errors"][0]["field"] == "balance"


async def test_missing_and_invalid_keys_are_401(client):
    assert_problem(await client.get("/v1/programmes"), 401)
    response = await client.get("/v1/programmes", headers={"Authorization": "Bearer cbi_wrong"})
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert_problem(await client.get("/v1/programmes", headers={"Authorization": "Basic abc"}), 401)


async def test_revoked_key_is_401(client, api_key_factory, session_factory):
    from cbi_service.auth.repository import ApiKeyRepository
    from cbi_service.auth.service import authenticate, hash_key, revoke_api_key

    headers = await api_key_factory("admin")
    raw = headers["Authorization"].removeprefix("Bearer ")
    async with session_factory.begin() as session:
        key = await ApiKeyRepository(session).find_active_by_hash(hash_key(raw))
        assert key is not None
        assert await revoke_api_key(session, key.id)
        assert await authenticate(session, raw) is None
    assert_problem(await client.get("/v1/programmes", headers=headers), 401)


async def test_role_missing_is_403(client, api_key_factory):
    headers = await api_key_factory("auditor")
    assert_problem(await client.post("/v1/programmes", json=programme_body(), headers=headers), 403)


async def test_unexpected_exception_is_500_revealing_nothing(app, client):
    async def explode() -> None:
        raise RuntimeError("secret detail: postgresql://user:pw@db/prod SELECT * FROM beneficiaries")

    app.add_api_route("/v1/_explode", explode)
    response = await client.get("/v1/_explode")
    body = assert_problem(response, 500)
    assert "secret" not in response.text
    assert "SELECT" not in response.text
    assert body["detail"] == "An unexpected error occurred."


async def test_request_id_is_echoed_or_made(client):
    response = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    made = await client.get("/healthz", headers={"X-Request-ID": "bad id with spaces\n"})
    assert made.headers["x-request-id"] != "bad id with spaces\n"
    assert len(made.headers["x-request-id"]) == 36


@pytest.mark.parametrize("cursor", ["!!!", "bm90LWpzb24", "WyJub3QtYS11dWlkIl0"])
async def test_foreign_cursor_is_422(client, api_key_factory, cursor):
    headers = await api_key_factory("admin")
    assert_problem(await client.get("/v1/programmes", params={"cursor": cursor}, headers=headers), 422)


@pytest.mark.parametrize("limit", [0, 501, "many"])
async def test_limit_out_of_range_is_422(client, api_key_factory, limit):
    headers = await api_key_factory("admin")
    assert_problem(await client.get("/v1/programmes", params={"limit": limit}, headers=headers), 422)


async def test_values_postgres_cannot_store_are_422(client, api_key_factory):
    headers = await api_key_factory("admin")
    response = await client.get("/v1/audit-events", params={"resource_type": "a\x00b"}, headers=headers)
    assert_problem(response, 422)
    created = await client.post("/v1/programmes", json=programme_body(name="nul\x00name"), headers=headers)
    assert_problem(created, 422)
