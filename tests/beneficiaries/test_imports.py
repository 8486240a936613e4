from __future__ import annotations

import csv
import io

import openpyxl
from sqlalchemy import text

from cbi_service.beneficiaries import imports
from cbi_service.beneficiaries.imports import TEMPLATE_COLUMNS
from tests.helpers import assert_problem, run_jobs

ROW = {
    "given_names": "Ana Lucía", "family_names": "Pérez Gómez", "date_of_birth": "1985-06-20", "sex": "female",
    "nationality": "VE", "document_type": "national_id", "document_number": "V-9.876.543",
    "document_country": "VE", "phone": "0414 765 4321", "country": "CO", "admin1": "Arauca", "admin2": "Arauca",
    "household_size": "3", "external_ref": "ARA-1", "consent_given": "sí", "consent_date": "01/11/2026",
    "consent_purpose": "cash for rent",
}  # fmt: skip


def rows_for_file() -> list[dict[str, str]]:
    return [
        ROW,
        # the same person again, cédula written differently: an in-file duplicate
        ROW | {"given_names": "Ana Lucia", "document_number": "9876543", "phone": "", "external_ref": "ARA-2"},
        ROW | {"date_of_birth": "2099-01-01", "external_ref": "ARA-3"},  # future birth date
        ROW | {"consent_given": "no", "external_ref": "ARA-4"},  # no consent
        ROW | {"sex": "", "household_size": "zero", "external_ref": "ARA-5"},  # two bad fields
        {
            **ROW,
            "given_names": "Carlos",
            "family_names": "Mendoza",
            "sex": "male",
            "date_of_birth": "1979-12-01",
            "document_number": "",
            "document_type": "",
            "phone": "",
            "external_ref": "ARA-6",
        },
        # Carlos again with surnames dropped to one and accents changed: still one person
        {
            **ROW,
            "given_names": "CARLOS",
            "family_names": "Mendosa",
            "sex": "male",
            "date_of_birth": "1979-12-01",
            "document_number": "",
            "document_type": "",
            "phone": "",
            "external_ref": "ARA-7",
        },
    ]


def csv_bytes(rows: list[dict[str, str]], delimiter: str = ",") -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=TEMPLATE_COLUMNS, delimiter=delimiter)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


async def test_csv_import_reports_each_row_and_catches_in_file_duplicates(
    client, api_key_factory, session_factory, settings
):
    registrar = await api_key_factory("registrar")
    files = {"file": ("people.csv", csv_bytes(rows_for_file(), ";"), "text/csv")}
    accepted = await client.post("/v1/beneficiaries/imports", files=files, headers=registrar)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "queued"
    await run_jobs(session_factory, settings)

    report = (await client.get(f"/v1/beneficiaries/imports/{accepted.json()['id']}", headers=registrar)).json()
    assert report["status"] == "completed"
    assert (report["rows_total"], report["rows_done"]) == (7, 7)
    outcomes = {r["row_number"]: r for r in report["rows"]["items"]}
    assert {n: r["outcome"] for n, r in outcomes.items()} == {
        2: "created", 3: "duplicate", 4: "invalid", 5: "invalid", 6: "invalid", 7: "created", 8: "duplicate",
    }  # fmt: skip
    assert report["counts"] == {"created": 2, "duplicate": 2, "invalid": 3}
    assert outcomes[3]["matches"][0]["beneficiary_id"] == outcomes[2]["beneficiary_id"]
    assert outcomes[8]["matches"][0]["beneficiary_id"] == outcomes[7]["beneficiary_id"]
    assert outcomes[4]["errors"] == [{"field": "date_of_birth", "message": "must not be in the future"}]
    assert outcomes[5]["errors"][0]["field"] == "consent_given"
    assert {e["field"] for e in outcomes[6]["errors"]} == {"sex", "household_size"}

    invalid_only = await client.get(
        f"/v1/beneficiaries/imports/{accepted.json()['id']}", params={"outcome": "invalid", "limit": 2},
        headers=registrar,
    )  # fmt: skip
    page = invalid_only.json()["rows"]
    assert [r["row_number"] for r in page["items"]] == [4, 5]
    assert page["next_cursor"]
    created = (await client.get("/v1/beneficiaries", headers=registrar)).json()["items"]
    assert sorted(b["external_ref"] for b in created) == ["ARA-1", "ARA-6"]
    # Each registration is audited, written in bulk with its chunk, in the uploader's name.
    auditor = await api_key_factory("auditor")
    params = {"action": "beneficiary.registered"}
    events = (await client.get("/v1/audit-events", params=params, headers=auditor)).json()["items"]
    assert sorted(e["resource_id"] for e in events) == sorted(b["id"] for b in created)
    assert {e["after"]["import_id"] for e in events} == {accepted.json()["id"]}
    assert len({e["actor_id"] for e in events}) == 1


