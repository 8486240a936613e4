"""Import files as people save them: encodings, separators, day-first dates; the list of imports and the
row errors as CSV."""

from __future__ import annotations

import codecs
import csv
import io
from datetime import datetime

import openpyxl
import pytest
from sqlalchemy import text

from cbi_service.beneficiaries.imports import TEMPLATE_COLUMNS
from cbi_service.beneficiaries.repository import BeneficiaryRepository, ImportRepository
from cbi_service.kit.tabular import DATE_MESSAGE
from tests.support import assert_problem, run_jobs

# A woman without papers: only her names and birth date say who she is, so an import that garbled her
# accents would register her twice.
MARIA = {
    "given_names": "María José", "family_names": "Mejía Muñoz", "date_of_birth": "12/03/1990", "sex": "female",
    "nationality": "VE", "document_type": "", "document_number": "", "document_country": "", "phone": "",
    "country": "CO", "admin1": "Norte de Santander", "admin2": "Cúcuta", "household_size": "4",
    "external_ref": "CUC-1", "consent_given": "sí", "consent_date": "01/11/2026", "consent_purpose": "efectivo",
}  # fmt: skip
OTHER = MARIA | {"given_names": "Íñigo", "family_names": "Núñez Peña", "date_of_birth": "1/2/1985", "sex": "male",
                 "external_ref": "CUC-2"}  # fmt: skip


def table(rows: list[dict[str, str]], delimiter: str = ",") -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=TEMPLATE_COLUMNS, delimiter=delimiter, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


async def upload(client, headers, content: bytes, name: str = "people.csv"):
    return await client.post("/v1/beneficiaries/imports", files={"file": (name, content, "text/csv")}, headers=headers)


async def imported(client, headers, session_factory, settings, content: bytes, name: str = "people.csv"):
    accepted = await upload(client, headers, content, name)
    assert accepted.status_code == 202, accepted.text
    await run_jobs(session_factory, settings)
    report = (await client.get(f"/v1/beneficiaries/imports/{accepted.json()['id']}", headers=headers)).json()
    assert report["status"] == "completed", report
    return report


async def stored(session_factory, sql: str) -> list:
    async with session_factory() as session:
        return list((await session.execute(text(sql))).all())


ENCODINGS = {
    "utf-8": lambda s: s.encode("utf-8"),
    "utf-8 with BOM": lambda s: s.encode("utf-8-sig"),
    "utf-16 LE with BOM": lambda s: codecs.BOM_UTF16_LE + s.encode("utf-16-le"),
    "utf-16 BE with BOM": lambda s: codecs.BOM_UTF16_BE + s.encode("utf-16-be"),
    "windows-1252": lambda s: s.encode("cp1252"),
    "latin-1": lambda s: s.encode("latin-1"),
}


@pytest.mark.parametrize("delimiter", [",", ";", "\t"], ids=["comma", "semicolon", "tab"])
@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
async def test_a_file_reads_the_same_in_every_encoding_and_separator(
    client, api_key_factory, session_factory, settings, encoding, delimiter
):
    registrar = await api_key_factory("registrar")
    content = ENCODINGS[encoding](table([MARIA, OTHER], delimiter))
    accepted = await upload(client, registrar, content)
    assert accepted.status_code == 202, accepted.text
    # The upload is kept decoded, as UTF-8 (and sealed): what the job reads is what the upload was checked as.
    (chunk,) = await stored(session_factory, "SELECT import_id, seq, data FROM beneficiary_import_chunks")
    assert b"Mar" not in bytes(chunk.data)
    async with session_factory() as session:
        kept = await ImportRepository(session).chunk(chunk.import_id, chunk.seq)
    assert kept is not None
    assert kept.decode("utf-8") == table([MARIA, OTHER], delimiter)

    await run_jobs(session_factory, settings)
    report = (await client.get(f"/v1/beneficiaries/imports/{accepted.json()['id']}", headers=registrar)).json()
    assert report["counts"] == {"created": 2}, report
    people = (await client.get("/v1/beneficiaries", headers=registrar)).json()["items"]
    names = sorted((p["given_names"], p["family_names"], p["date_of_birth"], p["location"]["admin2"]) for p in people)
    assert names == [
        ("María José", "Mejía Muñoz", "1990-03-12", "Cúcuta"),
        ("Íñigo", "Núñez Peña", "1985-02-01", "Cúcuta"),
    ]  # fmt: skip
    assert {p["consent"]["date"] for p in people} == {"2026-11-01"}


