from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, select, update

from cbi_service.auth.models import ApiKey
from cbi_service.kit.repository import Repository


class ApiKeyRepository(Repository[ApiKey]):
    model = ApiKey

    async def find_active_by_hash(self, key_hash: str) -> ApiKey | None:
        stmt = select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list_all(self) -> Sequence[ApiKey]:
        return (await self.session.execute(select(ApiKey).order_by(ApiKey.created_at))).scalars().all()

    async def revoke(self, key_id: uuid.UUID) -> bool:
        stmt = (
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=func.now())
            .returning(ApiKey.id)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none() is not None
