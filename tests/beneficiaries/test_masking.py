"""Masking by role (§2, §13): every route that returns people × every role, and who looked, audited."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from cbi_service.auth.roles import STAFF_ROLES, Role
from cbi_service.beneficiaries.masking import initials, last_two
from tests.beneficiaries.support import person_body
from tests.support import assert_problem

FULL = {"admin", "registrar", "programme_officer"}
ROLES = [r.value for r in Role if r in STAFF_ROLES]


def record_of(route: str, body: Any) -> dict[str, Any]:
    if route.endswith("personal-data"):
        return body["record"]
    if isinstance(body, dict) and "items" in body:
        return body["items"][0]
    return body


# (method, path, allowed roles, body): the routes that return people.
ROUTES = [
    ("GET", "/v1/beneficiaries", {"admin", "registrar", "programme_officer", "auditor"}, None),
    ("GET", "/v1/beneficiaries/{id}", {"admin", "registrar", "programme_officer", "auditor"}, None),
    ("PATCH", "/v1/beneficiaries/{id}", {"registrar"}, {"household_size": 5}),
    ("GET", "/v1/beneficiaries/{id}/personal-data", {"admin", "registrar"}, None),
    ("POST", "/v1/beneficiaries/{id}/deactivate", {"registrar"}, None),
    ("POST", "/v1/beneficiaries", {"registrar"}, "new"),
]


async def viewed_events(session_factory) -> list[Any]:
    async with session_factory() as session:
        query = text("SELECT * FROM audit_events WHERE action = 'beneficiary.personal_data_viewed' ORDER BY id")
        return list((await session.execute(query)).all())


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "path", "allowed", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
async def test_every_route_shows_people_in_full_or_masked_by_role(
    client, api_key_factory, session_factory, role, method, path, allowed, body
):
    registrar = await api_key_factory("registrar")
    made = await client.post("/v1/beneficiaries", json=person_body(), headers=registrar)
    assert made.status_code == 201, made.text
    url = path.replace("{id}", made.json()["id"])
    before = len(await viewed_events(session_factory))
    payload = person_body(external_ref="CUC-0002", documents=[]) | {"given_names": "Ana"} if body == "new" else body
    headers = await api_key_factory(role)
    response = await client.request(method, url, json=payload, headers=headers)
    if role not in allowed:
        assert_problem(response, 403)
        assert_problem(await client.request(method, url, json=payload), 401)
        return
    assert response.status_code in (200, 201), response.text
    person = record_of(path, response.json())
    events = (await viewed_events(session_factory))[before:]
    if role in FULL:
        assert person["personal_data"] == "full"
        assert person["phone"].startswith("+58")
        assert "T" not in person["date_of_birth"]
        assert len(person["date_of_birth"]) == 10
        (event,) = events
        assert event.actor_name is not None
        assert event.after["beneficiary_ids"] == [person["id"]]
        assert event.after["route"] == f"{method} {path.replace('{id}', '{beneficiary_id}')}"
    else:
        assert person["personal_data"] == "masked"
        assert person["given_names"] == "M. J."
        assert person["family_names"] == "R. d. l. C."
        assert person["date_of_birth"] == "1990"
        assert person["phone"].endswith("34")
        assert set(person["phone"][:-2]) == {"*"}
        assert person["documents"][0]["number"] == "**********78"
        assert person["external_ref"] == "******01"
        assert events == []


async def test_a_page_viewed_in_full_is_one_event_naming_everyone_on_it(client, api_key_factory, session_factory):
    registrar = await api_key_factory("registrar")
    ids = []
    for n, (given, family) in enumerate([("Ana", "Bello"), ("Luis", "Castro"), ("Rosa", "Duarte")]):
        body = person_body(given_names=given, family_names=family, external_ref=f"P-{n}", documents=[])
        ids.append((await client.post("/v1/beneficiaries", json=body, headers=registrar)).json()["id"])
    before = len(await viewed_events(session_factory))
    page = await client.get("/v1/beneficiaries", headers=await api_key_factory("programme_officer"))
    (event,) = (await viewed_events(session_factory))[before:]
    assert sorted(event.after["beneficiary_ids"]) == sorted(ids) == sorted(p["id"] for p in page.json()["items"])


@pytest.mark.parametrize(
    ("value", "shown"),
    [("María José", "M. J."), ("Ñ", "Ñ."), ("  Ana  ", "A."), (None, None), ("Íñigo de la Peña", "Í. d. l. P.")],
)
def test_initials(value, shown):
    assert initials(value) == shown


@pytest.mark.parametrize(
    ("value", "shown"), [("+584125551234", "***********34"), ("ab", "ab"), ("a", "a"), (None, None)]
)
def test_all_but_the_last_two(value, shown):
    assert last_two(value) == shown
