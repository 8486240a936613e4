"""Key rotation (§13): a new records version becomes the active one at once, then a job seals every
row sealed under an older version again, batch by batch while the service serves, and retires those
versions once nothing uses them.

New data is sealed under the new version from the moment each process next reads the active version
(`kit.crypto.ACTIVE_TTL`); the job retires an old version only after waiting longer than that, and the
database refuses the deletion of a version a row still names (foreign keys), so a straggler is sealed
again on the next pass instead of being lost.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cbi_service.audit.service import Actor, record_audit
from cbi_service.beneficiaries.service import reseal_import_files, reseal_people, sealed_under_other
from cbi_service.jobs.service import enqueue
from cbi_service.keys.models import KeyRotation
from cbi_service.keys.repository import RotationRepository
from cbi_service.kit import crypto
from cbi_service.kit.errors import Conflict
from cbi_service.kit.idempotency import IdempotencyRepository

ROTATE_JOB = "keys.rotate"
BATCH = 2000
RETIRE_AFTER = timedelta(seconds=3 * crypto.ACTIVE_TTL)

Resealer = Callable[[AsyncSession, int, int], Awaitable[int]]


async def _reseal_responses(session: AsyncSession, version: int, limit: int) -> int:
    return await IdempotencyRepository(session).reseal(version, limit)


# Every owner of sealed rows, each sealing its own again.
RESEALERS: tuple[Resealer, ...] = (reseal_people, reseal_import_files, _reseal_responses)


async def _remaining(session: AsyncSession, version: int) -> int:
    return await sealed_under_other(session, version) + await IdempotencyRepository(session).count_sealed_under_other(
        version
    )


async def start_rotation(session: AsyncSession, actor: Actor | None) -> KeyRotation:
    """A new active version and the job that moves everything onto it; 409 while another runs."""
    ring = await crypto.keyring(session)
    version, retiring = await crypto.add_records_version(session, ring)
    by = actor.id if actor is not None else None
    rotation = await RotationRepository(session).start(version, await _remaining(session, version), by)
    if rotation is None:
        raise Conflict("A key rotation is already running: it must finish before another starts.")
    await enqueue(session, ROTATE_JOB, {"rotation_id": str(rotation.id)}, dedupe_key=f"keys.rotate:{rotation.id}")
    await record_audit(
        session, actor, "keys.rotation_started", "key_rotation", rotation.id, None,
        {"to_version": version, "retiring": retiring, "rows": rotation.total},
    )  # fmt: skip
    return rotation


async def run_rotation(
    sessions: async_sessionmaker[AsyncSession], rotation_id: uuid.UUID, checkpoint: Callable[[], None]
) -> None:
    """Seal everything again under the rotation's version, a committed batch at a time, then retire the
    versions it replaced once none is in use and every process has had time to see the new one."""
    async with sessions() as session:
        rotation = await RotationRepository(session).require(rotation_id)
    if rotation.status == "completed":
        return
    version = rotation.to_version
    while True:
        for reseal in RESEALERS:
            while True:
                async with sessions.begin() as session:
                    count = await reseal(session, version, BATCH)
                    await RotationRepository(session).advance(rotation_id, count)
                checkpoint()
                if count < BATCH:
                    break
        wait = rotation.created_at + RETIRE_AFTER - datetime.now(UTC)
        if wait > timedelta(0):
            await asyncio.sleep(wait.total_seconds())
            continue  # anything sealed under the old version meanwhile is sealed again first
        async with sessions.begin() as session:
            if await _remaining(session, version):
                continue
            retired = [v for v, purpose, status in await crypto.versions_in_use(session) if status == "retiring"]
            if all([await crypto.retire(session, v) for v in retired]):
                await RotationRepository(session).finish(rotation_id)
                await record_audit(
                    session, None, "keys.rotation_completed", "key_rotation", rotation_id, None,
                    {"to_version": version, "retired": retired},
                )  # fmt: skip
                return
