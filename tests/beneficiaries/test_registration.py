from __future__ import annotations

import asyncio
import uuid

from tests.beneficiaries.support import person_body
from tests.support import assert_problem, programme_body


async def test_register_returns_canonical_values_and_unique_dedup(client, api_key_factory):
    headers = await api_key_factory("registrar")
    response = await client.post("/v1/beneficiaries", json=person_body(), headers=headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "active"
    assert body["phone"] == "+584125551234"
    assert body["dedup"] == {
        "status": "unique",
        "matches": [],
        "registries": [{"registry": "internal", "status": "checked"}],
    }
    fetched = await client.get(f"/v1/beneficiaries/{body['id']}", headers=headers)
    assert fetched.json()["documents"] == [{"type": "national_id", "number": "V-12.345.678", "issuing_country": "VE"}]


async def test_same_document_written_differently_is_409_with_existing_id(client, api_key_factory):
    headers = await api_key_factory("registrar")
    first = (await client.post("/v1/beneficiaries", json=person_body(), headers=headers)).json()
    again = person_body(
        given_names="Maria",
        family_names="Cruz",
        documents=[{"type": "national_id", "number": "12345678", "issuing_country": "VE"}],
        phone=None,
        external_ref=None,
    )
    response = await client.post("/v1/beneficiaries", json=again, headers=headers)
    problem = assert_problem(response, 409)
    assert problem["existing_id"] == first["id"]
    assert problem["dedup"]["status"] == "duplicate"
    assert problem["dedup"]["matches"][0]["matched_on"][0] == "document"
    listing = await client.get("/v1/beneficiaries", headers=headers)
    assert len(listing.json()["items"]) == 1


async def test_consent_and_field_validation(client, api_key_factory):
    headers = await api_key_factory("registrar")
    no_consent = person_body(consent={"given": False, "date": "2026-11-01", "purpose": "x"})
    assert_problem(await client.post("/v1/beneficiaries", json=no_consent, headers=headers), 422)
    missing = person_body()
    del missing["consent"]
    assert_problem(await client.post("/v1/beneficiaries", json=missing, headers=headers), 422)
    bad = person_body(
        date_of_birth="2090-01-01",
        phone="123",
        documents=[{"type": "national_id", "number": "12345678A", "issuing_country": "ES"}],
    )
    problem = assert_problem(await client.post("/v1/beneficiaries", json=bad, headers=headers), 422)
    fields = {e["field"] for e in problem["errors"]}
    assert fields == {"date_of_birth", "phone", "documents[0].number"}
    impossible = person_body(date_of_birth="1990-02-30")
    assert_problem(await client.post("/v1/beneficiaries", json=impossible, headers=headers), 422)
    assert (await client.get("/v1/beneficiaries", headers=headers)).json()["items"] == []


async def test_people_without_papers_or_phone_register(client, api_key_factory):
    headers = await api_key_factory("registrar")
    response = await client.post("/v1/beneficiaries", json=person_body(documents=[], phone=None), headers=headers)
    assert response.status_code == 201, response.text


async def test_dedup_check_has_no_side_effects(client, api_key_factory):
    headers = await api_key_factory("registrar")
    await client.post("/v1/beneficiaries", json=person_body(), headers=headers)
    variant = person_body(given_names="Maria Jose", family_names="Cruz Rodriguez", documents=[], phone=None)
    check = await client.post("/v1/dedup/check", json=variant, headers=headers)
    assert check.status_code == 200, check.text
    assert check.json()["status"] in {"duplicate", "possible_duplicate"}
    assert len((await client.get("/v1/beneficiaries", headers=headers)).json()["items"]) == 1


async def test_possible_duplicate_goes_to_adjudication_decided_by_someone_else(client, api_key_factory):
    registrar = await api_key_factory("registrar")
    other = await api_key_factory("registrar")
    original = (await client.post("/v1/beneficiaries", json=person_body(), headers=registrar)).json()
    # Same name, a birth date one digit off, no document or phone: maybe a typo, maybe a namesake.
    maybe = person_body(date_of_birth="1990-03-17", documents=[], phone=None, external_ref=None)
    created = await client.post("/v1/beneficiaries", json=maybe, headers=registrar)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "pending_adjudication"
    assert body["dedup"]["status"] == "possible_duplicate"
    assert body["dedup"]["matches"][0]["beneficiary_id"] == original["id"]

    open_ = (await client.get("/v1/adjudications", params={"status": "open"}, headers=other)).json()["items"]
    assert [a["beneficiary_id"] for a in open_] == [body["id"]]
    url = f"/v1/adjudications/{open_[0]['id']}/decision"
    assert_problem(await client.post(url, json={"decision": "duplicate"}, headers=registrar), 403)

    decided = await client.post(url, json={"decision": "duplicate", "note": "same card"}, headers=other)
    assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "decided"
    record = (await client.get(f"/v1/beneficiaries/{body['id']}", headers=other)).json()
    assert record["status"] == "duplicate"
    assert record["duplicate_of"] == original["id"]
    assert_problem(await client.post(url, json={"decision": "not_duplicate"}, headers=other), 409)


async def test_every_match_carries_its_explanation_without_personal_data(client, api_key_factory):
    headers = await api_key_factory("registrar")
    original = (await client.post("/v1/beneficiaries", json=person_body(), headers=headers)).json()
    written_short = person_body(given_names="M. José", documents=[], phone=None, external_ref=None)
    body = (await client.post("/v1/dedup/check", json=written_short, headers=headers)).json()
    match = body["matches"][0]
    assert match["beneficiary_id"] == original["id"]
    assert isinstance(match["match_weight"], float)
    lines = {line["field"]: line for line in match["explanation"]}
    assert lines["given_names"]["level"] == "initials"
    assert lines["family_names"]["level"] == "exact"
    assert lines["given_names"]["weight"] > 0
    assert "José" not in str(match["explanation"])
    assert "1990" not in str(match["explanation"])


async def test_not_duplicate_decision_activates(client, api_key_factory):
    registrar = await api_key_factory("registrar")
    admin = await api_key_factory("admin")
    await client.post("/v1/beneficiaries", json=person_body(), headers=registrar)
    maybe = person_body(date_of_birth="1990-03-17", documents=[], phone=None, external_ref=None)
    body = (await client.post("/v1/beneficiaries", json=maybe, headers=registrar)).json()
    adjudication = (await client.get("/v1/adjudications?status=open", headers=admin)).json()["items"][0]
    decided = await client.post(
        f"/v1/adjudications/{adjudication['id']}/decision", json={"decision": "not_duplicate"}, headers=admin
    )
    assert decided.status_code == 200, decided.text
    assert (await client.get(f"/v1/beneficiaries/{body['id']}", headers=admin)).json()["status"] == "active"


async def test_patch_reruns_dedup_and_is_audited(client, api_key_factory):
    registrar = await api_key_factory("registrar")
    auditor = await api_key_factory("auditor")
    first = (await client.post("/v1/beneficiaries", json=person_body(), headers=registrar)).json()
    other = person_body(
        given_names="Pedro Pablo",
        family_names="Gómez",
        sex="male",
        date_of_birth="1970-05-05",
        documents=[{"type": "passport", "number": "123456789", "issuing_country": "VE"}],
        phone=None,
        external_ref="CUC-0002",
    )
    second = (await client.post("/v1/beneficiaries", json=other, headers=registrar)).json()
    fixed = await client.patch(f"/v1/beneficiaries/{second['id']}", json={"household_size": 2}, headers=registrar)
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["household_size"] == 2
    # Correcting the document to the first person's cédula reveals a duplicate: refused, nothing changed.
    clash = {"documents": [{"type": "national_id", "number": "12.345.678", "issuing_country": "VE"}]}
    problem = assert_problem(
        await client.patch(f"/v1/beneficiaries/{second['id']}", json=clash, headers=registrar), 409
    )
    assert problem["existing_id"] == first["id"]
    unchanged = (await client.get(f"/v1/beneficiaries/{second['id']}", headers=registrar)).json()
    assert unchanged["documents"][0]["type"] == "passport"
    events = (await client.get("/v1/audit-events", params={"resource_id": second["id"]}, headers=auditor)).json()
    changes = [e["action"] for e in events["items"] if e["action"] != "beneficiary.personal_data_viewed"]
    assert changes == ["beneficiary.registered", "beneficiary.corrected"]


async def test_deactivate_then_list_filters(client, api_key_factory):
    registrar = await api_key_factory("registrar")
    officer = await api_key_factory("programme_officer")
    one = (await client.post("/v1/beneficiaries", json=person_body(), headers=registrar)).json()
    deactivated = await client.post(f"/v1/beneficiaries/{one['id']}/deactivate", headers=registrar)
    assert deactivated.json()["status"] == "inactive"
    listing = await client.get("/v1/beneficiaries", params={"status": "inactive"}, headers=officer)
    assert [b["id"] for b in listing.json()["items"]] == [one["id"]]
    by_ref = await client.get("/v1/beneficiaries", params={"external_ref": "CUC-0001"}, headers=officer)
    assert [b["id"] for b in by_ref.json()["items"]] == [one["id"]]
    assert (await client.get("/v1/beneficiaries", params={"status": "active"}, headers=officer)).json()["items"] == []


async def test_enrolments_report_who_could_not_be_enrolled(client, api_key_factory):
    registrar = await api_key_factory("registrar")
    officer = await api_key_factory("programme_officer")
    programme = (await client.post("/v1/programmes", json=programme_body(), headers=officer)).json()
    active = (await client.post("/v1/beneficiaries", json=person_body(), headers=registrar)).json()
    other = person_body(given_names="Luis", family_names="Pérez", sex="male", date_of_birth="1980-01-02",
                        documents=[], phone=None, external_ref=None)  # fmt: skip
    inactive = (await client.post("/v1/beneficiaries", json=other, headers=registrar)).json()
    await client.post(f"/v1/beneficiaries/{inactive['id']}/deactivate", headers=registrar)
    missing = str(uuid.uuid4())
    url = f"/v1/programmes/{programme['id']}/enrolments"
    body = {"beneficiary_ids": [active["id"], inactive["id"], missing]}
    result = (await client.post(url, json=body, headers=officer)).json()
    assert result["enrolled"] == [active["id"]]
    assert {(r["beneficiary_id"], r["reason"]) for r in result["rejected"]} == {
        (inactive["id"], "not_active"),
        (missing, "not_found"),
    }
    again = (await client.post(url, json={"beneficiary_ids": [active["id"]]}, headers=registrar)).json()
    assert again["already_enrolled"] == [active["id"]]
    enrolled = await client.get("/v1/beneficiaries", params={"programme_id": programme["id"]}, headers=officer)
    assert [b["id"] for b in enrolled.json()["items"]] == [active["id"]]
    assert_problem(await client.post(f"/v1/programmes/{uuid.uuid4()}/enrolments", json=body, headers=officer), 404)


async def test_concurrent_registrations_of_one_person_create_one_record(client, api_key_factory):
    headers = await api_key_factory("registrar")
    body = person_body(documents=[], external_ref=None)
    responses = await asyncio.gather(*(client.post("/v1/beneficiaries", json=body, headers=headers) for _ in range(4)))
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409]
    assert len((await client.get("/v1/beneficiaries", headers=headers)).json()["items"]) == 1