async def test_the_same_woman_from_windows_1252_and_from_utf8_is_one_person(
    client, api_key_factory, session_factory, settings
):
    """Excel on Spanish Windows saves Windows-1252; another office saves UTF-8. Same woman, same record."""
    registrar = await api_key_factory("registrar")
    first = await imported(client, registrar, session_factory, settings, table([MARIA], ";").encode("cp1252"))
    (created,) = first["rows"]["items"]
    assert created["outcome"] == "created"
    again = MARIA | {"date_of_birth": "1990-03-12", "external_ref": "BOG-7"}
    second = await imported(client, registrar, session_factory, settings, table([again]).encode("utf-8"))
    (row,) = second["rows"]["items"]
    assert row["outcome"] == "duplicate", row
    assert row["matches"][0]["beneficiary_id"] == created["beneficiary_id"]
    async with session_factory() as session:
        (person,) = await BeneficiaryRepository(session).matchable_profiles(programme_id=None, after=None, limit=10)
    (shown,) = (await client.get("/v1/beneficiaries", headers=registrar)).json()["items"]
    assert (shown["given_names"], shown["family_names"]) == ("María José", "Mejía Muñoz")
    assert "\ufffd" not in str(person[1])


UNDECIDABLE = {
    # Mac Roman (Excel for Mac's plain CSV): read as Windows-1252, "María" would be "Mar‡a".
    "mac roman": table([MARIA]).encode("mac_roman"),
    # DOS code page 850: "Mar¡a Mej¡a Mu¤oz".
    "cp850": table([MARIA]).encode("cp850"),
    # A byte no text holds in Windows-1252 or UTF-8.
    "undefined byte": table([MARIA]).encode("cp1252").replace("í".encode("cp1252"), b"\x81"),
    # UTF-8 and Windows-1252 in one file: half of it garbled whichever way it is read.
    "mixed": table([MARIA]).encode("utf-8") + table([OTHER]).split("\r\n", 1)[1].encode("cp1252"),
    # Letters already lost by an earlier conversion.
    "replacement characters": table([MARIA]).replace("í", "\ufffd").encode("utf-8"),
    # UTF-16 without its byte-order mark.
    "utf-16 without BOM": table([MARIA]).encode("utf-16-le"),
    # Cyrillic Windows text read as Latin letters: "Ìàðèÿ".
    "cp1251": table(
        [MARIA | {"given_names": "Мария", "family_names": "Иванова", "admin2": "Кукута", "consent_given": "да"}]
    ).encode("cp1251"),
}


@pytest.mark.parametrize("name", sorted(UNDECIDABLE))
async def test_a_file_whose_encoding_cannot_be_told_apart_is_refused_and_nothing_stored(
    client, api_key_factory, session_factory, name
):
    registrar = await api_key_factory("registrar")
    problem = assert_problem(await upload(client, registrar, UNDECIDABLE[name]), 422)
    (error,) = problem["errors"]
    assert error["field"] == "file"
    assert "save it as" in error["message"] or "export the file again" in error["message"]
    assert error["message"] in problem["detail"]
    for needle in ("Mar", "Mej", "Иван", "CUC"):  # nothing of the file's content comes back
        assert needle not in problem["detail"]
    for table_name in ("beneficiary_imports", "beneficiary_import_chunks", "jobs", "beneficiaries"):
        ((count,),) = await stored(session_factory, f"SELECT count(*) FROM {table_name}")
        assert count == 0, table_name
    assert await stored(session_factory, "SELECT 1 FROM audit_events WHERE resource_type = 'beneficiary_import'") == []


async def test_dates_are_read_day_first_and_never_month_first(client, api_key_factory, session_factory, settings):
    registrar = await api_key_factory("registrar")
    rows = [
        MARIA | {"date_of_birth": "31/12/1990", "external_ref": "D-1"},
        OTHER | {"date_of_birth": "1985-2-1", "external_ref": "D-2"},
        MARIA | {"given_names": "Ana", "date_of_birth": "12/31/1990", "external_ref": "D-3"},  # month first
        MARIA | {"given_names": "Eva", "date_of_birth": "31/02/1990", "consent_date": "", "external_ref": "D-4"},
        MARIA | {"given_names": "Rut", "date_of_birth": "1990", "external_ref": "D-5"},
    ]
    report = await imported(client, registrar, session_factory, settings, table(rows).encode())
    outcomes = {r["row_number"]: r for r in report["rows"]["items"]}
    assert [outcomes[n]["outcome"] for n in (2, 3, 4, 5, 6)] == ["created", "created", "invalid", "invalid", "invalid"]
    assert outcomes[4]["errors"] == [{"field": "date_of_birth", "message": DATE_MESSAGE}]
    assert outcomes[5]["errors"] == [
        {"field": "date_of_birth", "message": DATE_MESSAGE},
        {"field": "consent_date", "message": "is required"},
    ]
    assert outcomes[6]["errors"] == [{"field": "date_of_birth", "message": DATE_MESSAGE}]
    people = (await client.get("/v1/beneficiaries", headers=registrar)).json()["items"]
    assert sorted(p["date_of_birth"] for p in people) == ["1985-02-01", "1990-12-31"]


async def test_a_workbook_reads_date_cells_and_day_first_text(client, api_key_factory, session_factory, settings):
    registrar = await api_key_factory("registrar")
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(list(TEMPLATE_COLUMNS))
    sheet.append([datetime(1990, 3, 12) if c == "date_of_birth" else MARIA.get(c, "") for c in TEMPLATE_COLUMNS])
    sheet.append([OTHER.get(c, "") for c in TEMPLATE_COLUMNS])  # dates as text, day first
    buffer = io.BytesIO()
    workbook.save(buffer)
    report = await imported(client, registrar, session_factory, settings, buffer.getvalue(), "people.xlsx")
    assert report["counts"] == {"created": 2}
    people = (await client.get("/v1/beneficiaries", headers=registrar)).json()["items"]
    assert sorted(p["date_of_birth"] for p in people) == ["1985-02-01", "1990-03-12"]


