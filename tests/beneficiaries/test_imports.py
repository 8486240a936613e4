from __future__ import annotations

import asyncio
import codecs
import csv
import io
import random
import string
import time
import zipfile
from datetime import date, timedelta
from types import SimpleNamespace

import openpyxl
import pytest
from sqlalchemy import text

from cbi_service.beneficiaries import imports
from cbi_service.beneficiaries.imports import TEMPLATE_COLUMNS
from cbi_service.jobs.worker import Worker
from cbi_service.kit.tabular import TableLimits
from cbi_service.kit.workbook import WorkbookRefused, check_workbook
from tests.support import assert_problem, run_jobs

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
        sheet.append([row.get(c, "") for c in TEMPLATE_COLUMNS])
    buffer = io.BytesIO()
    workbook.save(buffer)
    files = {"file": ("people.xlsx", buffer.getvalue(), "application/octet-stream")}
    accepted = (await client.post("/v1/beneficiaries/imports", files=files, headers=registrar)).json()
    await run_jobs(session_factory, settings)
    report = (await client.get(f"/v1/beneficiaries/imports/{accepted['id']}", headers=registrar)).json()
    assert report["status"] == "completed"
    assert report["counts"] == {"created": 1, "duplicate": 1}


async def test_a_csv_without_required_columns_is_refused_at_upload(client, api_key_factory, session_factory):
    registrar = await api_key_factory("registrar")
    files = {"file": ("bad.csv", b"name;age\nAna;3\n", "text/csv")}
    problem = assert_problem(await client.post("/v1/beneficiaries/imports", files=files, headers=registrar), 422)
    (error,) = problem["errors"]
    assert error["field"] == "file"
    assert error["message"].startswith("missing columns: consent_date, consent_given, consent_purpose, country")
    assert "semicolon" in error["message"]
    async with session_factory() as session:
        stored = (await session.execute(text("SELECT count(*) FROM beneficiary_imports"))).scalar_one()
    assert stored == 0


async def test_template_and_unsupported_files(client, api_key_factory, session_factory, settings):
    registrar = await api_key_factory("registrar")
    template = await client.get("/v1/beneficiaries/imports/template", headers=registrar)
    assert template.status_code == 200
    assert template.headers["content-type"].startswith("text/csv")
    assert template.content.startswith(codecs.BOM_UTF8)  # Excel reads the example's accents right
    header, example = csv.reader(io.StringIO(template.content.decode("utf-8-sig")))
    assert header == list(TEMPLATE_COLUMNS)
    assert dict(zip(header, example, strict=True))["given_names"] == "María José"
    # The template as it is downloaded imports: its example is a valid row.
    files = {"file": ("template.csv", template.content, "text/csv")}
    accepted = await client.post("/v1/beneficiaries/imports", files=files, headers=registrar)
    assert accepted.status_code == 202, accepted.text
    await run_jobs(session_factory, settings)
    report = (await client.get(f"/v1/beneficiaries/imports/{accepted.json()['id']}", headers=registrar)).json()
    assert report["counts"] == {"created": 1}
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
    # The database refusing every chunk's rows (a constraint they all break): not the file's fault.
    async with session_factory.begin() as session:
        await session.execute(
            text("ALTER TABLE beneficiary_import_rows ADD CONSTRAINT refuses_every_row CHECK (row_number < 0)")
        )
    registrar = await api_key_factory("registrar")
    accepted = await client.post(
        "/v1/beneficiaries/imports", files={"file": ("a.csv", csv_bytes([ROW]), "text/csv")}, headers=registrar
    )
    url = f"/v1/beneficiaries/imports/{accepted.json()['id']}"
    for _ in range(imports.MAX_ATTEMPTS):
        await run_jobs(session_factory, settings)
        if (await client.get(url, headers=registrar)).json()["status"] == "failed":
            break
        async with session_factory.begin() as session:  # skip the retry back-off
            await session.execute(text("UPDATE jobs SET run_at = now() WHERE status <> 'failed'"))
    report = (await client.get(url, headers=registrar)).json()
    assert report["status"] == "failed"
    assert report["rows_done"] == 0
    async with session_factory() as session:
        attempts = await session.execute(text("SELECT attempts FROM jobs WHERE kind = 'beneficiaries.import'"))
        assert attempts.scalar_one() == imports.MAX_ATTEMPTS


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
            "date_of_birth": (date(1950, 1, 1) + timedelta(days=17 * i % 27_000)).isoformat(),
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


MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
OFFICE = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
SHEET_XML = (
    f'<worksheet xmlns="{MAIN}"><sheetData>'
    + '<row r="1">'
    + "".join(f'<c t="inlineStr"><is><t>{c}</t></is></c>' for c in TEMPLATE_COLUMNS)
    + '</row><row r="2">'
    + "".join('<c t="s"><v>0</v></c>' if i == 0 else f'<c t="inlineStr"><is><t>{v}</t></is></c>'
              for i, v in enumerate(ROW.values()))
    + "</row></sheetData></worksheet>"
)  # fmt: skip


def shared_strings_workbook(path, write_strings) -> None:
    """A workbook as Excel writes one, the first cell of its data row from the shared strings, which
    `write_strings(part)` writes (streamed, so a bomb costs the test no memory)."""
    parts = {
        "[Content_Types].xml": (
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            '<Override PartName="/xl/sharedStrings.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
            "</Types>"
        ),
        "_rels/.rels": (
            f'<Relationships xmlns="{RELS}"><Relationship Id="r1" Target="xl/workbook.xml" '
            f'Type="{OFFICE}/officeDocument"/></Relationships>'
        ),
        "xl/workbook.xml": (
            f'<workbook xmlns="{MAIN}" xmlns:r="{OFFICE}"><sheets>'
            '<sheet name="people" sheetId="1" r:id="r1"/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            f'<Relationships xmlns="{RELS}">'
            f'<Relationship Id="r1" Target="worksheets/sheet1.xml" Type="{OFFICE}/worksheet"/>'
            f'<Relationship Id="r2" Target="sharedStrings.xml" Type="{OFFICE}/sharedStrings"/>'
            "</Relationships>"
        ),
        "xl/worksheets/sheet1.xml": SHEET_XML,
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in parts.items():
            archive.writestr(name, content)
        with archive.open("xl/sharedStrings.xml", "w", force_zip64=True) as part:
            part.write(f'<sst xmlns="{MAIN}"><si><t>'.encode())
            write_strings(part)
            part.write(b"</t></si></sst>")


def shared_strings_bomb(path, mib: int) -> None:
    """One shared string of `mib` MiB of "A": a few hundred KiB on disk."""
    piece = b"A" * (1 << 20)
    shared_strings_workbook(path, lambda part: [part.write(piece) for _ in range(mib)])


async def test_a_workbook_with_shared_strings_imports(client, api_key_factory, session_factory, settings, tmp_path):
    registrar = await api_key_factory("registrar")
    path = tmp_path / "people.xlsx"
    shared_strings_workbook(path, lambda part: part.write(ROW["given_names"].encode()))
    files = {"file": ("people.xlsx", path.read_bytes(), "application/octet-stream")}
    accepted = (await client.post("/v1/beneficiaries/imports", files=files, headers=registrar)).json()
    await run_jobs(session_factory, settings)
    report = (await client.get(f"/v1/beneficiaries/imports/{accepted['id']}", headers=registrar)).json()
    assert (report["status"], report["counts"]) == ("completed", {"created": 1}), report


async def test_an_xlsx_bomb_is_refused_at_upload(client, api_key_factory, session_factory, tmp_path):
    registrar = await api_key_factory("registrar")
    path = tmp_path / "bomb.xlsx"
    shared_strings_bomb(path, 256)
    assert path.stat().st_size < 1 << 20
    files = {"file": ("people.xlsx", path.read_bytes(), "application/octet-stream")}
    problem = assert_problem(await client.post("/v1/beneficiaries/imports", files=files, headers=registrar), 422)
    assert "xl/sharedStrings.xml unpacks to more than" in problem["errors"][0]["message"]
    async with session_factory() as session:
        assert (await session.execute(text("SELECT count(*) FROM beneficiary_imports"))).scalar_one() == 0


def test_a_bomb_is_refused_before_its_string_is_unpacked(tmp_path, monkeypatch, settings):
    path = tmp_path / "bomb.xlsx"
    shared_strings_bomb(path, 256)
    unpacked = 0
    read = zipfile.ZipExtFile.read

    def counting(self, n=-1):
        nonlocal unpacked
        data = read(self, n)
        unpacked += len(data)
        return data

    monkeypatch.setattr(zipfile.ZipExtFile, "read", counting)
    with pytest.raises(WorkbookRefused, match="unpacks to more than"):
        check_workbook(path, TableLimits.of(settings).workbook)
    assert unpacked < 1 << 20


async def test_a_cell_too_long_to_hold_fails_the_import_before_openpyxl_reads_it(
    client, api_key_factory, session_factory, settings, tmp_path
):
    registrar = await api_key_factory("registrar")
    huge = "".join(random.Random(7).choices(string.ascii_letters, k=300_000)).encode()  # passes the ratio check
    path = tmp_path / "people.xlsx"
    shared_strings_workbook(path, lambda part: part.write(huge))
    files = {"file": ("people.xlsx", path.read_bytes(), "application/octet-stream")}
    accepted = await client.post("/v1/beneficiaries/imports", files=files, headers=registrar)
    assert accepted.status_code == 202, accepted.text
    await run_jobs(session_factory, settings)
    report = (await client.get(f"/v1/beneficiaries/imports/{accepted.json()['id']}", headers=registrar)).json()
    assert (report["status"], report["counts"]) == ("failed", {})
    assert "xl/sharedStrings.xml holds a cell or tag of more than 65536 bytes" in report["error"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (csv_bytes([ROW | {"admin1": "x" * 5_000}]), "line 2 has a field longer than 4096 characters"),
        (csv_bytes([ROW | {"external_ref": f"R-{i}"} for i in range(5)]), "the file has more than 3 rows"),
    ],
)
async def test_a_csv_over_the_limits_fails_the_import(
    client, api_key_factory, session_factory, settings, content, reason
):
    registrar = await api_key_factory("registrar")
    files = {"file": ("people.csv", content, "text/csv")}
    accepted = (await client.post("/v1/beneficiaries/imports", files=files, headers=registrar)).json()
    await run_jobs(session_factory, settings.model_copy(update={"import_max_rows": 3}))
    report = (await client.get(f"/v1/beneficiaries/imports/{accepted['id']}", headers=registrar)).json()
    assert (report["status"], report["error"], report["counts"]) == ("failed", reason, {})


