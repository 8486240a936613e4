"""Queries of the dedup domain: stored models, sweeps and the pairs sweeps found."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from cbi_service.dedup.models import DedupModel, DedupSweep, DedupSweepPair
from cbi_service.kit.ids import new_id
from cbi_service.kit.repository import Repository

SWEEP_PAIRS = cast(Table, DedupSweepPair.__table__)


class ModelRepository(Repository[DedupModel]):
    model = DedupModel
    not_found = "No such match model."

    async def active_version(self) -> str | None:
        """The active model's version: one indexed probe (the partial unique index), no artefact read."""
        stmt = select(DedupModel.version).where(DedupModel.active)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def artefact(self, version: str) -> dict[str, Any] | None:
        stmt = select(DedupModel.artefact).where(DedupModel.version == version)
        return cast(dict[str, Any] | None, (await self.session.execute(stmt)).scalar_one_or_none())

    async def insert_new(self, version: str, artefact: dict[str, Any], trained: dict[str, Any]) -> bool:
        """Store a model under a version not taken yet; False (nothing written) when it is."""
        stmt = (
            pg_insert(DedupModel)
            .values(id=new_id(), version=version, artefact=artefact, trained=trained)
            .on_conflict_do_nothing()
            .returning(DedupModel.version)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none() is not None

    async def activate(self, version: str) -> None:
        """Make `version` the only active model, in this transaction (deactivating first keeps the partial
        unique index satisfied at every statement)."""
        await self.session.execute(
            update(DedupModel).where(DedupModel.active, DedupModel.version != version).values(active=False)
        )
        await self.session.execute(update(DedupModel).where(DedupModel.version == version).values(active=True))


class SweepRepository(Repository[DedupSweep]):
    model = DedupSweep
    not_found = "Sweep not found."
    server_set = ("created_at", "status", "engine", "chunks_done", "pairs_compared", "pairs_matched",
                  "adjudications_opened", "pairs_sent_to_adjudication")  # fmt: skip

    async def list(self, *, after_id: uuid.UUID | None, limit: int, status: str | None) -> Sequence[DedupSweep]:
        stmt = select(DedupSweep)
        if status is not None:
            stmt = stmt.where(DedupSweep.status == status)
        return await self.page(stmt, after_id, limit)

    async def add_pairs(self, sweep_id: uuid.UUID, chunk: int, pairs: Sequence[Any]) -> None:
        """A chunk's pairs; a chunk done again (after a crash before its commit) finds nothing to repeat."""
        if pairs:
            await self.session.execute(
                pg_insert(SWEEP_PAIRS).on_conflict_do_nothing(),
                [
                    {
                        "sweep_id": sweep_id,
                        "low_id": p.low_id,
                        "high_id": p.high_id,
                        "chunk": chunk,
                        "match_probability": p.match_probability,
                        "match_weight": p.match_weight,
                    }
                    for p in pairs
                ],
            )

    async def pairs(self, sweep_id: uuid.UUID) -> builtins.list[tuple[uuid.UUID, uuid.UUID]]:
        stmt = select(DedupSweepPair.low_id, DedupSweepPair.high_id).where(DedupSweepPair.sweep_id == sweep_id)
        return [(row.low_id, row.high_id) for row in await self.session.execute(stmt)]

    async def clear_pairs(self, sweep_id: uuid.UUID) -> None:
        """Forget what a sweep found so far (its records changed since): the pairs sent to adjudication stay
        claimed, so starting again sends none of them twice."""
        await self.session.execute(delete(DedupSweepPair).where(DedupSweepPair.sweep_id == sweep_id))