async def test_imports_are_listed_newest_first_in_pages(client, api_key_factory, session_factory, settings):
    registrar, auditor = await api_key_factory("registrar"), await api_key_factory("auditor")
    first = (await upload(client, registrar, table([MARIA]).encode(), "first.csv")).json()
    await run_jobs(session_factory, settings)
    second = (await upload(client, registrar, table([OTHER]).encode(), "second.csv")).json()
    third = (await upload(client, registrar, table([OTHER]).encode(), "third.csv")).json()

    page = (await client.get("/v1/beneficiaries/imports", params={"limit": 2}, headers=auditor)).json()
    assert [i["id"] for i in page["items"]] == [third["id"], second["id"]]
    assert page["items"][0] == page["items"][0] | {"filename": "third.csv", "file_format": "csv", "status": "queued"}
    assert "rows" not in page["items"][0]
    rest = (
        await client.get(
            "/v1/beneficiaries/imports", params={"limit": 2, "cursor": page["next_cursor"]}, headers=auditor
        )
    ).json()
    assert [i["id"] for i in rest["items"]] == [first["id"]]
    assert rest["next_cursor"] is None
    (done,) = rest["items"]
    assert (done["status"], done["rows_done"], done["counts"]) == ("completed", 1, {"created": 1})
    completed = await client.get("/v1/beneficiaries/imports", params={"status": "completed"}, headers=registrar)
    assert [i["id"] for i in completed.json()["items"]] == [first["id"]]
    assert_problem(await client.get("/v1/beneficiaries/imports", params={"status": "lost"}, headers=registrar), 422)


async def test_row_errors_download_as_csv_without_personal_data(client, api_key_factory, session_factory, settings):
    registrar = await api_key_factory("registrar")
    rows = [
        MARIA,
        MARIA | {"given_names": "Rosalba", "date_of_birth": "12/31/1990", "household_size": "cero",
                 "external_ref": "CUC-SECRETO"},
        MARIA | {"given_names": "Yurleidis", "document_type": "national_id", "document_number": "V-9",
                 "document_country": "VE", "phone": "12", "external_ref": "CUC-3"},
        MARIA | {"given_names": "Mariángela", "sex": "mujer", "consent_given": "no", "external_ref": "CUC-4"},
    ]  # fmt: skip
    content = table(rows).encode()
    accepted = (await upload(client, registrar, content)).json()
    url = f"/v1/beneficiaries/imports/{accepted['id']}/errors.csv"
    assert_problem(await client.get(url, headers=registrar), 409)  # not finished yet

    await run_jobs(session_factory, settings)
    response = await client.get(url, headers=await api_key_factory("auditor"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    lines = list(csv.reader(io.StringIO(response.text)))
    assert lines[0] == ["row_number", "field", "message"]
    assert sorted((n, f) for n, f, _ in lines[1:]) == [
        ("3", "date_of_birth"), ("3", "household_size"),
        ("4", "document_number"), ("4", "phone"),
        ("5", "consent_given"), ("5", "sex"),
    ]  # fmt: skip
    assert [m for n, f, m in lines[1:] if f == "date_of_birth"] == [DATE_MESSAGE]
    personal = ("given_names", "family_names", "date_of_birth", "document_number", "phone", "admin1", "admin2",
                "external_ref", "household_size")  # fmt: skip
    for row in rows[1:]:
        for column in personal:
            if len(row[column]) > 2:  # shorter ones (a phone "12") are in row numbers
                assert row[column].lower() not in response.text.lower(), column
    assert "mujer" not in response.text
    assert_problem(await client.get(f"/v1/beneficiaries/imports/{accepted['id'][:-4]}beef/errors.csv",
                                    headers=registrar), 404)  # fmt: skip


async def test_a_failed_import_serves_its_row_errors_too(client, api_key_factory, session_factory, settings):
    """A failed import is finished: the rows it reported before failing (here none) stand, with their errors."""
    registrar = await api_key_factory("registrar")
    rows = [MARIA | {"external_ref": f"R-{i}"} for i in range(5)]
    accepted = (await upload(client, registrar, table(rows).encode())).json()
    await run_jobs(session_factory, settings.model_copy(update={"import_max_rows": 3}))
    report = (await client.get(f"/v1/beneficiaries/imports/{accepted['id']}", headers=registrar)).json()
    assert (report["status"], report["error"]) == ("failed", "the file has more than 3 rows")
    response = await client.get(f"/v1/beneficiaries/imports/{accepted['id']}/errors.csv", headers=registrar)
    assert response.status_code == 200
    assert list(csv.reader(io.StringIO(response.text))) == [["row_number", "field", "message"]]
