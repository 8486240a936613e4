"""Every error path answers RFC 9457 problem+json and reveals nothing internal."""

from __future__ import annotations

import json
import uuid

import pytest

from cbi_service.kit.errors import UnprocessableEntity, field_path, problem_of
from tests.support import assert_problem, programme_body
from tests.webhooks.support import deliver


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


async def test_role_missing_is_403_naming_the_roles_allowed(client, api_key_factory):
    headers = await api_key_factory("auditor")
    body = assert_problem(await client.post("/v1/programmes", json=programme_body(), headers=headers), 403)
    assert body["allowed_roles"] == ["admin", "programme_officer"]
    assert body["detail"] == "This API key lacks a role for this operation; allowed: admin, programme_officer."
    # The audit trail's check is attached where the router is included (app.py): it names its roles too.
    body = assert_problem(await client.get("/v1/audit-events", headers=await api_key_factory("finance")), 403)
    assert body["allowed_roles"] == ["admin", "auditor"]


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


def messages(body: dict) -> dict[str, str]:
    return {e["field"]: e["message"] for e in body["errors"]}


async def test_validation_messages_are_the_validators_own_words(client, api_key_factory):
    headers = await api_key_factory("admin", "programme_officer")
    body = assert_problem(
        await client.post("/v1/programmes", json=programme_body(currency="XXX"), headers=headers), 422
    )
    assert messages(body) == {"currency": "currency 'XXX' has no minor unit and cannot carry payments"}
    money = {"amount": "1.5", "currency": "COP"}
    batch = {"programme_id": str(uuid.uuid4()), "name": "x", "cycle": "c", "amount": money}
    body = assert_problem(await client.post("/v1/payment-batches", json=batch, headers=headers), 422)
    assert messages(body) == {"amount.amount": "COP amounts need exactly 2 decimal digits"}
    batch["amount"] = {"amount": "0.00", "currency": "COP"}
    body = assert_problem(await client.post("/v1/payment-batches", json=batch, headers=headers), 422)
    assert messages(body) == {"amount.amount": "must be greater than zero"}


async def test_cross_field_errors_come_with_the_fields_own(client, api_key_factory):
    headers = await api_key_factory("admin", "programme_officer")
    bands = [{"up_to": "10.00", "approvals_required": 1}, {"up_to": "5.00", "approvals_required": 2}, {"up_to": "0.00"}]
    body = assert_problem(
        await client.post("/v1/programmes", json=programme_body(name="", approval_bands=bands), headers=headers), 422
    )
    assert messages(body) == {
        "name": "String should have at least 1 character",
        "approval_bands[1].up_to": "must be greater than the previous band's up_to",
        "approval_bands[2].up_to": "must be greater than zero",
        "approval_bands[2].approvals_required": "Field required",
    }

    batch = {"programme_id": "not-a-uuid", "name": "x", "cycle": "c"}
    body = assert_problem(await client.post("/v1/payment-batches", json=batch, headers=headers), 422)
    assert set(messages(body)) == {"programme_id", "amount"}
    assert messages(body)["amount"] == "give either amount or amount_rule"

    rule = {"base": {"amount": "0.00", "currency": "COP"}, "per_member": {"amount": "0.00", "currency": "USD"}}
    body = assert_problem(
        await client.post("/v1/payment-batches", json=batch | {"amount_rule": rule}, headers=headers), 422
    )
    assert messages(body) == {
        "programme_id": messages(body)["programme_id"],
        "amount_rule.per_member.currency": "base, per_member and max must share one currency",
        "amount_rule.base.amount": "base + per_member must be greater than zero",
    }


async def test_a_correction_removing_required_fields_names_each(client, api_key_factory):
    from tests.beneficiaries.support import person_body

    registrar = await api_key_factory("registrar")
    person = (await client.post("/v1/beneficiaries", json=person_body(), headers=registrar)).json()
    removal = {"sex": None, "household_size": None, "location": None}
    response = await client.patch(f"/v1/beneficiaries/{person['id']}", json=removal, headers=registrar)
    assert messages(assert_problem(response, 422)) == dict.fromkeys(removal, "must not be null")


@pytest.mark.parametrize(
    ("loc", "field"),
    [
        (("body", "documents", 0, "number"), "documents[0].number"),
        (("body", "amount", "function-after[_check(), str]"), "amount"),
        (("query", "limit"), "limit"),
        ((), "body"),
    ],
)
def test_field_paths(loc, field):
    assert field_path(loc) == field


API_KEY = "cbi_" + "Zq9-_x" * 7 + "w"
WEBHOOK_SECRET = "whsec_c2VjcmV0IG9mIHRoZSB3ZWJob29rIHNpZ25lcg=="


def test_a_problem_hides_the_secrets_its_error_quotes():
    error = UnprocessableEntity(
        "The provider at https://agency:pa55word@provider.example refused the call.",
        errors=[{"field": "api_key", "message": f"{API_KEY} is not accepted (Authorization: Bearer {API_KEY})"}],
    )

    body = problem_of(error).body.decode()

    assert "pa55word" not in body
    assert API_KEY not in body
    assert "https://agency:***@provider.example" in body, "the rest of the message is kept"
    assert json.loads(body)["errors"][0]["field"] == "api_key"


async def test_a_validation_message_quoting_a_secret_does_not_echo_it(client):
    """pydantic quotes an unknown union tag back; a provider that sent its signing secret there gets it hidden."""
    body = json.dumps({"type": WEBHOOK_SECRET, "timestamp": "2026-01-01T00:00:00Z", "data": {}}).encode()

    response = await deliver(client, "cards", body)

    problem = assert_problem(response, 422)
    assert WEBHOOK_SECRET not in response.text
    assert problem["errors"][0]["field"] == "type"
