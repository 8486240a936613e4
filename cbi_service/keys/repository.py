"""Queries of key rotations."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert

from cbi_service.keys.models import KeyRotation
from cbi_service.kit.repository import Repository


class RotationRepository(Repository[KeyRotation]):
    model = KeyRotation
    not_found = "Key rotation not found."
    server_set = ("created_at", "status", "done")

    async def start(self, to_version: int, total: int, by: uuid.UUID | None) -> KeyRotation | None:
        """A running rotation, or None when one already runs (the partial unique index decides)."""
        stmt = (
            insert(KeyRotation)
            .values(to_version=to_version, total=total, created_by=by)
            .on_conflict_do_nothing(index_elements=["status"], index_where=KeyRotation.status == "running")
            .returning(KeyRotation)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def advance(self, rotation_id: uuid.UUID, count: int) -> None:
        await self.session.execute(
            update(KeyRotation).where(KeyRotation.id == rotation_id).values(done=KeyRotation.done + count)
        )

    async def finish(self, rotation_id: uuid.UUID) -> None:
        await self.session.execute(
            update(KeyRotation)
            .where(KeyRotation.id == rotation_id)
            .values(status="completed", finished_at=datetime.now(UTC))
        )

    async def latest(self) -> KeyRotation | None:
        stmt = select(KeyRotation).order_by(KeyRotation.id.desc()).limit(1)
        return (await self.session.execute(stmt)).scalar_one_or_none()
