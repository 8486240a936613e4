from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

import pytest
from pydantic import SecretStr

from adapters.registries.base import RegistryConfigError
from adapters.registries.hashed_list import HashedListRegistry
from adapters.registries.registry import build_registries
from cbi_service.dedup.normalize import DocumentKey, build_record
from cbi_service.dedup.registries import check_registries, hash_registry_file, probe_of
from cbi_service.kit.settings import Settings
from cbi_service.kit.tabular import TableLimits

KEY = "agreed-between-agencies"
PARTNER_ROWS = [
    {"external_ref": "ACNUR-77", "given_names": "Yésica Andrea", "family_names": "Peña Ortiz", "date_of_birth":
     "1988-04-12", "sex": "female", "nationality": "VE", "document_type": "national_id",
     "document_number": "V-20.111.222", "document_country": "VE"},
    {"external_ref": "ACNUR-78", "given_names": "Luis", "family_names": "Mora", "date_of_birth": "1975-01-30",
     "sex": "male", "nationality": "VE", "document_type": "", "document_number": "", "document_country": ""},
    {"external_ref": "ACNUR-79", "given_names": "", "family_names": "Sin nombre", "date_of_birth": "1975-01-30"},
]  # fmt: skip


@pytest.fixture
def hashed_list(tmp_path: Path) -> Path:
    source = tmp_path / "partner.csv"
    with source.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(PARTNER_ROWS[0]))
        writer.writeheader()
        writer.writerows(PARTNER_ROWS)
    out = tmp_path / "partner.hashes.csv"
    summary = hash_registry_file(source, out, KEY, TableLimits.of(Settings()))
    assert (summary.people, summary.skipped) == (2, 1)
    assert summary.reasons == {"given_names: is required": (1, (4,))}
    return out


def test_hashed_file_holds_no_personal_data(hashed_list: Path):
    text = hashed_list.read_text().lower()
    for needle in ("yesica", "yésica", "peña", "pena", "20111222", "1988-04-12", "mora", "luis"):
        assert needle not in text
    header = text.splitlines()[0]
    assert header == "registry_ref,kind,digest"


async def test_finds_a_person_by_document_written_differently(hashed_list: Path):
    registry = HashedListRegistry("partner", hashed_list, KEY)
    probe = build_record(
        given_names="Jessica",
        family_names="Gómez",
        date_of_birth=date(1999, 9, 9),
        documents=(DocumentKey("national_id", "VE", "20111222"),),
    )
    (match,) = await registry.check(probe_of(probe))
    assert (match.registry_ref, match.same_document, match.matched_on) == ("ACNUR-77", True, ["document"])


async def test_finds_a_person_by_name_and_birth_date_despite_spelling(hashed_list: Path):
    settings = Settings(registries={"partner": {"adapter": "hashed_list", "path": str(hashed_list), "key": KEY}})
    assert isinstance(settings.registries["partner"]["key"], SecretStr)
    (registry,) = build_registries(settings.registries)
    probe = build_record(given_names="Yesica", family_names="Ortiz Pena", date_of_birth=date(1988, 4, 12))
    checks = await check_registries([registry], probe)
    matches = checks.matches
    assert [(m.registry, m.registry_ref, m.same_document) for m in matches] == [("partner", "ACNUR-77", False)]
    assert matches[0].score >= 0.9
    assert checks.statuses() == [
        {"registry": "internal", "status": "checked"},
        {"registry": "partner", "status": "checked"},
    ]


async def test_a_list_that_cannot_be_read_is_unavailable_not_empty(tmp_path: Path):
    (registry,) = build_registries(
        {"partner": {"adapter": "hashed_list", "path": str(tmp_path / "gone.csv"), "key": KEY}}
    )
    probe = build_record(given_names="Luis", family_names="Mora", date_of_birth=date(1975, 1, 30))
    checks = await check_registries([registry], probe)
    assert (checks.matches, checks.unavailable) == ([], frozenset({"partner"}))
    assert checks.statuses()[1] == {"registry": "partner", "status": "unavailable"}


async def test_wrong_key_finds_nobody(hashed_list: Path):
    registry = HashedListRegistry("partner", hashed_list, "another-key")
    probe = build_record(given_names="Luis", family_names="Mora", date_of_birth=date(1975, 1, 30))
    assert await registry.check(probe_of(probe)) == []


def test_configuration_errors_are_reported():
    with pytest.raises(RegistryConfigError):
        build_registries({"x": {"adapter": "nonexistent"}})
    with pytest.raises(RegistryConfigError):
        build_registries({"x": {"adapter": "hashed_list", "path": "/tmp/x.csv"}})
