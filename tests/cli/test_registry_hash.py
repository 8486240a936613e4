"""`cbi-service registry hash`: a partner's caseload, hashed on the partner's side, finds its people here."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import openpyxl
import pytest
from typer.testing import CliRunner

from cbi_service.cli import app as cli
from cbi_service.kit.settings import Settings
from tests.beneficiaries.support import person_body
from tests.support import assert_problem

KEY = "clave-acordada-entre-agencias"
PARTNER_CASELOAD = [
    {"external_ref": "NRC-501", "given_names": "Yésica Andrea", "family_names": "Peña Ortiz",
     "date_of_birth": "1988-04-12", "sex": "female", "nationality": "VE", "document_type": "national_id",
     "document_number": "V-20.111.222", "document_country": "VE"},
    {"external_ref": "NRC-502", "given_names": "José Gregorio", "family_names": "Hernández Rivas",
     "date_of_birth": "1969-10-26", "sex": "male", "nationality": "VE", "document_type": "",
     "document_number": "", "document_country": ""},
]  # fmt: skip
PERSONAL = ("yésica", "yesica", "peña", "pena", "ortiz", "20111222", "20.111.222", "1988", "hernandez", "hernández",
            "gregorio", "1969", "10-26", "26/10")  # fmt: skip


def write_caseload(path: Path, rows: list[dict[str, str]], *, encoding: str = "utf-8", delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding=encoding) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(PARTNER_CASELOAD[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_hash(source: Path, destination: Path):
    return CliRunner().invoke(cli, ["registry", "hash", "--key", KEY, str(source), str(destination)])


@pytest.fixture
def hashed_list(tmp_path: Path) -> Path:
    source = write_caseload(tmp_path / "caseload.csv", PARTNER_CASELOAD)
    destination = tmp_path / "nrc.hashes.csv"
    result = run_hash(source, destination)
    assert result.exit_code == 0, result.output
    assert result.output == f"hashed 2 people into 6 keys: {destination}\n"
    return destination


@pytest.fixture
def settings(settings: Settings, hashed_list: Path) -> Settings:
    registries = {"nrc": {"adapter": "hashed_list", "path": str(hashed_list), "key": KEY}}
    return settings.model_copy(update={"registries": registries})


def test_the_shared_file_holds_no_personal_data(hashed_list: Path):
    text = hashed_list.read_text(encoding="utf-8").lower()
    for needle in PERSONAL:
        assert needle not in text
    refs = {line.split(",")[0] for line in text.splitlines()[1:]}
    assert refs == {"nrc-501", "nrc-502"}


def test_a_caseload_as_excel_saves_it_hashes_to_the_same_list(tmp_path: Path, hashed_list: Path):
    """Windows-1252, semicolons and day-first dates: the same people, the same keys."""
    day_first = [row | {"date_of_birth": "/".join(reversed(row["date_of_birth"].split("-")))} for row in
                 PARTNER_CASELOAD]  # fmt: skip
    assert day_first[0]["date_of_birth"] == "12/04/1988"
    source = write_caseload(tmp_path / "excel.csv", day_first, encoding="cp1252", delimiter=";")
    result = run_hash(source, tmp_path / "excel.hashes.csv")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "excel.hashes.csv").read_text() == hashed_list.read_text()


def test_a_workbook_with_date_cells_hashes_to_the_same_list(tmp_path: Path, hashed_list: Path):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    assert sheet is not None
    columns = list(PARTNER_CASELOAD[0])
    sheet.append(columns)
    for row in PARTNER_CASELOAD:
        sheet.append([date.fromisoformat(row[c]) if c == "date_of_birth" else row[c] for c in columns])
    workbook.save(tmp_path / "caseload.xlsx")
    result = run_hash(tmp_path / "caseload.xlsx", tmp_path / "xlsx.hashes.csv")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "xlsx.hashes.csv").read_text() == hashed_list.read_text()


def test_a_caseload_of_day_first_dates_hashes_every_row(tmp_path: Path):
    """The file that used to hash 0 of its 4,100 rows and exit 0."""
    rows = [
        PARTNER_CASELOAD[1] | {"external_ref": f"NRC-{i}", "given_names": f"Persona {i}",
                               "date_of_birth": f"{1 + i % 28}/{1 + i % 12}/{1940 + i % 60}"}
        for i in range(4_100)
    ]  # fmt: skip
    result = run_hash(write_caseload(tmp_path / "caseload.csv", rows, delimiter=";"), tmp_path / "out.csv")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("hashed 4100 people into ")


def test_rows_that_cannot_be_read_are_counted_and_exit_1(tmp_path: Path):
    """What used to hash none of a file of month-first dates and exit 0."""
    rows = [
        PARTNER_CASELOAD[0],
        PARTNER_CASELOAD[1] | {"date_of_birth": "10/26/1969"},  # month first: never swapped into place
        PARTNER_CASELOAD[1] | {"external_ref": "NRC-503", "date_of_birth": "12/31/1990"},
        PARTNER_CASELOAD[1] | {"external_ref": "NRC-504", "given_names": ""},
        PARTNER_CASELOAD[1] | {"external_ref": "NRC-505", "document_type": "national_id", "document_number": "V-1"},
    ]
    destination = tmp_path / "out.csv"
    result = run_hash(write_caseload(tmp_path / "caseload.csv", rows), destination)
    assert result.exit_code == 1
    assert result.stdout.startswith("hashed 1 people into ")
    assert result.stderr.splitlines() == [
        "4 rows could not be read and are not in the list:",
        "  2 rows, date_of_birth: must be a date as YYYY-MM-DD or DD/MM/YYYY (day first) (rows 3, 4)",
        "  1 rows, document_number: must have between 3 and 20 characters (rows 6)",
        "  1 rows, given_names: is required (rows 5)",
    ]
    for needle in (*PERSONAL, "10/26", "12/31", "nrc-50"):
        assert needle not in result.output.lower()
    assert {line.split(",")[0] for line in destination.read_text().splitlines()[1:]} == {"NRC-501"}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("Mar\x87a".encode("latin-1").join([b"given_names,family_names,date_of_birth\n", b",Mej\x87a,1/1/1990\n"]),
         "cannot be read as Windows-1252"),
        (b"given_names,family_names,birth\nAna,Paz,1990-01-01\n", "missing columns: date_of_birth"),
    ],
)  # fmt: skip
def test_a_file_that_cannot_be_read_writes_nothing_and_exits_2(tmp_path: Path, content: bytes, reason: str):
    source = tmp_path / "caseload.csv"
    source.write_bytes(content)
    destination = tmp_path / "out.csv"
    result = run_hash(source, destination)
    assert result.exit_code == 2
    assert reason in result.stderr
    assert list(tmp_path.iterdir()) == [source]


def test_the_key_is_required(tmp_path: Path):
    source = tmp_path / "caseload.csv"
    source.write_text("given_names,family_names,date_of_birth\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["registry", "hash", "--key", "", str(source), str(tmp_path / "out.csv")])
    assert result.exit_code == 2
    assert "key" in result.output


async def test_registration_meets_the_partners_person_by_document(client, api_key_factory):
    registrar = await api_key_factory("registrar")
    body = person_body(
        given_names="Jésica",
        family_names="Peña",
        date_of_birth="1988-04-12",
        documents=[{"type": "national_id", "number": "20111222", "issuing_country": "VE"}],
        phone=None,
    )
    problem = assert_problem(await client.post("/v1/beneficiaries", json=body, headers=registrar), 409)
    assert problem["dedup"]["status"] == "duplicate"
    assert problem["dedup"]["matches"] == [
        {
            "beneficiary_id": None,
            "registry_ref": "NRC-501",
            "registry": "nrc",
            "score": 1.0,
            "matched_on": ["document"],
            "match_weight": None,
            "explanation": [],
            "unanswered_attempts": None,
        }
    ]
    assert (await client.get("/v1/beneficiaries", headers=registrar)).json()["items"] == []


async def test_registration_meets_the_partners_person_by_name_and_birth_date(client, api_key_factory):
    registrar = await api_key_factory("registrar")
    body = person_body(
        given_names="JOSE GREGORIO",
        family_names="Rivas Hernandez",
        sex="male",
        date_of_birth="1969-10-26",
        documents=[],
        phone=None,
    )
    created = await client.post("/v1/beneficiaries", json=body, headers=registrar)
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "pending_adjudication"
    (match,) = created.json()["dedup"]["matches"]
    assert (match["registry"], match["registry_ref"]) == ("nrc", "NRC-502")
    unrelated = person_body(given_names="Ana", family_names="Rojas", date_of_birth="1969-10-26", documents=[])
    assert (await client.post("/v1/beneficiaries", json=unrelated, headers=registrar)).json()["dedup"]["status"] == (
        "unique"
    )
