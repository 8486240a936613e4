"""Bridge between the service's normalisation and the external registry adapters in `adapters/registries`:
checks at registration, re-checks of people a registry could not answer for, and caseload hashing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.registries.base import RegistryAdapter, RegistryDocument, RegistryMatch, RegistryProbe
from adapters.registries.hashed_list import HashSummary, hash_rows
from adapters.registries.registry import build_registries
from cbi_service.dedup.documents import FieldError, normalize_document
from cbi_service.dedup.normalize import DocumentKey, MatchRecord, build_record
from cbi_service.dedup.repository import RecheckRepository
from cbi_service.dedup.service import registry
from cbi_service.kit.tabular import TableLimits, iter_rows, parse_date

log = structlog.get_logger(__name__)


#: Adapters built per configuration, the most recently used last; a few configurations at most.
_BUILT: OrderedDict[str, tuple[RegistryAdapter, ...]] = OrderedDict()
_BUILT_KEPT = 8


def _fingerprint(value: Any) -> str:
    """A secret option in the cache key: its digest, so the key tells configurations apart without holding it."""
    if isinstance(value, SecretStr):
        return "secret:" + hashlib.sha256(value.get_secret_value().encode()).hexdigest()
    raise TypeError(f"{type(value).__name__} is not a configuration value")


def registries_for(configs: Mapping[str, Mapping[str, Any]]) -> tuple[RegistryAdapter, ...]:
    """Adapters of CBI_REGISTRIES, built once per configuration and process: hashed lists load their file
    once, and a DCI registry's circuit breaker and connections outlive a request."""
    key = json.dumps(configs, sort_keys=True, default=_fingerprint)
    built = _BUILT.get(key)
    if built is None:
        built = tuple(build_registries(configs))
        _BUILT[key] = built
        while len(_BUILT) > _BUILT_KEPT:
            _BUILT.popitem(last=False)
    _BUILT.move_to_end(key)
    return built


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


#: The internal registry's name in `dedup.registries` and in matches.
INTERNAL = "internal"
CHECKED, UNAVAILABLE = "checked", "unavailable"

#: External checks in flight at once for a bulk import chunk or a re-check round.
CONCURRENCY = 16


@dataclass(frozen=True)
class RegistryChecks:
    """What the external registries said of one person: their matches, and which of them could not answer
    (reported `unavailable`, to be asked again later, never read as "no match")."""

    matches: list[RegistryMatch] = field(default_factory=list)
    #: Every registry asked, in configuration order, and those of them that could not answer.
    asked: tuple[str, ...] = ()
    unavailable: frozenset[str] = frozenset()

    def statuses(self) -> list[dict[str, str]]:
        """`dedup.registries`: the internal registry, then each external one in configuration order."""
        return [{"registry": INTERNAL, "status": CHECKED}] + [
            {"registry": name, "status": UNAVAILABLE if name in self.unavailable else CHECKED} for name in self.asked
        ]

    @property
    def checked(self) -> list[str]:
        return [name for name in self.asked if name not in self.unavailable]


async def check_registries(registries: Sequence[RegistryAdapter], record: MatchRecord) -> RegistryChecks:
    """Ask every external registry at once. One that fails, whatever the reason, is `unavailable`: the
    registration goes on and the person is asked about again once it answers (`defer_rechecks`)."""
    if not registries:
        return RegistryChecks()
    probe = probe_of(record)
    results = await asyncio.gather(*(r.check(probe) for r in registries), return_exceptions=True)
    matches: list[RegistryMatch] = []
    unavailable: set[str] = set()
    for adapter, result in zip(registries, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):  # cancellation and exits are not a registry's answer
                raise result
            # The type alone: an adapter's message or its cause may hold what was asked.
            log.warning("registry_unavailable", registry=adapter.name, error=type(result).__name__)
            unavailable.add(adapter.name)
            continue
        matches.extend(result)
    return RegistryChecks(matches, tuple(r.name for r in registries), frozenset(unavailable))


async def check_many(registries: Sequence[RegistryAdapter], records: Sequence[MatchRecord]) -> list[RegistryChecks]:
    """`check_registries` for many people, CONCURRENCY at a time, in their order."""
    if not registries:
        return [RegistryChecks() for _ in records]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(record: MatchRecord) -> RegistryChecks:
        async with gate:
            return await check_registries(registries, record)

    return list(await asyncio.gather(*(one(r) for r in records)))


