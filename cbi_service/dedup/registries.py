"""Bridge between the service's normalisation and the external registry adapters in `adapters/registries`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import structlog

from adapters.registries.base import RegistryAdapter, RegistryDocument, RegistryMatch, RegistryProbe
from adapters.registries.hashed_list import HashSummary, hash_rows
from adapters.registries.registry import build_registries
from cbi_service.dedup.documents import FieldError, normalize_document
from cbi_service.dedup.normalize import DocumentKey, MatchRecord, build_record
from cbi_service.kit.errors import AppError
from cbi_service.kit.tabular import TableLimits, iter_rows, parse_date

log = structlog.get_logger(__name__)


class RegistryUnavailable(AppError):
    """An external registry could not be asked: registering without it could pay someone twice."""

    status, title, slug = 503, "Service Unavailable", "registry-unavailable"


@lru_cache(maxsize=8)
def _registries(config_json: str) -> tuple[RegistryAdapter, ...]:
    return tuple(build_registries(json.loads(config_json)))


def registries_for(configs: Mapping[str, Mapping[str, Any]]) -> tuple[RegistryAdapter, ...]:
    """Adapters of CBI_REGISTRIES, built once per configuration (hashed lists load their file once)."""
    return _registries(json.dumps(configs, sort_keys=True))


def probe_of(record: MatchRecord) -> RegistryProbe:
    return RegistryProbe(
        given=record.given,
        family=record.family,
        given_phonetic=record.given_phonetic,
        family_phonetic=record.family_phonetic,
        date_of_birth=record.date_of_birth,
        sex=record.sex,
        nationality=record.nationality,
        documents=tuple(RegistryDocument(d.type, d.country, d.number) for d in record.documents),
        phone=record.phone,
    )


async def check_registries(registries: Sequence[RegistryAdapter], record: MatchRecord) -> list[RegistryMatch]:
    """Ask every external registry at once; any failure refuses the decision rather than guessing."""
    if not registries:
        return []
    probe = probe_of(record)
    results = await asyncio.gather(*(r.check(probe) for r in registries), return_exceptions=True)
    matches: list[RegistryMatch] = []
    for registry, result in zip(registries, results, strict=True):
        if isinstance(result, BaseException):
            log.warning("registry_check_failed", registry=registry.name, error=type(result).__name__)
            raise RegistryUnavailable(f"External registry {registry.name!r} could not be checked.")
        matches.extend(result)
    return matches


#: The columns a caseload file must have for `registry hash`; the others of the import columns are optional.
HASH_COLUMNS = frozenset({"given_names", "family_names", "date_of_birth"})


def probe_from_row(row: Mapping[str, str]) -> RegistryProbe:
    """A partner's caseload row (the bulk import columns) as a probe; ValueError, naming the column and what
    is wrong with it but never its value, when it cannot identify anyone."""
    for column in sorted(HASH_COLUMNS):
        if not row.get(column, "").strip():
            raise ValueError(f"{column}: is required")
    try:
        born = parse_date(row["date_of_birth"])
    except ValueError as exc:
        raise ValueError(f"date_of_birth: {exc}") from None
    documents: tuple[DocumentKey, ...] = ()
    doc_type, number, country = (
        row.get(c, "").strip() for c in ("document_type", "document_number", "document_country")
    )
    if number:
        try:
            documents = (DocumentKey(doc_type, country.upper(), normalize_document(doc_type, number, country)),)
        except FieldError as exc:
            raise ValueError(f"document_{exc.field}: {exc.message}") from exc
    record = build_record(
        given_names=row["given_names"].strip(),
        family_names=row["family_names"].strip(),
        date_of_birth=born,
        sex=row.get("sex", "").strip() or "unknown",
        nationality=row.get("nationality", "").strip() or None,
        documents=documents,
    )
    return probe_of(record)


def hash_registry_file(source: Path, destination: Path, key: str, limits: TableLimits) -> HashSummary:
    """What `cbi-service registry hash --key K IN OUT` runs: a partner's caseload (CSV or XLSX, read by
    `kit.tabular` as imports read it) -> a shareable hashed list.

    The list is written beside `destination` and moved there once the whole file has been read, so a file
    that cannot be read (UnreadableFile) leaves nothing behind. Rows that cannot be hashed are counted in
    the summary, not fatal.
    """
    file_format = "xlsx" if source.suffix.lower() == ".xlsx" else "csv"
    partial = destination.with_name(destination.name + ".partial")
    try:
        with partial.open("w", newline="", encoding="utf-8") as out:
            summary = hash_rows(iter_rows(source, file_format, HASH_COLUMNS, limits), out, key, to_probe=probe_from_row)
        partial.replace(destination)
    finally:
        partial.unlink(missing_ok=True)
    return summary
