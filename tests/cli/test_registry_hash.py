"""`cbi-service registry hash`: a partner's caseload, hashed on the partner's side, finds its people here."""

from __future__ import annotations

import csv
from pathlib import Path

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
    {"external_ref": "NRC-503", "given_names": "", "family_names": "", "date_of_birth": "1990-01-01"},
]  # fmt: skip


@pytest.fixture
def hashed_list(tmp_path: Path) -> Path:
    source = tmp_path / "caseload.csv"
    with source.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(PARTNER_CASELOAD[0]))
        writer.writeheader()
        writer.writerows(PARTNER_CASELOAD)
    destination = tmp_path / "nrc.hashes.csv"
    result = CliRunner().invoke(cli, ["registry", "hash", "--key", KEY, str(source), str(destination)])
    assert result.exit_code == 0, result.output
    assert "hashed 2 people" in result.output
    assert "1 rows skipped" in result.output
    return destination


@pytest.fixture
def settings(settings: Settings, hashed_list: Path) -> Settings:
    registries = {"nrc": {"adapter": "hashed_list", "path": str(hashed_list), "key": KEY}}
    return settings.model_copy(update={"registries": registries})


def test_the_shared_file_holds_no_personal_data(hashed_list: Path):
    text = hashed_list.read_text(encoding="utf-8").lower()
    for needle in ("yésica", "yesica", "peña", "pena", "ortiz", "20111222", "20.111.222", "1988", "hernandez",
                   "hernández", "gregorio", "1969-10-26"):  # fmt: skip
        assert needle not in text
    refs = {line.split(",")[0] for line in text.splitlines()[1:]}
    assert refs == {"nrc-501", "nrc-502"}


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
        {"beneficiary_id": None, "registry_ref": "NRC-501", "registry": "nrc", "score": 1.0, "matched_on": ["document"]}
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
