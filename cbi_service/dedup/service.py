"""Dedup's rules: which match model scores, training a new one, and registry-wide sweeps.

The registry itself (people, their stored match profiles, adjudications) is beneficiaries' to read and
write, and beneficiaries imports this domain: it hands its side in at import through `use_registry`.

`active_model` is on the path of every registration: it reads the active version (one indexed probe of a
one-row partial index) and keeps the parsed artefact per version in the process, so a model trained or
activated elsewhere is used from the next call on, and the JSON is parsed once per version, not per request.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.registries.base import RegistryMatch
from cbi_service.audit.service import Actor, record_audit
from cbi_service.dedup.model import MatchModel, default_model
from cbi_service.dedup.models import DedupSweep
from cbi_service.dedup.normalize import MatchRecord
from cbi_service.dedup.repository import ModelRepository, SweepRepository
from cbi_service.dedup.settings import get_dedup_settings
from cbi_service.dedup.sweeps import (
    ChunkResult,
    FoundPair,
    InputWriter,
    SweepPlan,
    chunk_count,
    cluster_count,
    run_chunks,
)
from cbi_service.jobs.service import enqueue
from cbi_service.kit.errors import Conflict, UnprocessableEntity

log = structlog.get_logger(__name__)

SWEEP_JOB = "dedup.sweep"
PAGE = 10_000  # profiles read per query
FINISHED = frozenset({"completed", "failed"})


class Registry(Protocol):
    """What dedup needs of the registry, which beneficiaries owns."""

    async def programme_exists(self, session: AsyncSession, programme_id: uuid.UUID) -> bool: ...

    async def profiles(
        self, session: AsyncSession, programme_id: uuid.UUID | None, after: uuid.UUID | None, limit: int
    ) -> list[tuple[uuid.UUID, dict[str, Any]]]:
        """A page of matchable people's (id, match profile), in id order."""
        ...

    async def open_adjudications(
        self, session: AsyncSession, sweep_id: uuid.UUID, pairs: Sequence[FoundPair]
    ) -> tuple[int, int]:
        """Put the pairs not already decided before adjudicators: (adjudications opened, pairs sent)."""
        ...

    async def match_records(self, session: AsyncSession, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, MatchRecord]:
        """The match records of those of these people who are still matchable (the others need no check)."""
        ...

    async def flag_registry_matches(
        self, session: AsyncSession, registry: str, found: Mapping[uuid.UUID, Sequence[RegistryMatch]]
    ) -> int:
        """Put people an external registry turned out to know before adjudicators, as their registration
        would have been had it answered then; returns how many people were flagged."""
        ...

    async def refer_unanswered(self, session: AsyncSession, registry: str, attempts: Mapping[uuid.UUID, int]) -> int:
        """Put people an external registry never answered for (person -> times it was asked) before
        adjudicators, who decide without its word; returns how many people were referred."""
        ...


_registry: list[Registry] = []


def use_registry(registry: Registry) -> None:
    """Beneficiaries hands in its registry (it imports this module, so this one cannot import it)."""
    _registry[:] = [registry]


def registry() -> Registry:
    if not _registry:
        raise RuntimeError("no registry registered: cbi_service.beneficiaries.sweeps is not loaded")
    return _registry[0]


# Models --------------------------------------------------------------------------------------------------

_models: dict[str, MatchModel] = {}


async def active_model(session: AsyncSession) -> MatchModel:
    """The active stored model, or the one shipped with the service when none was trained here."""
    version = await ModelRepository(session).active_version()
    if version is None:
        return default_model()
    cached = _models.get(version)
    if cached is None:
        artefact = await ModelRepository(session).artefact(version)
        if artefact is None:  # deactivated and removed since the probe: the next call sees the new state
            return default_model()
        cached = MatchModel.from_json(artefact)
        _models.clear()  # only the active version is ever asked for: the one before it is dropped
        _models[version] = cached
    return cached