# Re-checks -------------------------------------------------------------------------------------------------

#: People asked about per transaction of a re-check round, and how long a round's claim on them holds
#: (a round that died leaves them to the next one after this).
RECHECK_BATCH = 200
RECHECK_LEASE_SECONDS = 300.0
#: A person the registry did not answer for is asked again a minute after their first attempt, twice as
#: long after each further one, at most six hours apart; after the twelfth (some twenty hours of asking) they
#: are left to an adjudicator instead (`Registry.refer_unanswered`).
RECHECK_BACKOFF_SECONDS = 60.0
RECHECK_BACKOFF_CAP_SECONDS = 6 * 3600.0
RECHECK_MAX_ATTEMPTS = 12


async def defer_rechecks(session: AsyncSession, pairs: Sequence[tuple[uuid.UUID, str]]) -> None:
    """(person, registry) pairs a registration or an import could not check: asked again by the re-check job."""
    await RecheckRepository(session).defer(pairs)


async def settle_rechecks(session: AsyncSession, beneficiary_id: uuid.UUID, checks: RegistryChecks) -> None:
    """After a correction re-ran dedup: what answered need not be asked again, what did not is asked anew."""
    repo = RecheckRepository(session)
    await repo.forget(beneficiary_id, checks.checked)
    await repo.defer([(beneficiary_id, name) for name in checks.asked if name in checks.unavailable])


@dataclass
class RecheckRound:
    """What a round of re-checks did: people asked about, answered for, flagged for adjudication, those left
    to adjudicators after the last attempt, and those still waiting for each registry that did not answer."""

    asked: int = 0
    answered: int = 0
    flagged: int = 0
    referred: int = 0
    unavailable: dict[str, int] = field(default_factory=dict)


async def recheck_registries(
    session_factory: async_sessionmaker[AsyncSession],
    registries: Sequence[RegistryAdapter],
    *,
    checkpoint: Callable[[], None] = lambda: None,
    batch: int = RECHECK_BATCH,
) -> RecheckRound:
    """Ask each registry again about the people due for it, a batch at a time, until it fails again or
    nobody due is left. No transaction is open while a registry is being asked: a batch is claimed, asked,
    then settled, and only the rows still carrying the claim are (a correction meanwhile re-defers its
    person, and that newer check wins). A person the registry turns out to know goes to adjudication. A
    person it did not answer for is due again later each time (`RECHECK_BACKOFF_SECONDS`), so people it
    keeps refusing leave the others their turn; after `RECHECK_MAX_ATTEMPTS` they are no longer asked and
    go before an adjudicator, who decides without that registry's word."""
    summary = RecheckRound()
    for adapter in registries:
        while True:
            async with session_factory.begin() as session:
                claimed_at, ids = await RecheckRepository(session).claim(adapter.name, batch, RECHECK_LEASE_SECONDS)
                records = await registry().match_records(session, ids) if ids else {}
            if not ids:
                break
            people = [i for i in ids if i in records]
            results = await check_many([adapter], [records[i] for i in people])
            answered = {
                person: result.matches
                for person, result in zip(people, results, strict=True)
                if adapter.name not in result.unavailable
            }
            failed = [person for person in people if person not in answered]
            async with session_factory.begin() as session:
                repo = RecheckRepository(session)
                # People no longer matchable (erased, deactivated, found duplicate) need no answer.
                settled = set(await repo.settle(adapter.name, claimed_at, [i for i in ids if i not in failed]))
                given_up = await repo.give_up(adapter.name, claimed_at, failed, RECHECK_MAX_ATTEMPTS)
                await repo.back_off(
                    adapter.name, claimed_at, failed, RECHECK_BACKOFF_SECONDS, RECHECK_BACKOFF_CAP_SECONDS
                )
                found = {person: matches for person, matches in answered.items() if matches and person in settled}
                flagged = await registry().flag_registry_matches(session, adapter.name, found) if found else 0
                referred = await registry().refer_unanswered(session, adapter.name, given_up) if given_up else 0
            summary.asked += len(people)
            summary.answered += len(answered)
            summary.flagged += flagged
            summary.referred += referred
            if failed:
                summary.unavailable[adapter.name] = summary.unavailable.get(adapter.name, 0) + len(failed)
            checkpoint()
            if failed or len(ids) < batch:  # down again, or nobody left: the next round goes on
                break
    return summary


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
