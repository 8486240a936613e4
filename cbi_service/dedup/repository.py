"""Queries of the dedup domain: stored models, sweeps and the pairs sweeps found, registry re-checks."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.dedup.models import DedupModel, DedupSweep, DedupSweepPair, RegistryRecheck
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


def _claimed(registry: str, claimed_at: datetime, ids: Sequence[uuid.UUID]) -> tuple[ColumnElement[bool], ...]:
    """The re-check rows of these people for `registry` that still carry the claim `claimed_at`."""
    return (
        RegistryRecheck.registry_name == registry,
        RegistryRecheck.beneficiary_id.in_(ids),
        RegistryRecheck.claimed_at == claimed_at,
    )


class RecheckRepository:
    """People to ask an external registry about again (`RegistryRecheck`)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def defer(self, pairs: Sequence[tuple[uuid.UUID, str]]) -> None:
        """(person, registry) to ask again, as new: a pair already waiting starts over (its data may have
        changed: due now, no attempts) and loses any claim on it, so the round holding it settles nothing."""
        if not pairs:
            return
        stmt = pg_insert(RegistryRecheck).values(
            [{"beneficiary_id": person, "registry_name": registry} for person, registry in dict.fromkeys(pairs)]
        )
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=["beneficiary_id", "registry_name"],
                set_={"attempts": 0, "claimed_at": None, "next_attempt_at": func.now()},
            )
        )

    async def forget(self, beneficiary_id: uuid.UUID, registries: Sequence[str]) -> None:
        """The registries that just answered for this person need not be asked again."""
        if registries:
            await self.session.execute(
                delete(RegistryRecheck).where(
                    RegistryRecheck.beneficiary_id == beneficiary_id, RegistryRecheck.registry_name.in_(registries)
                )
            )

    async def claim(self, registry: str, limit: int, lease_seconds: float) -> tuple[datetime, list[uuid.UUID]]:
        """Up to `limit` people waiting for `registry` whose next attempt is due, the longest due first, skipping
        rows another round holds locked. They carry this transaction's time as their claim, one more attempt,
        and a next attempt `lease_seconds` away: a round that dies leaves them to the one after that."""
        claimed_at = (await self.session.execute(select(func.now()))).scalar_one()
        due = (
            select(RegistryRecheck.beneficiary_id)
            .where(RegistryRecheck.registry_name == registry, RegistryRecheck.next_attempt_at <= func.now())
            .order_by(RegistryRecheck.next_attempt_at, RegistryRecheck.created_at, RegistryRecheck.beneficiary_id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = list((await self.session.execute(due)).scalars())
        if ids:
            await self.session.execute(
                update(RegistryRecheck)
                .where(RegistryRecheck.registry_name == registry, RegistryRecheck.beneficiary_id.in_(ids))
                .values(
                    claimed_at=claimed_at,
                    attempts=RegistryRecheck.attempts + 1,
                    next_attempt_at=func.now() + timedelta(seconds=lease_seconds),
                )
            )
        return claimed_at, ids

    async def settle(self, registry: str, claimed_at: datetime, ids: Sequence[uuid.UUID]) -> builtins.list[uuid.UUID]:
        """Remove the claimed rows of these people that still carry the claim; returns whose were removed."""
        if not ids:
            return []
        stmt = (
            delete(RegistryRecheck)
            .where(*_claimed(registry, claimed_at, ids))
            .returning(RegistryRecheck.beneficiary_id)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def give_up(
        self, registry: str, claimed_at: datetime, ids: Sequence[uuid.UUID], max_attempts: int
    ) -> dict[uuid.UUID, int]:
        """Remove the claimed rows of these people that still carry the claim and have had `max_attempts`
        attempts: person -> attempts, for those removed."""
        if not ids:
            return {}
        stmt = (
            delete(RegistryRecheck)
            .where(*_claimed(registry, claimed_at, ids), RegistryRecheck.attempts >= max_attempts)
            .returning(RegistryRecheck.beneficiary_id, RegistryRecheck.attempts)
        )
        return {row.beneficiary_id: row.attempts for row in await self.session.execute(stmt)}

    async def back_off(
        self, registry: str, claimed_at: datetime, ids: Sequence[uuid.UUID], first_seconds: float, cap_seconds: float
    ) -> None:
        """Claims given up (the registry did not answer): each person is due again `first_seconds` after their
        first attempt, twice as long after each further one, never more than `cap_seconds`."""
        if not ids:
            return
        exponent = func.least(RegistryRecheck.attempts - 1, 30)  # bounded: power() cannot overflow
        delay = func.least(first_seconds * func.power(2, exponent), cap_seconds)
        await self.session.execute(
            update(RegistryRecheck)
            .where(*_claimed(registry, claimed_at, ids))
            .values(claimed_at=None, next_attempt_at=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, delay))
        )