async def store_model(session: AsyncSession, actor: Actor | None, model: MatchModel, *, activate: bool = True) -> None:
    """Keep a trained model under its version (a version is never overwritten) and make it the active one."""
    repo = ModelRepository(session)
    if not await repo.insert_new(model.version, model.to_json(), model.trained):
        raise Conflict(f"A model with version {model.version} is already stored.")
    if activate:
        await repo.activate(model.version)
    await record_audit(
        session, actor, "dedup_model.stored", "dedup_model", model.version, None,
        {"active": activate, "records": model.trained.get("records")},
    )  # fmt: skip


async def model_by_version(session: AsyncSession, version: str) -> MatchModel:
    """A stored model, or the shipped one, by version: a resumed sweep scores with the model it began with."""
    artefact = await ModelRepository(session).artefact(version)
    if artefact is not None:
        return MatchModel.from_json(artefact)
    if version == default_model().version:
        return default_model()
    raise Conflict(f"The model {version} the sweep started with is no longer stored.")


async def matchable_profiles(
    session: AsyncSession, programme_id: uuid.UUID | None = None
) -> AsyncIterator[list[tuple[uuid.UUID, dict[str, Any]]]]:
    """Every matchable person's (id, profile), a page at a time."""
    after: uuid.UUID | None = None
    while True:
        page = await registry().profiles(session, programme_id, after, PAGE)
        if not page:
            return
        yield page
        after = page[-1][0]


# Sweeps --------------------------------------------------------------------------------------------------


async def start_sweep(
    session: AsyncSession,
    actor: Actor,
    programme_id: uuid.UUID | None,
    *,
    engine: str = "duckdb",
    enqueue_job: bool = True,
) -> DedupSweep:
    """A new sweep, queued as a job in the caller's transaction (so only if that commits); without
    `enqueue_job` the caller runs it itself (`cbi-service dedup sweep`)."""
    if programme_id is not None and not await registry().programme_exists(session, programme_id):
        raise UnprocessableEntity(
            "No such programme.", errors=[{"field": "programme_id", "message": "no programme has this id"}]
        )
    sweep = await SweepRepository(session).add(
        DedupSweep(programme_id=programme_id, engine=engine, created_by=actor.id)
    )
    if enqueue_job:
        await enqueue(session, SWEEP_JOB, {"sweep_id": str(sweep.id)}, max_attempts=SWEEP_ATTEMPTS)
    await record_audit(
        session, actor, "dedup_sweep.started", "dedup_sweep", sweep.id, None,
        {"programme_id": str(programme_id) if programme_id else None, "engine": engine},
    )  # fmt: skip
    return sweep


SWEEP_ATTEMPTS = 5


@dataclass
class SweepRun:
    """How this process runs a sweep's chunks."""

    workers: int = 1
    spark_master: str = "local[2]"
    checkpoint: Callable[[], None] = lambda: None
    on_progress: Callable[[DedupSweep], None] = lambda sweep: None


