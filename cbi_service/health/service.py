from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from cbi_service.health.repository import applied_revisions
from cbi_service.migrate import head_revisions


async def readiness(engine: AsyncEngine) -> dict[str, bool]:
    try:
        applied = await applied_revisions(engine)
    except Exception:
        return {"database": False, "migrations": False}
    return {"database": True, "migrations": applied == head_revisions()}
