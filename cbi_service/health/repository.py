"""What health and the metrics gauges read: the migrations applied, the queue, entitlements and imports.

The gauges' queries read other domains' tables (reading is allowed; health writes nothing) on a read-only
connection whose statements are cut off after `statement_timeout_ms`, so a slow database makes a scrape use
the last figures instead of holding a connection for long.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine

from cbi_service.beneficiaries.models import BeneficiaryImport
from cbi_service.entitlements.models import Entitlement
from cbi_service.jobs.models import Job

#: The job statuses the gauges count: waiting and running (the queue's depth), and failed (given up).
GAUGED_JOB_STATUSES = ("queued", "running", "failed")


async def applied_revisions(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        try:
            rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
        except ProgrammingError:
            return set()
        return {r[0] for r in rows}


@dataclass(frozen=True)
class GaugeRows:
    jobs: Sequence[tuple[str, str, int, Any]]
    """(kind, status, count, seconds the oldest ready job of that kind has waited: queued rows only)."""
    entitlements: Sequence[tuple[str, int]]
    """(status, count)."""
    imports: tuple[int, int, int]
    """(imports running, their rows done, their rows in all where known)."""


async def gauge_rows(engine: AsyncEngine, statement_timeout_ms: int) -> GaugeRows:
    async with engine.connect() as conn:
        await conn.execution_options(postgresql_readonly=True)
        async with conn.begin():
            await conn.execute(
                text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": str(statement_timeout_ms)}
            )
            oldest_ready = func.min(Job.run_at).filter(Job.status == "queued", Job.run_at <= func.now())
            waited = func.extract("epoch", func.now() - oldest_ready)
            jobs = await conn.execute(
                select(Job.kind, Job.status, func.count(), waited)
                .where(Job.status.in_(GAUGED_JOB_STATUSES))
                .group_by(Job.kind, Job.status)
            )
            entitlements = await conn.execute(select(Entitlement.status, func.count()).group_by(Entitlement.status))
            imports = await conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(BeneficiaryImport.rows_done), 0),
                    func.coalesce(func.sum(BeneficiaryImport.rows_total), 0),
                ).where(BeneficiaryImport.status == "running")
            )
            running, done, expected = imports.one()
            return GaugeRows(
                jobs=[(kind, status, count, waited) for kind, status, count, waited in jobs],
                entitlements=[(status, count) for status, count in entitlements],
                imports=(running, done, expected or 0),
            )