async def run_sweep(sessions: async_sessionmaker[AsyncSession], sweep_id: uuid.UUID, run: SweepRun) -> None:
    """Run a sweep's remaining chunks, each committed with its pairs and adjudications, then count clusters.

    What a chunk found, the adjudications it opened and its mark in `chunks_done` commit together, so a
    sweep stopped anywhere (crash, `checkpoint`) goes on from the first chunk not marked done.
    """
    async with sessions.begin() as session:
        repo = SweepRepository(session)
        sweep = await repo.get(sweep_id, for_update=True)
        if sweep is None or sweep.status in FINISHED:
            return
        model = await (model_by_version(session, sweep.model_version) if sweep.model_version else active_model(session))
        if sweep.status == "queued":
            sweep.status, sweep.started_at = "running", datetime.now(UTC)
            sweep.model_version, sweep.review_threshold = model.version, get_dedup_settings().review_threshold
        threshold = float(sweep.review_threshold or get_dedup_settings().review_threshold)
        programme_id, engine = sweep.programme_id, sweep.engine
    with tempfile.TemporaryDirectory(prefix="cbi-sweep-") as tmp:
        path = Path(tmp) / "records.parquet"
        started = time.perf_counter()
        async with sessions() as session:
            records, digest = await _write_records(session, programme_id, path)
        log.info("sweep_records_read", records=records, seconds=round(time.perf_counter() - started, 1))
        async with sessions.begin() as session:
            repo = SweepRepository(session)
            sweep = await repo.require(sweep_id, for_update=True)
            if sweep.input_digest != digest:  # first run, or records came or went since: start the chunks over
                if sweep.input_digest is not None:
                    await repo.clear_pairs(sweep_id)
                sweep.records, sweep.chunks_total, sweep.chunks_done = records, chunk_count(records), []
                sweep.pairs_compared = sweep.pairs_matched = 0
                sweep.input_digest = digest
            chunks, done = sweep.chunks_total, set(sweep.chunks_done)
            run.on_progress(sweep)
        assert chunks is not None
        plan = SweepPlan(path, model, threshold, chunks, engine, run.workers, run.spark_master)
        pending = [k for k in range(1, chunks + 1) if k not in done]
        results = run_chunks(plan, pending)
        try:
            while (result := await asyncio.to_thread(next, results, None)) is not None:
                await _commit_chunk(sessions, sweep_id, result, run)
                run.checkpoint()
        finally:
            await asyncio.to_thread(results.close)
    async with sessions.begin() as session:
        repo = SweepRepository(session)
        pairs = [(str(low), str(high)) for low, high in await repo.pairs(sweep_id)]
        clusters = await asyncio.to_thread(cluster_count, pairs)
        sweep = await repo.require(sweep_id, for_update=True)
        sweep.clusters, sweep.status, sweep.finished_at = clusters, "completed", datetime.now(UTC)
        await _audit_finished(session, sweep)
        run.on_progress(sweep)


async def _write_records(session: AsyncSession, programme_id: uuid.UUID | None, path: Path) -> tuple[int, str]:
    """The swept records and the digest of their ids; the next page is read while the last one is turned
    into Splink's rows (in a thread)."""
    writer = InputWriter(path)
    writing: asyncio.Future[None] | None = None
    try:
        async for page in matchable_profiles(session, programme_id):
            if writing is not None:
                await writing
            writing = asyncio.ensure_future(asyncio.to_thread(writer.write, page))
        if writing is not None:
            await writing
    finally:
        await asyncio.to_thread(writer.close)
    return writer.records, writer.digest.hexdigest()


async def _commit_chunk(
    sessions: async_sessionmaker[AsyncSession], sweep_id: uuid.UUID, result: ChunkResult, run: SweepRun
) -> None:
    started = time.perf_counter()
    async with sessions.begin() as session:
        repo = SweepRepository(session)
        sweep = await repo.require(sweep_id, for_update=True)
        if result.chunk in sweep.chunks_done:  # another worker finished it meanwhile
            return
        await repo.add_pairs(sweep_id, result.chunk, result.pairs)
        opened, sent = await registry().open_adjudications(session, sweep_id, result.pairs)
        sweep.chunks_done = [*sweep.chunks_done, result.chunk]
        sweep.pairs_compared += result.pairs_compared
        sweep.pairs_matched += len(result.pairs)
        sweep.adjudications_opened += opened
        sweep.pairs_sent_to_adjudication += sent
        run.on_progress(sweep)
    log.info(
        "sweep_chunk_committed", chunk=result.chunk, pairs=len(result.pairs), adjudications_opened=opened,
        seconds=round(time.perf_counter() - started, 2),
    )  # fmt: skip


async def fail_sweep(session: AsyncSession, sweep_id: uuid.UUID, error: str) -> None:
    sweep = await SweepRepository(session).get(sweep_id, for_update=True)
    if sweep is None or sweep.status in FINISHED:
        return
    sweep.status, sweep.error, sweep.finished_at = "failed", error, datetime.now(UTC)
    await _audit_finished(session, sweep)


async def _audit_finished(session: AsyncSession, sweep: DedupSweep) -> None:
    await record_audit(
        session, None, f"dedup_sweep.{sweep.status}", "dedup_sweep", sweep.id, None,
        {
            "records": sweep.records, "pairs_compared": sweep.pairs_compared, "pairs_matched": sweep.pairs_matched,
            "clusters": sweep.clusters, "adjudications_opened": sweep.adjudications_opened, "error": sweep.error,
        },
    )  # fmt: skip
