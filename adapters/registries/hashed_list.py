"""Hashed-list registry: a partner agency's caseload shared as keyed hashes, never as personal data.

The partner runs `cbi-service registry hash --key K IN OUT` on its own machine, which reads the file as
imports do and hands its rows to `hash_rows`. Every person becomes a few HMAC-SHA-256 digests, keyed with a
secret the agencies agreed on, of canonical identifiers (document number with and without its type and
country) and of name + birth date keys built from Spanish phonetic codes, so spelling and accent differences
still meet. Without the key nobody can test a guess against the file; with it, only exact key equality is
learnt. The partner's case reference travels in clear so the two agencies can follow up a match between
themselves.

File format (CSV, header included): `registry_ref,kind,digest` with one row per key.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import hmac
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pydantic import SecretStr

from adapters.registries.base import RegistryConfigError, RegistryMatch, RegistryProbe

COLUMNS = ("registry_ref", "kind", "digest")


@dataclass(frozen=True)
class KeyKind:
    score: float
    matched_on: tuple[str, ...]
    same_document: bool = False


# What a hit on each kind of key tells: an identical document of the same type and country is the rule
# for "duplicate"; every other hit goes to adjudication, its score ranking the partner's records.
KINDS: Mapping[str, KeyKind] = {
    "document": KeyKind(1.0, ("document",), same_document=True),
    "document_number": KeyKind(0.95, ("document",)),
    "name_dob": KeyKind(0.97, ("given_names", "family_names", "date_of_birth")),
    "short_name_dob": KeyKind(0.9, ("given_names", "family_names", "date_of_birth")),
}


def _digest(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def probe_keys(probe: RegistryProbe, key: bytes) -> Iterator[tuple[str, str]]:
    """(kind, digest) pairs of one person. Name codes are sorted so swapped surnames or fields still meet."""
    for document in probe.documents:
        yield "document", _digest(key, f"document|{document.type}|{document.country}|{document.number}")
        yield "document_number", _digest(key, f"document_number|{document.number}")
    dob = probe.date_of_birth.isoformat()
    given, family = probe.given_phonetic, probe.family_phonetic
    if given and family:
        full = sorted((given[0], *family[:2]))
        yield "name_dob", _digest(key, f"name_dob|{'|'.join(full)}|{dob}")
        if len(family) > 1:
            short = sorted((given[0], family[0]))
            yield "short_name_dob", _digest(key, f"name_dob|{'|'.join(short)}|{dob}")


#: How many row numbers a summary keeps for each reason rows were skipped.
ROWS_SHOWN = 10


@dataclass(frozen=True)
class HashSummary:
    people: int
    keys: int
    skipped: int
    #: Why rows were skipped: reason -> (how many rows, the first ROWS_SHOWN of their numbers). A reason names
    #: a column and what is wrong with it, never a value.
    reasons: Mapping[str, tuple[int, tuple[int, ...]]] = field(default_factory=dict)


def hash_rows(
    rows: Iterable[tuple[int, Mapping[str, str]]],
    out: TextIO,
    key: str,
    *,
    to_probe: Callable[[Mapping[str, str]], RegistryProbe],
    ref_column: str = "external_ref",
) -> HashSummary:
    """Turn (row number, cells) of a partner's caseload into a hashed list written to `out`; rows `to_probe`
    rejects (ValueError, whose message is the reason) are skipped and counted.

    Streams, so a caseload of any size hashes in constant memory.
    """
    if not key:
        raise RegistryConfigError("the hashing key must not be empty")
    secret = key.encode()
    people = keys = skipped = 0
    reasons: dict[str, tuple[int, tuple[int, ...]]] = {}
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for number, row in rows:
        ref = (row.get(ref_column) or "").strip() or f"row-{number}"
        try:
            probe = to_probe(row)
        except ValueError as exc:
            skipped += 1
            count, shown = reasons.get(str(exc), (0, ()))
            reasons[str(exc)] = (count + 1, (*shown, number) if len(shown) < ROWS_SHOWN else shown)
            continue
        people += 1
        seen: set[str] = set()
        for kind, digest in probe_keys(probe, secret):
            if digest not in seen:
                seen.add(digest)
                writer.writerow((ref, kind, digest))
                keys += 1
    return HashSummary(people=people, keys=keys, skipped=skipped, reasons=reasons)


class HashedListRegistry:
    """Looks a probe's digests up in the partner's file, loaded once into memory (digest -> refs)."""

    def __init__(self, name: str, path: Path, key: str) -> None:
        if not key:
            raise RegistryConfigError(f"registry {name!r}: 'key' must not be empty")
        self.name = name
        self.path = path
        self._key = key.encode()
        self._index: dict[str, list[tuple[str, str]]] | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_config(cls, name: str, config: Mapping[str, Any]) -> HashedListRegistry:
        path, key = config.get("path"), config.get("key")
        if isinstance(key, SecretStr):  # as the service's settings hold it
            key = key.get_secret_value()
        if not isinstance(path, str) or not path:
            raise RegistryConfigError(f"registry {name!r}: 'path' must name the hashed list file")
        if not isinstance(key, str):
            raise RegistryConfigError(f"registry {name!r}: 'key' must be the agreed hashing key")
        return cls(name, Path(path), key)

    def _load(self) -> dict[str, list[tuple[str, str]]]:
        index: dict[str, list[tuple[str, str]]] = {}
        with self.path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise RegistryConfigError(f"registry {self.name!r}: {self.path} is not a hashed list")
            for row in reader:
                if row["kind"] in KINDS:
                    index.setdefault(row["digest"], []).append((row["registry_ref"], row["kind"]))
        return index

    async def _loaded(self) -> dict[str, list[tuple[str, str]]]:
        if self._index is None:
            async with self._lock:
                if self._index is None:
                    self._index = await asyncio.to_thread(self._load)
        return self._index

    async def check(self, probe: RegistryProbe) -> list[RegistryMatch]:
        """Best match per partner reference."""
        index = await self._loaded()
        best: dict[str, KeyKind] = {}
        for _, digest in probe_keys(probe, self._key):
            for ref, kind_name in index.get(digest, ()):
                kind = KINDS[kind_name]
                current = best.get(ref)
                if current is None or (kind.same_document, kind.score) > (current.same_document, current.score):
                    best[ref] = kind
        return [
            RegistryMatch(self.name, ref, kind.score, list(kind.matched_on), kind.same_document)
            for ref, kind in sorted(best.items(), key=lambda item: item[1].score, reverse=True)
        ]
