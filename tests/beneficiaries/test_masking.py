"""Masking by role (§2, §13): every route that returns people × every role, and who looked, audited."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import text

from cbi_service.app import create_app
from cbi_service.beneficiaries.masking import initials, last_two, masked
from cbi_service.beneficiaries.schemas import BeneficiaryOut, Consent, DocumentIn, Location
from cbi_service.kit.settings import Settings
from tests.auth.support import ALL, MATRIX
from tests.beneficiaries.support import person_body
from tests.support import assert_problem

FULL = frozenset({"admin", "registrar", "programme_officer"})
VIEWED = "beneficiary.personal_data_viewed"

# Every route whose answer holds people (BeneficiaryOut, BeneficiaryRegistered, or either inside another
# schema) → the body it is called with. `test_every_route_that_returns_people_is_here` keeps it complete.
PEOPLE_ROUTES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/beneficiaries"): person_body(),
    ("GET", "/v1/beneficiaries"): None,
    ("GET", "/v1/beneficiaries/{beneficiary_id}"): None,
    ("PATCH", "/v1/beneficiaries/{beneficiary_id}"): {"household_size": 5},
    ("POST", "/v1/beneficiaries/{beneficiary_id}/deactivate"): None,
    ("GET", "/v1/beneficiaries/{beneficiary_id}/personal-data"): None,
    ("POST", "/v1/beneficiaries/{beneficiary_id}/erasure"): {"reason": "asked to be forgotten"},
}
ROUTE_IDS = [f"{method} {path}" for method, path in PEOPLE_ROUTES]

# person_body() as the service returns it, and as it is masked.
IN_FULL = {
    "given_names": "María José",
    "family_names": "Rodríguez de la Cruz",
    "date_of_birth": "1990-03-07",
    "phone": "+584125551234",
    "documents": [{"type": "national_id", "number": "V-12.345.678", "issuing_country": "VE"}],
    "external_ref": "CUC-0001",
    "disability": None,
}
MASKED = {
    "given_names": "M. J.",
    "family_names": "R. d. l. C.",
    "date_of_birth": "1990",
    "phone": "***********34",
    "documents": [{"type": "national_id", "number": "**********78", "issuing_country": "VE"}],
    "external_ref": "******01",
    "disability": None,
}
ERASED = dict.fromkeys(IN_FULL, None) | {"documents": []}


def _schemas_reached(spec: dict[str, Any], node: Any, seen: set[str]) -> set[str]:
    """The component schemas `node` refers to, directly or through other components."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            name = ref.rsplit("/", 1)[1]
            if name not in seen:
                seen.add(name)
                _schemas_reached(spec, spec["components"]["schemas"][name], seen)
        for value in node.values():
            _schemas_reached(spec, value, seen)
    elif isinstance(node, list):
        for value in node:
            _schemas_reached(spec, value, seen)
    return seen


def test_every_route_that_returns_people_is_here():
    spec = create_app(Settings(database_url=None, run_worker=False)).openapi()
    returning_people = {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if {"BeneficiaryOut", "BeneficiaryRegistered"}
        & _schemas_reached(spec, [r for code, r in operation["responses"].items() if code.startswith("2")], set())
    }
    assert returning_people == set(PEOPLE_ROUTES)


def test_the_schema_says_how_people_are_shown():
    """A client may rely on `personal_data` being present, and a masked birth date validates."""
    schemas = create_app(Settings(database_url=None, run_worker=False)).openapi()["components"]["schemas"]
    for name in ("BeneficiaryOut", "BeneficiaryRegistered"):
        assert "personal_data" in schemas[name]["required"]
        assert schemas[name]["properties"]["personal_data"]["enum"] == ["full", "masked"]
        born = schemas[name]["properties"]["date_of_birth"]["anyOf"]
        assert {"type": "string", "format": "date"} in born
        assert {"type": "string", "pattern": "^[0-9]{4}$"} in born


async def viewed_events(session_factory) -> list[Any]:
    async with session_factory() as session:
        query = text("SELECT * FROM audit_events WHERE action = :action ORDER BY id")
        return list((await session.execute(query, {"action": VIEWED})).all())


def person_in(method: str, path: str, body: Any) -> dict[str, Any]:
    if path.endswith("/personal-data"):
        return body["record"]
    if method == "GET" and path == "/v1/beneficiaries":
        (person,) = body["items"]
        return person
    return body


def shown(person: dict[str, Any]) -> dict[str, Any]:
    return {field: person[field] for field in IN_FULL}


