"""Unstorable text (NUL, lone surrogates) is a 422 naming the field on every route, before anything runs."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from cbi_service.kit.routing import unstorable_reason
from tests.support import assert_problem, programme_body


async def test_every_route_refuses_unstorable_text(app, client, api_key_factory):
    """Every operation in the spec, sent a NUL in its query, answers 422 before doing anything."""
    headers = await api_key_factory("admin")
    operations = [
        (method, path)
        for path, item in app.openapi()["paths"].items()
        for method in item
        # Provider callbacks (webhooks, G2P Connect) read only their path (an in-memory provider lookup) and the
        # raw bytes their signature covers.
        if not path.startswith(("/v1/webhooks/{provider}", "/v1/g2p-connect/{provider}/"))
    ]
    assert len(operations) >= 38
    answered = {}
    for method, path in operations:
        url = re.sub(r"{[a-z_]+}", str(uuid.uuid4()), path)
        response = await client.request(method, url, params={"note": "a\x00b"}, headers=headers)
        answered[f"{method} {path}"] = response.status_code
    assert {operation: status for operation, status in answered.items() if status != 422} == {}


@pytest.mark.parametrize(
    ("text", "storable"), [("plain", True), ("ñandú 🇨🇴", True), ("a\x00", False), ("\ud800", False)]
)
def test_unstorable_reason(text, storable):
    assert (unstorable_reason(text) is None) is storable


async def test_nul_and_surrogates_in_a_body_are_422_naming_each_field(client, api_key_factory):
    headers = await api_key_factory("admin") | {"Content-Type": "application/json"}
    body = programme_body(name="a\x00b", approval_bands=[{"up_to": "\ud800", "approvals_required": 1}])
    response = await client.post("/v1/programmes", content=json.dumps(body), headers=headers)
    problem = assert_problem(response, 422)
    assert sorted(e["field"] for e in problem["errors"]) == ["approval_bands[0].up_to", "name"]
    assert "\x00" not in response.text


async def test_nul_in_a_field_name_is_422(client, api_key_factory):
    headers = await api_key_factory("registrar") | {"Content-Type": "application/json"}
    response = await client.post("/v1/dedup/check", content=json.dumps({"given\x00names": "x"}), headers=headers)
    assert_problem(response, 422)


@pytest.mark.parametrize(
    "url",
    ["/v1/webhooks/events?provider=a%00b", "/v1/beneficiaries?external_ref=%00", "/v1/programmes?%00=1"],
)
async def test_nul_in_a_query_is_422(client, api_key_factory, url):
    headers = await api_key_factory("admin", "finance")
    assert_problem(await client.get(url, headers=headers), 422)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("delete", "/v1/programmes", "GET, POST"),
        ("put", "/v1/beneficiaries/{id}", "GET, PATCH"),
        ("get", "/v1/programmes/{id}/funds", "POST"),
        ("post", "/healthz", "GET"),
    ],
)
async def test_405_allows_every_method_of_the_path(client, method, path, allowed):
    response = await client.request(method, path.replace("{id}", str(uuid.uuid4())))
    assert_problem(response, 405)
    assert response.headers["allow"] == allowed
