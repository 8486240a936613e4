"""`cbi-service import FILE`: the API's bulk import from the command line, under the registrar's own key."""

from __future__ import annotations

import csv
import io

import openpyxl
import pytest
from sqlalchemy import select

from cbi_service.audit.models import AuditEvent
from cbi_service.beneficiaries.imports import TEMPLATE_COLUMNS
from cbi_service.beneficiaries.models import Beneficiary, BeneficiaryImport
from tests.cli.support import ANSI, cli, cli_env, invoke, raw_key

PERSON = {
    "given_names": "Ana Lucía", "family_names": "Pérez Gómez", "date_of_birth": "1985-06-20", "sex": "female",
    "nationality": "VE", "document_type": "national_id", "document_number": "V-9.876.543",
    "document_country": "VE", "phone": "", "country": "CO", "admin1": "Arauca", "admin2": "Arauca",
    "household_size": "3", "external_ref": "ARA-1", "consent_given": "sí", "consent_date": "2026-11-01",
    "consent_purpose": "cash for rent",
}  # fmt: skip
ROWS = [
    PERSON,
    PERSON | {"given_names": "Carlos", "family_names": "Mendoza", "sex": "male", "date_of_birth": "1979-12-01",
              "document_number": "V-1.234.567", "external_ref": "ARA-2"},
    PERSON | {"given_names": "Ana Lucia", "document_number": "9876543", "external_ref": "ARA-3"},  # ARA-1 again
    PERSON | {"date_of_birth": "2099-01-01", "external_ref": "ARA-4"},  # born in the future
]  # fmt: skip


def _csv(rows: list[dict[str, str]], columns: tuple[str, ...] = TEMPLATE_COLUMNS) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _xlsx(rows: list[dict[str, str]]) -> bytes:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    sheet.append(list(TEMPLATE_COLUMNS))
    for row in rows:
        sheet.append([row.get(c, "") for c in TEMPLATE_COLUMNS])
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


async def _imports(session_factory) -> list[BeneficiaryImport]:
    async with session_factory() as session:
        return list((await session.execute(select(BeneficiaryImport))).scalars())


async def test_an_import_runs_to_its_end_and_prints_the_counts(
    tmp_path, database_url, api_key_factory, session_factory, client
):
    """The real process with stdout and stderr piped: the bar's last state on stderr, the counts on stdout,
    no colour codes; the import is the API's, audited in the registrar's name."""
    headers = await api_key_factory("registrar", name="registrar Ana")
    path = tmp_path / "people.csv"
    path.write_bytes(_csv(ROWS))

    result = cli("import", str(path), env=cli_env(DATABASE_URL=database_url, CBI_API_KEY=raw_key(headers)))

    assert result.returncode == 0, result.stderr
    (imp,) = await _imports(session_factory)
    assert result.stdout.splitlines() == [
        f"import {imp.id}: completed, 4 rows",
        "  created                        2",
        "  pending_adjudication           0",
        "  duplicate                      1",
        "  invalid                        1",
        f"rows refused, with their errors: GET /v1/beneficiaries/imports/{imp.id}/errors.csv",
    ]
    assert "importing people.csv" in result.stderr
    assert "4/4" in result.stderr
    assert ANSI not in result.stdout + result.stderr
    report = (await client.get(f"/v1/beneficiaries/imports/{imp.id}", headers=headers)).json()
    assert report["counts"] == {"created": 2, "duplicate": 1, "invalid": 1}
    assert [r["outcome"] for r in report["rows"]["items"]] == ["created", "created", "duplicate", "invalid"]
    async with session_factory() as session:
        queued = (
            await session.execute(select(AuditEvent).where(AuditEvent.action == "beneficiary_import.queued"))
        ).scalar_one()
        registered_by = set((await session.execute(select(Beneficiary.registered_by))).scalars())
    assert (queued.actor_name, queued.resource_id) == ("registrar Ana", str(imp.id))
    assert registered_by == {imp.created_by} == {queued.actor_id}


async def test_a_workbook_imports_too(tmp_path, database_url, api_key_factory, session_factory):
    path = tmp_path / "people.xlsx"
    path.write_bytes(_xlsx(ROWS[:3]))
    key = raw_key(await api_key_factory("registrar"))

    result = await invoke("import", str(path), DATABASE_URL=database_url, CBI_API_KEY=key)

    assert result.exit_code == 0, result.stderr
    assert "completed, 3 rows" in result.stdout
    (imp,) = await _imports(session_factory)
    assert imp.counts == {"created": 2, "duplicate": 1}


@pytest.mark.parametrize("roles", [("admin", "programme_officer"), ("auditor",)])
async def test_an_import_needs_a_registrars_key(tmp_path, database_url, api_key_factory, session_factory, roles):
    path = tmp_path / "people.csv"
    path.write_bytes(_csv(ROWS))
    key = raw_key(await api_key_factory(*roles))

    wrong_role = await invoke("import", str(path), DATABASE_URL=database_url, CBI_API_KEY=key)
    no_such_key = await invoke("import", str(path), "--api-key", "cbi_made_up", DATABASE_URL=database_url)

    assert wrong_role.exit_code == 1
    assert "registrar" in wrong_role.stderr
    assert no_such_key.exit_code == 1
    assert "valid API key" in no_such_key.stderr
    assert await _imports(session_factory) == []


async def test_a_file_the_upload_refuses_stores_nothing(tmp_path, database_url, api_key_factory, session_factory):
    key = raw_key(await api_key_factory("registrar"))
    pdf, empty, columns = tmp_path / "people.pdf", tmp_path / "empty.csv", tmp_path / "columns.csv"
    pdf.write_bytes(b"%PDF-1.7")
    empty.write_bytes(b"")
    columns.write_bytes(_csv(ROWS, columns=("given_names", "family_names")))

    not_a_table = await invoke("import", str(pdf), DATABASE_URL=database_url, CBI_API_KEY=key)
    nothing = await invoke("import", str(empty), DATABASE_URL=database_url, CBI_API_KEY=key)
    missing = await invoke("import", str(tmp_path / "absent.csv"), DATABASE_URL=database_url, CBI_API_KEY=key)
    short = await invoke("import", str(columns), DATABASE_URL=database_url, CBI_API_KEY=key)

    assert not_a_table.exit_code == 1
    assert "importing" not in not_a_table.stderr
    assert "must be a CSV or XLSX file" in not_a_table.stderr
    assert nothing.exit_code == 1
    assert "the file is empty" in nothing.stderr
    assert missing.exit_code == 2
    assert short.exit_code == 1
    assert "file: missing columns: " in short.stderr
    assert await _imports(session_factory) == []


async def test_a_file_the_import_cannot_read_fails_with_its_reason(tmp_path, database_url, api_key_factory):
    path = tmp_path / "people.xlsx"
    path.write_bytes(b"PK\x03\x04 not really a workbook")
    key = raw_key(await api_key_factory("registrar"))

    result = await invoke("import", str(path), DATABASE_URL=database_url, CBI_API_KEY=key)

    assert result.exit_code == 1
    assert "failed, 0 rows" in result.stdout
    assert "the import failed: not a readable XLSX workbook" in result.stderr
