from __future__ import annotations

import uuid

from tests.support import assert_problem, programme_body


async def test_create_get_and_list(client, api_key_factory):
    headers = await api_key_factory("programme_officer")
    created = await client.post(
        "/v1/programmes",
        json=programme_body(approval_bands=[{"up_to": "5000000.00", "approvals_required": 1}], approvals_required=3),
        headers=headers,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["approvals_required"] == 3
    assert body["approval_bands"] == [{"up_to": "5000000.00", "approvals_required": 1}]

    fetched = await client.get(f"/v1/programmes/{body['id']}", headers=headers)
    assert fetched.json() == body

    listing = await client.get("/v1/programmes", headers=headers)
    assert [p["id"] for p in listing.json()["items"]] == [body["id"]]


async def test_list_paginates_with_cursor(client, api_key_factory):
    headers = await api_key_factory("admin")
    ids = []
    for n in range(5):
        response = await client.post("/v1/programmes", json=programme_body(name=f"P{n}"), headers=headers)
        ids.append(response.json()["id"])
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/v1/programmes", params=params, headers=headers)).json()
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids


async def test_validation_names_fields(client, api_key_factory):
    headers = await api_key_factory("admin")
    bad = programme_body(
        country="XX",
        currency="ZZZ",
        sector="gardening",
        approvals_required=0,
        approval_bands=[{"up_to": "1.5"}],
    )
    body = assert_problem(await client.post("/v1/programmes", json=bad, headers=headers), 422)
    fields = {e["field"] for e in body["errors"]}
    assert {
        "country",
        "currency",
        "sector",
        "approvals_required",
        "approval_bands[0].approvals_required",
    } <= fields


async def test_band_limits_need_the_currency_digits(client, api_key_factory):
    headers = await api_key_factory("admin")
    bands = [{"up_to": "5000000.0", "approvals_required": 1}]
    assert_problem(await client.post("/v1/programmes", json=programme_body(approval_bands=bands), headers=headers), 422)


async def test_unknown_or_mismatched_provider_is_422(client, api_key_factory):
    headers = await api_key_factory("admin")
    unknown = assert_problem(
        await client.post("/v1/programmes", json=programme_body(provider="nope"), headers=headers), 422
    )
    assert unknown["errors"][0]["field"] == "provider"
    mismatch = programme_body(provider="vouchers", delivery_mechanism="prepaid_card")
    assert_problem(await client.post("/v1/programmes", json=mismatch, headers=headers), 422)


async def test_unknown_programme_is_404(client, api_key_factory):
    headers = await api_key_factory("auditor")
    assert_problem(await client.get(f"/v1/programmes/{uuid.uuid4()}", headers=headers), 404)
    assert_problem(await client.get("/v1/programmes/not-a-uuid", headers=headers), 422)


async def test_creation_is_audited_in_the_same_transaction(client, api_key_factory):
    headers = await api_key_factory("admin")
    auditor = await api_key_factory("auditor")
    created = (await client.post("/v1/programmes", json=programme_body(), headers=headers)).json()
    events = (await client.get("/v1/audit-events", params={"resource_id": created["id"]}, headers=auditor)).json()[
        "items"
    ]
    assert [e["action"] for e in events] == ["programme.created"]
    assert events[0]["after"]["name"] == created["name"]
    assert events[0]["actor_name"] == "test-admin"


def test_approval_bands_pick_the_first_band_that_fits():
    from cbi_service.programmes.models import Programme

    programme = Programme(
        approvals_required=2,
        approval_bands=[
            {"up_to_minor": 100, "approvals_required": 1},
            {"up_to_minor": 1000, "approvals_required": 2},
            {"up_to_minor": 10000, "approvals_required": 3},
        ],
    )
    assert programme.approvals_needed(100) == 1
    assert programme.approvals_needed(101) == 2
    assert programme.approvals_needed(10000) == 3
    assert programme.approvals_needed(10**9) == 3
    assert Programme(approvals_required=2, approval_bands=[]).approvals_needed(10**9) == 2
