"""Bridge between the service's normalisation and the external registry adapters in `adapters/registries`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

import structlog

from adapters.registries.base import RegistryAdapter, RegistryDocument, RegistryMatch, RegistryProbe
from adapters.registries.hashed_list import HashSummary, hash_csv
from adapters.registries.registry import build_registries
from cbi_service.dedup.documents import FieldError, normalize_document
from cbi_service.dedup.normalize import DocumentKey, MatchRecord, build_record
from cbi_service.kit.errors import AppError

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


def probe_from_row(row: Mapping[str, str]) -> RegistryProbe:
    """A partner's CSV row (the bulk import columns) as a probe; ValueError when it cannot identify anyone."""
    given, family, born = (row.get(c, "").strip() for c in ("given_names", "family_names", "date_of_birth"))
    if not given or not family or not born:
        raise ValueError("given_names, family_names and date_of_birth are required")
    documents: tuple[DocumentKey, ...] = ()
    doc_type, number, country = (
        row.get(c, "").strip() for c in ("document_type", "document_number", "document_country")
    )
    if number:
        try:
            documents = (DocumentKey(doc_type, country.upper(), normalize_document(doc_type, number, country)),)
        except FieldError as exc:
            raise ValueError(str(exc)) from exc
    record = build_record(
        given_names=given,
        family_names=family,
        date_of_birth=date.fromisoformat(born),
        sex=row.get("sex", "").strip() or "unknown",
        nationality=row.get("nationality", "").strip() or None,
        documents=documents,
    )
    return probe_of(record)


def hash_registry_csv(source: Path, destination: Path, key: str) -> HashSummary:
    """What `cbi-service registry hash --key K IN.csv OUT` runs: a partner's CSV -> a shareable hashed list."""
    return hash_csv(source, destination, key, to_probe=probe_from_row)