async def test_import_against_already_registered_people(client, api_key_factory, session_factory, settings):
    registrar = await api_key_factory("registrar")
    first = {"file": ("one.csv", csv_bytes([ROW]), "text/csv")}
    await client.post("/v1/beneficiaries/imports", files=first, headers=registrar)
    await run_jobs(session_factory, settings)
    second = {"file": ("two.csv", csv_bytes([ROW | {"family_names": "Gómez Pérez"}]), "text/csv")}
    accepted = (await client.post("/v1/beneficiaries/imports", files=second, headers=registrar)).json()
    await run_jobs(session_factory, settings)
    report = (await client.get(f"/v1/beneficiaries/imports/{accepted['id']}", headers=registrar)).json()
    assert report["counts"] == {"duplicate": 1}


async def test_xlsx_import(client, api_key_factory, session_factory, settings):
    registrar = await api_key_factory("registrar")
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(list(TEMPLATE_COLUMNS))
    for row in rows_for_file()[:2]:
        sheet.append([row[c] for c in TEMPLATE_COLUMNS])
    buffer = io.BytesIO()
    workbook.save(buffer)
    files = {"file": ("people.xlsx", buffer.getvalue(), "application/octet-stream")}
    accepted = (await client.post("/v1/beneficiaries/imports", files=files, headers=registrar)).json()
    await run_jobs(session_factory, settings)
    report = (await client.get(f"/v1/beneficiaries/imports/{accepted['id']}", headers=registrar)).json()
    assert report["status"] == "completed"
    assert report["counts"] == {"created": 1, "duplicate": 1}


async def test_file_without_required_columns_fails_the_import(client, api_key_factory, session_factory, settings):
    registrar = await api_key_factory("registrar")
    files = {"file": ("bad.csv", b"name,age\nAna,3\n", "text/csv")}
    accepted = (await client.post("/v1/beneficiaries/imports", files=files, headers=registrar)).json()
    await run_jobs(session_factory, settings)
    report = (await client.get(f"/v1/beneficiaries/imports/{accepted['id']}", headers=registrar)).json()
    assert report["status"] == "failed"
    assert "missing columns" in report["error"]


async def test_template_and_unsupported_files(client, api_key_factory):
    registrar = await api_key_factory("registrar")
    template = await client.get("/v1/beneficiaries/imports/template", headers=registrar)
    assert template.status_code == 200
    assert template.text.strip().split(",") == list(TEMPLATE_COLUMNS)
    files = {"file": ("photo.png", b"\x89PNG", "image/png")}
    assert_problem(await client.post("/v1/beneficiaries/imports", files=files, headers=registrar), 422)


async def test_idempotent_upload_replays_and_refuses_another_file(client, api_key_factory, session_factory, settings):
    registrar = await api_key_factory("registrar") | {"Idempotency-Key": "import-1"}
    content = csv_bytes([ROW])
    first = await client.post(
        "/v1/beneficiaries/imports", files={"file": ("a.csv", content, "text/csv")}, headers=registrar
    )
    again = await client.post(
        "/v1/beneficiaries/imports", files={"file": ("a.csv", content, "text/csv")}, headers=registrar
    )
    assert first.status_code == again.status_code == 202, again.text
    assert again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"

    other = csv_bytes([ROW | {"external_ref": "ARA-99"}])
    problem = assert_problem(
        await client.post("/v1/beneficiaries/imports", files={"file": ("a.csv", other, "text/csv")}, headers=registrar),
        422,
    )
    assert problem["errors"][0]["field"] == "Idempotency-Key"

    await run_jobs(session_factory, settings)
    report = (await client.get(f"/v1/beneficiaries/imports/{first.json()['id']}", headers=registrar)).json()
    assert report["counts"] == {"created": 1}
    async with session_factory() as session:
        imports = (await session.execute(text("SELECT count(*) FROM beneficiary_imports"))).scalar_one()
    assert imports == 1


async def test_a_value_postgres_cannot_store_fails_its_row_not_the_file(
    client, api_key_factory, session_factory, settings
):
    registrar = await api_key_factory("registrar")
    rows = [ROW | {"admin2": "Ara\x00uca"}, rows_for_file()[5]]
    accepted = await client.post(
        "/v1/beneficiaries/imports", files={"file": ("nul.csv", csv_bytes(rows), "text/csv")}, headers=registrar
    )
    await run_jobs(session_factory, settings)
    report = (await client.get(f"/v1/beneficiaries/imports/{accepted.json()['id']}", headers=registrar)).json()
    assert (report["status"], report["counts"]) == ("completed", {"invalid": 1, "created": 1})
    assert report["rows"]["items"][0]["errors"] == [{"field": "admin2", "message": "must not contain NUL characters"}]