def letters(number: int) -> str:
    """A made-up name per number (names hold no digits): 0 → "ba", 1 → "be", ..."""
    syllables = [c + v for c in "bcdfglmnprstv" for v in "aeiou"]
    word = ""
    while True:
        number, rest = divmod(number, len(syllables))
        word += syllables[rest]
        if not number:
            return word


async def test_a_header_over_the_limits_is_refused_at_upload(client, api_key_factory):
    registrar = await api_key_factory("registrar")
    files = {"file": ("people.csv", b"given_names," + b"a" * 300_000, "text/csv")}
    problem = assert_problem(await client.post("/v1/beneficiaries/imports", files=files, headers=registrar), 422)
    assert problem["errors"] == [{"field": "file", "message": "line 1 is longer than 65536 characters"}]


async def test_a_stopped_worker_hands_the_import_back_and_the_next_one_finishes_it(
    client, api_key_factory, session_factory, settings
):
    registrar = await api_key_factory("registrar")
    people = [
        ROW | {"given_names": letters(i), "family_names": letters(i * 7 + 3),
               "date_of_birth": (date(1950, 1, 1) + timedelta(days=17 * i % 27_000)).isoformat(),
               "document_number": f"V-{10_000_000 + i * 7919}", "phone": "", "external_ref": f"R-{i}"}
        for i in range(12 * imports.CHUNK_ROWS)
    ]  # fmt: skip
    files = {"file": ("many.csv", csv_bytes(people), "text/csv")}
    accepted = (await client.post("/v1/beneficiaries/imports", files=files, headers=registrar)).json()
    url = f"/v1/beneficiaries/imports/{accepted['id']}"

    stop = asyncio.Event()
    running = asyncio.create_task(Worker(session_factory, SimpleNamespace(settings=settings)).run(stop))
    while (await client.get(url, headers=registrar)).json()["rows_done"] == 0:
        await asyncio.sleep(0.05)
    asked = time.monotonic()
    stop.set()
    await asyncio.wait_for(running, timeout=30)
    assert time.monotonic() - asked < 5
    stopped = (await client.get(url, headers=registrar)).json()
    assert stopped["status"] == "running"
    assert 0 < stopped["rows_done"] < len(people)
    async with session_factory() as session:
        job = (await session.execute(text("SELECT status, locked_by, attempts FROM jobs WHERE kind = :k"),
                                     {"k": imports.JOB_KIND})).one()  # fmt: skip
    assert tuple(job) == ("queued", None, 0)

    await run_jobs(session_factory, settings)
    report = (await client.get(url, headers=registrar)).json()
    assert (report["status"], report["rows_done"], sum(report["counts"].values())) == (
        "completed", len(people), len(people)
    )  # fmt: skip
    async with session_factory() as session:
        counted = text("SELECT count(*), count(DISTINCT row_number) FROM beneficiary_import_rows")
        rows = (await session.execute(counted)).one()
        people_stored = (await session.execute(text("SELECT count(*) FROM beneficiaries"))).scalar_one()
    assert tuple(rows) == (len(people), len(people))
    assert people_stored == len(people) - report["counts"].get("duplicate", 0)