@pytest.mark.parametrize("role", sorted(ALL))
@pytest.mark.parametrize(("method", "path"), list(PEOPLE_ROUTES), ids=ROUTE_IDS)
async def test_every_route_shows_people_in_full_or_masked_by_role(
    client, api_key_factory, session_factory, role, method, path
):
    if path == "/v1/beneficiaries" and method == "POST":
        url = path
    else:
        made = await client.post("/v1/beneficiaries", json=person_body(), headers=await api_key_factory("registrar"))
        assert made.status_code == 201, made.text
        url = path.replace("{beneficiary_id}", made.json()["id"])
    before = len(await viewed_events(session_factory))
    headers = await api_key_factory(role, name=f"key-of-{role}")
    response = await client.request(method, url, json=PEOPLE_ROUTES[(method, path)], headers=headers)
    if role not in MATRIX[(method, path)]:
        assert_problem(response, 403)
        assert len(await viewed_events(session_factory)) == before
        return
    assert response.status_code in (200, 201), response.text
    person = person_in(method, path, response.json())
    events = (await viewed_events(session_factory))[before:]
    if role not in FULL:
        assert person["personal_data"] == "masked"
        assert shown(person) == MASKED
        assert events == []
    elif path.endswith("/erasure"):
        # Nothing personal is left to show, so nobody is recorded as having seen it.
        assert person["personal_data"] == "full"
        assert person["status"] == "erased"
        assert shown(person) == ERASED
        assert events == []
    else:
        assert person["personal_data"] == "full"
        assert shown(person) == IN_FULL
        (event,) = events
        assert event.actor_name == f"key-of-{role}"
        assert event.resource_type == "beneficiary"
        assert event.resource_id == person["id"]
        assert event.after == {"beneficiary_ids": [person["id"]], "route": f"{method} {path}"}


@pytest.mark.parametrize(("method", "path"), list(PEOPLE_ROUTES), ids=ROUTE_IDS)
async def test_signed_out_sees_nobody(client, method, path):
    url = path.replace("{beneficiary_id}", str(uuid.uuid4()))
    assert_problem(await client.request(method, url, json=PEOPLE_ROUTES[(method, path)]), 401)


async def register(client, registrar, **overrides: Any) -> str:
    made = await client.post("/v1/beneficiaries", json=person_body(**overrides), headers=registrar)
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


async def test_a_page_viewed_in_full_is_one_event_naming_everyone_on_it(client, api_key_factory, session_factory):
    registrar = await api_key_factory("registrar")
    ids = [
        await register(client, registrar, given_names=given, family_names=family, external_ref=f"P-{n}", documents=[])
        for n, (given, family) in enumerate([("Ana", "Bello"), ("Luis", "Castro"), ("Rosa", "Duarte")])
    ]
    before = len(await viewed_events(session_factory))
    page = await client.get("/v1/beneficiaries", headers=await api_key_factory("programme_officer"))
    assert [p["personal_data"] for p in page.json()["items"]] == ["full"] * 3
    (event,) = (await viewed_events(session_factory))[before:]
    assert event.resource_id == "many"
    assert sorted(event.after["beneficiary_ids"]) == sorted(ids) == sorted(p["id"] for p in page.json()["items"])
    assert event.after["route"] == "GET /v1/beneficiaries"

    # The trail shows it to an auditor, and each person's own record names it.
    auditor = await api_key_factory("auditor")
    trail = await client.get("/v1/audit-events", params={"action": VIEWED, "resource_id": "many"}, headers=auditor)
    assert [e["after"]["beneficiary_ids"] for e in trail.json()["items"]] == [event.after["beneficiary_ids"]]
    held = await client.get(f"/v1/beneficiaries/{ids[1]}/personal-data", headers=registrar)
    assert str(event.id) in {e["id"] for e in held.json()["audit_events"] if e["action"] == VIEWED}


async def test_an_empty_page_records_no_view(client, api_key_factory, session_factory):
    await register(client, await api_key_factory("registrar"))
    officer = await api_key_factory("programme_officer")
    before = len(await viewed_events(session_factory))
    page = await client.get("/v1/beneficiaries", params={"status": "inactive"}, headers=officer)
    assert page.json()["items"] == []
    assert len(await viewed_events(session_factory)) == before


async def test_erased_people_on_a_page_are_shown_as_nothing_and_not_named(client, api_key_factory, session_factory):
    registrar = await api_key_factory("registrar")
    kept = await register(client, registrar)
    gone = await register(client, registrar, given_names="Ana", family_names="Bello", external_ref="P-9", documents=[])
    erased = await client.post(
        f"/v1/beneficiaries/{gone}/erasure", json={"reason": "asked"}, headers=await api_key_factory("admin")
    )
    assert erased.status_code == 200, erased.text
    before = len(await viewed_events(session_factory))

    full = (await client.get("/v1/beneficiaries", headers=await api_key_factory("programme_officer"))).json()
    by_id = {p["id"]: p for p in full["items"]}
    assert shown(by_id[kept]) == IN_FULL
    assert shown(by_id[gone]) == ERASED
    (event,) = (await viewed_events(session_factory))[before:]
    assert event.after["beneficiary_ids"] == [kept]

    masked_page = (await client.get("/v1/beneficiaries", headers=await api_key_factory("auditor"))).json()
    by_id = {p["id"]: p for p in masked_page["items"]}
    assert shown(by_id[kept]) == MASKED
    assert shown(by_id[gone]) == ERASED
    assert {p["personal_data"] for p in masked_page["items"]} == {"masked"}
    assert len(await viewed_events(session_factory)) == before + 1


