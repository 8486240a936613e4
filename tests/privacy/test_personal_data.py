"""§13: nothing of the people in clear at rest, erasure beyond recovery with the books unchanged, access to
everything held about a person, retention."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from cbi_service.beneficiaries.imports import TEMPLATE_COLUMNS
from cbi_service.beneficiaries.personal import open_personal
from cbi_service.beneficiaries.repository import chunk_aad
from cbi_service.exports.verify import verify_file
from cbi_service.kit import crypto
from cbi_service.kit.idempotency import response_aad
from cbi_service.privacy.service import erase_expired
from tests.reconciliation.support import enrol, funded_programme, issue, released_batch
from tests.support import assert_problem, make_actors, run_jobs

# People with values found nowhere else, so a search of the database for them means something.
YARITZA = {
    "given_names": "Yaritza Milagros", "family_names": "Querales Bracamonte", "date_of_birth": "1988-07-21",
    "sex": "female", "nationality": "VE", "phone": "0414-731 92 68",
    "documents": [{"type": "national_id", "number": "V-19.873.654", "issuing_country": "VE"}],
    "location": {"country": "CO", "admin1": "Norte de Santander"}, "household_size": 3, "external_ref": "ZQX-4417",
    "consent": {"given": True, "date": "2026-09-01", "purpose": "cash assistance"},
}  # fmt: skip
WILMER = YARITZA | {
    "given_names": "Wilmer Eduardo", "family_names": "Zambrano Tovar", "date_of_birth": "1979-02-03", "sex": "male",
    "phone": "0416-208 55 13", "external_ref": "ZQX-8802",
    "documents": [{"type": "passport", "number": "P084417329", "issuing_country": "VE"}],
}  # fmt: skip
IMPORTED = {
    "given_names": "Dubraska", "family_names": "Arrieche Colmenares", "date_of_birth": "14/05/1996", "sex": "female",
    "nationality": "VE", "document_type": "national_id", "document_number": "22.748.391", "document_country": "VE",
    "phone": "0424-615 70 44", "country": "CO", "admin1": "Arauca", "admin2": "", "household_size": "2",
    "external_ref": "ZQX-5530", "consent_given": "sí", "consent_date": "01/11/2026", "consent_purpose": "efectivo",
}  # fmt: skip
CLEAR = {
    "Yaritza": ["Yaritza", "Querales", "Bracamonte", "19873654", "19.873.654", "7319268", "ZQX-4417", "1988-07-21"],
    "Wilmer": ["Wilmer", "Zambrano", "Tovar", "P084417329", "2085513", "ZQX-8802", "1979-02-03"],
    "Dubraska": ["Dubraska", "Arrieche", "Colmenares", "22748391", "22.748.391", "6157044", "ZQX-5530", "1996-05-14"],
}


def csv_of(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=TEMPLATE_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


async def every_table_as_text(session_factory) -> str:
    async with session_factory() as session:
        tables = (
            await session.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"))
        ).scalars()
        parts = []
        for table in list(tables):
            query = text(f"SELECT coalesce(string_agg(t::text, chr(10)), '') FROM \"{table}\" AS t")
            parts.append(f"{table}: {(await session.execute(query)).scalar_one()}")
    return "\n".join(parts)


async def everything_that_opens(session_factory) -> str:
    """Every sealed value in the database that a key still stored opens, in clear."""
    opened = []
    async with session_factory() as session:
        ring = await crypto.keyring(session)
        people = (await session.execute(text("SELECT id, key_version, data_key, personal FROM beneficiaries"))).all()
        await ring.require(session, {p.key_version for p in people})
        for p in people:
            if p.personal is not None:
                opened.append(str(open_personal(ring, p.id, p.key_version, p.data_key, p.personal)))
        responses = (await session.execute(text("SELECT * FROM idempotency_keys"))).all()
        for r in responses:
            opened.append(ring.open(r.key_version, r.response_sealed, response_aad(r.principal_id, r.key)).decode())
        for c in (await session.execute(text("SELECT * FROM beneficiary_import_chunks"))).all():
            opened.append(ring.open(c.key_version, c.data, chunk_aad(c.import_id, c.seq)).decode())
    return "\n".join(opened)


async def books(client, staff, period):
    trial = (await client.get("/v1/ledger/trial-balance", headers=staff.auditor)).json()
    reached = (await client.get("/v1/reports/people-reached", params=period, headers=staff.auditor)).json()
    export = (await client.get("/v1/ledger/export", headers=staff.auditor)).content
    return trial, reached, export


async def test_nothing_of_the_people_is_stored_in_clear_and_nothing_of_the_erased_survives(
    client, api_key_factory, session_factory, settings, tmp_path
):
    staff = await make_actors(api_key_factory)
    admin = await api_key_factory("admin")
    yaritza = await client.post("/v1/beneficiaries", json=YARITZA, headers={**staff.registrar, "Idempotency-Key": "y"})
    assert yaritza.status_code == 201, yaritza.text
    wilmer = await client.post("/v1/beneficiaries", json=WILMER, headers={**staff.registrar, "Idempotency-Key": "w"})
    assert wilmer.status_code == 201, wilmer.text
    yaritza_id, wilmer_id = yaritza.json()["id"], wilmer.json()["id"]
    corrected = await client.patch(
        f"/v1/beneficiaries/{wilmer_id}", json={"phone": "0416-208 55 13", "household_size": 4}, headers=staff.registrar
    )
    assert corrected.status_code == 200, corrected.text
    upload = await client.post(
        "/v1/beneficiaries/imports",
        files={"file": ("people.csv", csv_of([IMPORTED]), "text/csv")},
        headers=staff.registrar,
    )
    assert upload.status_code == 202, upload.text
    async with session_factory() as session:  # the file waiting for its job is sealed too
        waiting = (await session.execute(text("SELECT data FROM beneficiary_import_chunks"))).scalars().all()
    assert waiting
    assert all(b"Dubraska" not in bytes(d) for d in waiting)
    await run_jobs(session_factory, settings)
    check = await client.post("/v1/dedup/check", json=YARITZA, headers=staff.registrar)
    assert check.json()["status"] == "duplicate"
    programme = await funded_programme(client, staff, session_factory)
    await enrol(client, staff, programme, [yaritza_id, wilmer_id])
    entitlements = await released_batch(client, staff, programme, [yaritza_id, wilmer_id], cycle="2026-11")
    for entitlement in entitlements.values():
        await issue(session_factory, entitlement)

    erased = await client.post(
        f"/v1/beneficiaries/{yaritza_id}/erasure", json={"reason": "the person asked"}, headers=admin
    )
    assert erased.status_code == 200, erased.text
    assert erased.json()["status"] == "erased"
    assert erased.json()["given_names"] is None

    dump = await every_table_as_text(session_factory)
    assert "Norte de Santander" in dump  # what is not personal is there to be seen
    for person, values in CLEAR.items():
        for value in values:
            assert value not in dump, (person, value)
    opened = await everything_that_opens(session_factory)
    assert "Wilmer" in opened  # the check can see what it looks for
    for value in CLEAR["Yaritza"]:
        assert value not in opened
    async with session_factory() as session:
        row = (await session.execute(text("SELECT * FROM beneficiaries WHERE id = :i"), {"i": yaritza_id})).one()
        keys = (
            await session.execute(text("SELECT count(*) FROM dedup_keys WHERE beneficiary_id = :i"), {"i": yaritza_id})
        ).scalar_one()
    assert (row.personal, row.profile, row.data_key, row.external_ref_index) == (None, None, None, None)
    assert (row.sex, row.birth_year, row.location_admin1) == ("female", 1988, "Norte de Santander")
    assert keys == 0
    # She is no longer found: registering her again is a new person.
    again = await client.post("/v1/dedup/check", json=YARITZA, headers=staff.registrar)
    assert again.json()["status"] == "unique"


async def test_erasure_changes_neither_the_books_nor_the_counts(client, api_key_factory, session_factory, tmp_path):
    staff = await make_actors(api_key_factory)
    admin = await api_key_factory("admin")
    person = (await client.post("/v1/beneficiaries", json=YARITZA, headers=staff.registrar)).json()["id"]
    programme = await funded_programme(client, staff, session_factory)
    await enrol(client, staff, programme, [person])
    (entitlement,) = (await released_batch(client, staff, programme, [person], cycle="2026-11")).values()
    now = datetime.now(UTC)
    await issue(session_factory, entitlement, now)
    period = {"from": (now - timedelta(days=1)).date().isoformat(), "to": (now + timedelta(days=1)).date().isoformat()}
    before_entitlement = (await client.get(f"/v1/entitlements/{entitlement}", headers=staff.auditor)).json()
    before = await books(client, staff, period)

    erased = await client.post(f"/v1/beneficiaries/{person}/erasure", json={"reason": "asked"}, headers=admin)
    assert erased.status_code == 200, erased.text
    after = await books(client, staff, period)
    assert after[0] == before[0]
    assert after[1]["people_reached"] == before[1]["people_reached"] == 1
    assert after[1]["rows"] == before[1]["rows"]
    assert after[2] == before[2]
    export = tmp_path / "ledger.csv"
    export.write_bytes(after[2])
    assert verify_file(export).ok
    assert (await client.get(f"/v1/entitlements/{entitlement}", headers=staff.auditor)).json() == before_entitlement
    trail = (await client.get("/v1/audit-events", params={"resource_id": person}, headers=staff.auditor)).json()
    assert "beneficiary.erased" in [e["action"] for e in trail["items"]]
    # Erasing again changes nothing and is not an error.
    again = await client.post(f"/v1/beneficiaries/{person}/erasure", json={"reason": "asked"}, headers=admin)
    assert again.status_code == 200
    assert again.json() == erased.json()


async def test_erasure_is_refused_while_money_can_still_move(client, api_key_factory, session_factory):
    staff = await make_actors(api_key_factory)
    admin = await api_key_factory("admin")
    person = (await client.post("/v1/beneficiaries", json=YARITZA, headers=staff.registrar)).json()["id"]
    programme = await funded_programme(client, staff, session_factory)
    await enrol(client, staff, programme, [person])
    await released_batch(client, staff, programme, [person], cycle="2026-11")  # pending, not yet issued
    refused = await client.post(f"/v1/beneficiaries/{person}/erasure", json={"reason": "asked"}, headers=admin)
    assert_problem(refused, 409)
    shown = await client.get(f"/v1/beneficiaries/{person}", headers=admin)
    assert shown.json()["given_names"] == "Yaritza Milagros"


@pytest.mark.parametrize("role", ["registrar", "programme_officer", "approver", "finance", "auditor"])
async def test_only_an_admin_erases(client, api_key_factory, role):
    registrar = await api_key_factory("registrar")
    person = (await client.post("/v1/beneficiaries", json=YARITZA, headers=registrar)).json()["id"]
    response = await client.post(
        f"/v1/beneficiaries/{person}/erasure", json={"reason": "asked"}, headers=await api_key_factory(role)
    )
    assert_problem(response, 403)
    assert_problem(await client.post(f"/v1/beneficiaries/{person}/erasure", json={"reason": "asked"}), 401)
    assert_problem(
        await client.post(f"/v1/beneficiaries/{uuid.uuid4()}/erasure", json={}, headers=await api_key_factory("admin")),
        422,
    )


async def test_a_person_can_have_everything_held_about_them(client, api_key_factory, session_factory):
    staff = await make_actors(api_key_factory)
    person = (await client.post("/v1/beneficiaries", json=YARITZA, headers=staff.registrar)).json()["id"]
    await client.patch(f"/v1/beneficiaries/{person}", json={"household_size": 5}, headers=staff.registrar)
    programme = await funded_programme(client, staff, session_factory)
    await enrol(client, staff, programme, [person])
    (entitlement,) = (await released_batch(client, staff, programme, [person], cycle="2026-11")).values()

    for role in ("admin", "registrar"):
        response = await client.get(f"/v1/beneficiaries/{person}/personal-data", headers=await api_key_factory(role))
        assert response.status_code == 200, response.text
    held = response.json()
    assert held["record"]["given_names"] == "Yaritza Milagros"
    assert held["record"]["consent"]["purpose"] == "cash assistance"
    assert [e["programme_id"] for e in held["enrolments"]] == [programme]
    assert [e["id"] for e in held["entitlements"]] == [entitlement]
    actions = [e["action"] for e in held["audit_events"]]
    assert [a for a in actions if a != "beneficiary.personal_data_viewed"] == [
        "beneficiary.registered",
        "beneficiary.corrected",
    ]
    assert "beneficiary.personal_data_viewed" in actions  # the registrar saw her at registration
    for role in ("programme_officer", "approver", "finance", "auditor"):
        refused = await client.get(f"/v1/beneficiaries/{person}/personal-data", headers=await api_key_factory(role))
        assert_problem(refused, 403)
    assert_problem(await client.get(f"/v1/beneficiaries/{person}/personal-data"), 401)
    missing = await client.get(f"/v1/beneficiaries/{uuid.uuid4()}/personal-data", headers=staff.registrar)
    assert_problem(missing, 404)


async def test_retention_erases_only_people_inactive_that_long_with_nothing_to_be_paid(
    client, api_key_factory, session_factory
):
    staff = await make_actors(api_key_factory)
    idle = (await client.post("/v1/beneficiaries", json=YARITZA, headers=staff.registrar)).json()["id"]
    waiting = (await client.post("/v1/beneficiaries", json=WILMER, headers=staff.registrar)).json()["id"]
    programme = await funded_programme(client, staff, session_factory)
    await enrol(client, staff, programme, [waiting])
    await released_batch(client, staff, programme, [waiting], cycle="2026-11")  # pending: can still move

    async with session_factory.begin() as session:
        assert await erase_expired(session, 30) == 0  # nobody is 30 days idle yet
    later = datetime.now(UTC) + timedelta(days=31)
    async with session_factory.begin() as session:
        assert await erase_expired(session, 30, now=later) == 1
    admin = await api_key_factory("admin")
    assert (await client.get(f"/v1/beneficiaries/{idle}", headers=admin)).json()["status"] == "erased"
    assert (await client.get(f"/v1/beneficiaries/{waiting}", headers=admin)).json()["status"] == "active"
    trail = (await client.get("/v1/audit-events", params={"resource_id": idle}, headers=admin)).json()["items"]
    (event,) = [e for e in trail if e["action"] == "beneficiary.erased"]
    assert event["actor_id"] is None
    assert "retention" in event["after"]["reason"]
