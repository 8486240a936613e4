"""`population_type` and `disability` (§4): registered, corrected and imported; the first kept in clear for
reports (erased or not), the second sealed as personal data, masked, and destroyed by erasure."""

from __future__ import annotations

import csv
import io

from sqlalchemy import text

from cbi_service.beneficiaries.imports import TEMPLATE_COLUMNS
from cbi_service.beneficiaries.personal import open_personal
from cbi_service.kit import crypto
from tests.beneficiaries.support import person_body
from tests.support import assert_problem, run_jobs

IMPORT_ROW = {
    "given_names": "Ana Lucía", "family_names": "Pérez Gómez", "date_of_birth": "1985-06-20", "sex": "female",
    "nationality": "VE", "country": "CO", "admin1": "Arauca", "household_size": "3", "consent_given": "sí",
    "consent_date": "01/11/2026", "consent_purpose": "cash for rent",
}  # fmt: skip


async def stored(session_factory, beneficiary_id):
    """The row as the database holds it, and its personal data opened (None once erased)."""
    async with session_factory() as session:
        row = (await session.execute(text("SELECT * FROM beneficiaries WHERE id = :id"), {"id": beneficiary_id})).one()
        if row.personal is None:
            return row, None
        ring = await crypto.keyring(session)
        await ring.require(session, {row.key_version})
        return row, open_personal(ring, row.id, row.key_version, row.data_key, row.personal)


async def test_registration_keeps_the_group_in_clear_and_seals_disability(client, api_key_factory, session_factory):
    registrar = await api_key_factory("registrar")
    body = person_body(population_type="pendular", disability=True)
    created = await client.post("/v1/beneficiaries", json=body, headers=registrar)
    assert created.status_code == 201, created.text
    assert (created.json()["population_type"], created.json()["disability"]) == ("pendular", True)
    row, personal = await stored(session_factory, created.json()["id"])
    assert row.population_type == "pendular"
    assert personal.disability is True
    assert "disability" not in row._mapping  # no column of its own: it lives in the sealed personal data

    plain = person_body(
        given_names="Pedro", family_names="Salas", date_of_birth="1970-01-01", documents=[], external_ref=None
    )
    default = (await client.post("/v1/beneficiaries", json=plain, headers=registrar)).json()
    assert (default["population_type"], default["disability"]) == ("in_destination", None)
    for bad in ({"population_type": "nomad"}, {"population_type": None}, {"disability": "sometimes"}):
        problem = assert_problem(
            await client.post("/v1/beneficiaries", json=person_body(**bad), headers=registrar), 422
        )
        assert {e["field"] for e in problem["errors"]} == set(bad)


async def test_masked_roles_see_the_group_but_not_disability(client, api_key_factory):
    registrar = await api_key_factory("registrar")
    created = (await client.post("/v1/beneficiaries", json=person_body(disability=True), headers=registrar)).json()
    masked = (await client.get(f"/v1/beneficiaries/{created['id']}", headers=await api_key_factory("auditor"))).json()
    assert masked["personal_data"] == "masked"
    assert (masked["population_type"], masked["disability"]) == ("in_destination", None)
    full = (await client.get(f"/v1/beneficiaries/{created['id']}", headers=registrar)).json()
    assert (full["personal_data"], full["disability"]) == ("full", True)


async def test_a_correction_changes_both_and_erasure_keeps_only_the_group(client, api_key_factory, session_factory):
    registrar = await api_key_factory("registrar")
    created = (await client.post("/v1/beneficiaries", json=person_body(), headers=registrar)).json()
    url = f"/v1/beneficiaries/{created['id']}"
    corrected = await client.patch(url, json={"population_type": "returnee", "disability": False}, headers=registrar)
    assert corrected.status_code == 200, corrected.text
    assert (corrected.json()["population_type"], corrected.json()["disability"]) == ("returnee", False)
    assert corrected.json()["phone"] == created["phone"]  # the rest stays
    row, personal = await stored(session_factory, created["id"])
    assert (row.population_type, personal.disability) == ("returnee", False)
    cleared = (await client.patch(url, json={"disability": None}, headers=registrar)).json()
    assert cleared["disability"] is None
    problem = assert_problem(await client.patch(url, json={"population_type": None}, headers=registrar), 422)
    assert problem["errors"] == [{"field": "population_type", "message": "must not be null"}]
    await client.patch(url, json={"disability": True}, headers=registrar)

    erased = await client.post(f"{url}/erasure", json={"reason": "asked"}, headers=await api_key_factory("admin"))
    assert erased.status_code == 200, erased.text
    assert (erased.json()["population_type"], erased.json()["disability"]) == ("returnee", None)
    row, personal = await stored(session_factory, created["id"])
    assert (row.status, row.population_type, personal) == ("erased", "returnee", None)


async def test_imports_read_both_columns_and_the_template_offers_them(
    client, api_key_factory, session_factory, settings
):
    registrar = await api_key_factory("registrar")
    template = await client.get("/v1/beneficiaries/imports/template", headers=registrar)
    header, example = csv.reader(io.StringIO(template.content.decode("utf-8-sig")))
    assert header[-2:] == ["population_type", "disability"]
    assert (
        dict(zip(header, example, strict=True)).items()
        >= {"population_type": "in_destination", "disability": "no"}.items()
    )

    rows = [
        IMPORT_ROW | {"population_type": "In transit", "disability": "Sí"},
        IMPORT_ROW | {"given_names": "Berta", "date_of_birth": "1971-02-03", "population_type": "host-community",
                      "disability": "no"},
        IMPORT_ROW | {"given_names": "Celia", "date_of_birth": "1962-04-05"},  # both empty: the defaults
        IMPORT_ROW | {"given_names": "Dora", "date_of_birth": "1999-09-09", "population_type": "nomad"},
        IMPORT_ROW | {"given_names": "Elsa", "date_of_birth": "1988-08-08", "disability": "maybe"},
    ]  # fmt: skip
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=TEMPLATE_COLUMNS, delimiter=";")
    writer.writeheader()
    writer.writerows(rows)
    files = {"file": ("people.csv", out.getvalue().encode(), "text/csv")}
    accepted = (await client.post("/v1/beneficiaries/imports", files=files, headers=registrar)).json()
    await run_jobs(session_factory, settings)
    report = (await client.get(f"/v1/beneficiaries/imports/{accepted['id']}", headers=registrar)).json()
    outcomes = {r["row_number"]: r for r in report["rows"]["items"]}
    assert {n: r["outcome"] for n, r in outcomes.items()} == {
        2: "created",
        3: "created",
        4: "created",
        5: "invalid",
        6: "invalid",
    }
    assert [e["field"] for e in outcomes[5]["errors"]] == ["population_type"]
    assert [e["field"] for e in outcomes[6]["errors"]] == ["disability"]
    assert "maybe" not in str(outcomes[6]["errors"])  # errors never quote a cell
    people = {}
    for number in (2, 3, 4):
        shown = (await client.get(f"/v1/beneficiaries/{outcomes[number]['beneficiary_id']}", headers=registrar)).json()
        people[number] = (shown["population_type"], shown["disability"])
    assert people == {2: ("in_transit", True), 3: ("host_community", False), 4: ("in_destination", None)}