async def test_a_replayed_registration_is_the_first_answer_and_records_no_second_view(
    client, api_key_factory, session_factory
):
    """The replay goes back only to the key that registered the person, whose first view is recorded."""
    registrar = await api_key_factory("registrar") | {"Idempotency-Key": "register-once"}
    first = await client.post("/v1/beneficiaries", json=person_body(), headers=registrar)
    assert first.status_code == 201, first.text
    assert len(await viewed_events(session_factory)) == 1
    again = await client.post("/v1/beneficiaries", json=person_body(), headers=registrar)
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert again.json()["personal_data"] == "full"
    assert len(await viewed_events(session_factory)) == 1


def a_person(**overrides: Any) -> BeneficiaryOut:
    fields: dict[str, Any] = {
        "id": uuid.uuid4(),
        "status": "active",
        "given_names": "María José",
        "family_names": "Rodríguez de la Cruz",
        "date_of_birth": date(1987, 1, 2),
        "sex": "female",
        "nationality": "VE",
        "documents": [DocumentIn(type="passport", number="A1234567", issuing_country="VE")],
        "phone": "+573001234567",
        "location": Location(country="CO"),
        "household_size": 3,
        "external_ref": "REF-42",
        "population_type": "pendular",
        "disability": True,
        "consent": Consent(given=True, date=date(2026, 1, 1), purpose="cash"),
        "duplicate_of": None,
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "updated_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    return BeneficiaryOut(**(fields | overrides))


def test_masked_person_keeps_what_is_not_personal_and_still_validates():
    person = a_person()
    hidden = masked(person)
    assert hidden.personal_data == "masked"
    assert (hidden.given_names, hidden.family_names, hidden.date_of_birth) == ("M. J.", "R. d. l. C.", "1987")
    assert (hidden.phone, hidden.external_ref, hidden.documents[0].number) == ("***********67", "****42", "******67")
    assert (hidden.disability, hidden.population_type) == (None, "pendular")  # health data; a group of millions
    assert hidden.model_dump(exclude=set(IN_FULL) | {"personal_data"}) == person.model_dump(
        exclude=set(IN_FULL) | {"personal_data"}
    )
    assert (person.personal_data, person.given_names) == ("full", "María José")  # a copy: the original is kept
    assert BeneficiaryOut.model_validate(hidden.model_dump(mode="json")) == hidden


def test_masked_erased_person_stays_empty():
    erased = a_person(
        status="erased", given_names=None, family_names=None, date_of_birth=None, documents=[], phone=None,
        external_ref=None,
    )  # fmt: skip
    hidden = masked(erased)
    assert hidden.personal_data == "masked"
    assert hidden.model_dump(include=set(IN_FULL)) == ERASED
    assert BeneficiaryOut.model_validate(hidden.model_dump(mode="json")) == hidden


def test_masked_short_values_show_no_more_than_they_are():
    hidden = masked(
        a_person(
            given_names="A", family_names="Bo", phone="7", external_ref="12",
            documents=[DocumentIn(type="other", number="X", issuing_country="CO")],
        )
    )  # fmt: skip
    assert (hidden.given_names, hidden.family_names) == ("A.", "B.")
    assert (hidden.phone, hidden.external_ref, hidden.documents[0].number) == ("7", "12", "X")


@pytest.mark.parametrize(
    ("value", "shown_as"),
    [
        ("María José", "M. J."),
        ("Ñ", "Ñ."),
        ("  Ana  ", "A."),
        ("Ana\u00a0Luz\tMaría", "A. L. M."),  # any whitespace parts words
        (None, None),
        ("Íñigo de la Peña", "Í. d. l. P."),
        ("I\u0301n\u0303igo", "Í."),  # typed decomposed, the accent stays on its letter
        ("Jean-Luc", "J."),
        ("Мария Ивановна", "М. И."),
        ("محمد علي", "م. ع."),
    ],
)
def test_initials(value, shown_as):
    assert initials(value) == shown_as


@pytest.mark.parametrize(
    ("value", "shown_as"),
    [("+584125551234", "***********34"), ("V-12.345.678", "**********78"), ("abc", "*bc"), ("ab", "ab"), ("a", "a"),
     ("", ""), (None, None)],
)  # fmt: skip
def test_all_but_the_last_two(value, shown_as):
    assert last_two(value) == shown_as