async def test_idempotent_registration_replays(client, api_key_factory):
    headers = await api_key_factory("registrar") | {"Idempotency-Key": "reg-1"}
    first = await client.post("/v1/beneficiaries", json=person_body(), headers=headers)
    second = await client.post("/v1/beneficiaries", json=person_body(), headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()


async def test_whoever_corrected_a_record_cannot_adjudicate_it(client, api_key_factory):
    registrar = await api_key_factory("registrar")
    corrector = await api_key_factory("registrar")
    clerk = await api_key_factory("registrar")
    admin = await api_key_factory("admin")
    original = (await client.post("/v1/beneficiaries", json=person_body(), headers=registrar)).json()
    # Registered with a birth date far from the original's: unique. The correction brings it one digit away.
    other = person_body(date_of_birth="1971-03-17", documents=[], phone=None, external_ref=None)
    second = (await client.post("/v1/beneficiaries", json=other, headers=registrar)).json()
    assert second["status"] == "active"
    url = f"/v1/beneficiaries/{second['id']}"
    corrected = await client.patch(url, json={"date_of_birth": "1990-03-17"}, headers=corrector)
    assert corrected.json()["status"] == "pending_adjudication", corrected.text
    assert corrected.json()["dedup"]["matches"][0]["beneficiary_id"] == original["id"]
    # A later, unrelated correction by someone else neither clears the first corrector nor the pending state.
    assert (await client.patch(url, json={"household_size": 5}, headers=clerk)).json()["status"] == (
        "pending_adjudication"
    )
    (adjudication,) = (await client.get("/v1/adjudications?status=open", headers=admin)).json()["items"]
    decision = f"/v1/adjudications/{adjudication['id']}/decision"
    for author in (registrar, corrector, clerk):
        assert_problem(await client.post(decision, json={"decision": "not_duplicate"}, headers=author), 403)
    decided = await client.post(decision, json={"decision": "not_duplicate"}, headers=admin)
    assert decided.status_code == 200, decided.text
    assert (await client.get(url, headers=admin)).json()["status"] == "active"