async def test_a_damaged_workbook_fails_the_import(client, api_key_factory, session_factory, settings):
    registrar = await api_key_factory("registrar")
    files = {"file": ("people.xlsx", b"PK\x03\x04 not really a workbook", "application/octet-stream")}
    accepted = (await client.post("/v1/beneficiaries/imports", files=files, headers=registrar)).json()
    await run_jobs(session_factory, settings)
    report = (await client.get(f"/v1/beneficiaries/imports/{accepted['id']}", headers=registrar)).json()
    assert (report["status"], report["error"]) == ("failed", "not a readable XLSX workbook")


async def test_an_upload_over_the_limit_is_413(client, api_key_factory, monkeypatch):
    monkeypatch.setattr(imports, "MAX_UPLOAD_BYTES", 64)
    registrar = await api_key_factory("registrar")
    files = {"file": ("big.csv", csv_bytes([ROW]), "text/csv")}
    assert_problem(await client.post("/v1/beneficiaries/imports", files=files, headers=registrar), 413)
    idempotent = registrar | {"Idempotency-Key": "big-1"}
    assert_problem(await client.post("/v1/beneficiaries/imports", files=files, headers=idempotent), 413)


async def test_the_import_fails_once_its_retries_are_spent(client, api_key_factory, session_factory, settings):
    # A partner registry that cannot be read: registering without asking it could pay someone twice.
    unreachable = {"partner": {"adapter": "hashed_list", "path": "/nonexistent/partner.csv", "key": "k"}}
    settings = settings.model_copy(update={"registries": unreachable})
    registrar = await api_key_factory("registrar")
    accepted = await client.post(
        "/v1/beneficiaries/imports", files={"file": ("a.csv", csv_bytes([ROW]), "text/csv")}, headers=registrar
    )
    url = f"/v1/beneficiaries/imports/{accepted.json()['id']}"
    for _ in range(imports.MAX_ATTEMPTS):
        assert (await client.get(url, headers=registrar)).json()["status"] in {"queued", "running"}
        await run_jobs(session_factory, settings)
        async with session_factory.begin() as session:  # skip the retry back-off
            await session.execute(text("UPDATE jobs SET run_at = now() WHERE status <> 'failed'"))
    report = (await client.get(url, headers=registrar)).json()
    assert report["status"] == "failed"
    assert report["rows_done"] == 0


async def test_a_file_of_several_chunks_catches_duplicates_across_them(
    client, api_key_factory, session_factory, settings
):
    """Past one chunk, rows are validated in a separate process one chunk ahead of registration."""
    registrar = await api_key_factory("registrar")
    given = ["Ana", "Luis", "Carmen", "Jorge", "Rosa", "Pedro", "Elena", "Tomás", "Lucía", "Andrés"]
    family = ["Pérez Gómez", "Rojas Díaz", "Castro Ruiz", "Mora Silva", "Vega León", "Ortiz Paz"]
    people = [
        ROW | {
            "given_names": given[i % len(given)], "family_names": family[i // len(given) % len(family)],
            "date_of_birth": f"{1950 + i % 60}-{1 + i % 12:02d}-{1 + i % 28:02d}",
            "document_number": f"V-{20_000_000 + i * 7919}", "phone": "", "external_ref": f"ROW-{i}",
        }
        for i in range(imports.CHUNK_ROWS * 2 + 100)
    ]  # fmt: skip
    again = people[3] | {"document_number": people[3]["document_number"].replace("V-", ""), "external_ref": "AGAIN"}
    people[-1] = again
    accepted = await client.post(
        "/v1/beneficiaries/imports", files={"file": ("many.csv", csv_bytes(people), "text/csv")}, headers=registrar
    )
    await run_jobs(session_factory, settings)
    url = f"/v1/beneficiaries/imports/{accepted.json()['id']}"
    report = (await client.get(url, headers=registrar)).json()
    assert report["status"] == "completed"
    assert report["rows_done"] == report["rows_total"] == len(people)
    assert report["counts"] == {"created": len(people) - 1, "duplicate": 1}
    (duplicate,) = (await client.get(url, params={"outcome": "duplicate"}, headers=registrar)).json()["rows"]["items"]
    first = (await client.get(url, params={"limit": 4}, headers=registrar)).json()["rows"]["items"][3]
    assert duplicate["row_number"] == len(people) + 1
    assert duplicate["matches"][0]["beneficiary_id"] == first["beneficiary_id"]
