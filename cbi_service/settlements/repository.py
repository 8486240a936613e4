"""Settlement persistence: settlements, their approvals, and the redemptions each pays. A redemption is
claimed by one live settlement at most (a partial unique index), so two settlements drafted at once for one
merchant never pay the same redemption: the second skips what the first holds."""

from __future__ import annotations

import builtins
import uuid
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import func, select, text, update

from cbi_service.kit.repository import Repository
from cbi_service.settlements.models import MerchantSettlement, SettlementApproval, SettlementItem

_CLAIM = """
    WITH claimed AS (
        INSERT INTO merchant_settlement_items (settlement_id, redemption_id, programme_id, amount_minor)
        SELECT CAST(:settlement AS uuid), r.id, e.programme_id, r.amount_minor
          FROM voucher_redemptions r
          JOIN entitlements e ON e.id = r.voucher_id
         WHERE r.merchant_id = :merchant AND r.status = 'accepted'
           AND NOT EXISTS (
               SELECT 1 FROM merchant_settlement_items i WHERE i.redemption_id = r.id AND i.live
           )
        ON CONFLICT (redemption_id) WHERE live DO NOTHING
        RETURNING amount_minor
    )
    SELECT count(*), coalesce(sum(amount_minor), 0) FROM claimed
"""


class SettlementRepository(Repository[MerchantSettlement]):
    model = MerchantSettlement
    not_found = "Merchant settlement not found."
    server_set = ("created_at", "status", "updated_at")

    async def list(
        self, *, after_id: uuid.UUID | None, limit: int, merchant_id: uuid.UUID | None, status: str | None
    ) -> Sequence[MerchantSettlement]:
        stmt = select(MerchantSettlement)
        if merchant_id is not None:
            stmt = stmt.where(MerchantSettlement.merchant_id == merchant_id)
        if status is not None:
            stmt = stmt.where(MerchantSettlement.status == status)
        return await self.page(stmt, after_id, limit)

    async def claim_unsettled(self, settlement: MerchantSettlement) -> tuple[int, int]:
        """Put every accepted redemption at the merchant that no live settlement holds into this one:
        (count, total minor units)."""
        row = (
            await self.session.execute(text(_CLAIM), {"settlement": settlement.id, "merchant": settlement.merchant_id})
        ).one()
        return int(row[0]), int(row[1])

    async def programme_totals(
        self, settlement_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, builtins.list[tuple[uuid.UUID, int]]]:
        """What each programme owes in each settlement: (programme id, minor units) in programme order."""
        found: dict[uuid.UUID, builtins.list[tuple[uuid.UUID, int]]] = defaultdict(builtins.list)
        if settlement_ids:
            stmt = (
                select(SettlementItem.settlement_id, SettlementItem.programme_id, func.sum(SettlementItem.amount_minor))
                .where(SettlementItem.settlement_id.in_(settlement_ids))
                .group_by(SettlementItem.settlement_id, SettlementItem.programme_id)
                .order_by(SettlementItem.settlement_id, SettlementItem.programme_id)
            )
            for settlement_id, programme_id, total in (await self.session.execute(stmt)).all():
                found[settlement_id].append((programme_id, int(total)))
        return found

    async def release_items(self, settlement_id: uuid.UUID) -> None:
        """The settlement will not be paid: its redemptions are unsettled again."""
        await self.session.execute(
            update(SettlementItem).where(SettlementItem.settlement_id == settlement_id).values(live=False)
        )

    async def add_approval(self, approval: SettlementApproval) -> None:
        self.session.add(approval)
        await self.session.flush()

    async def approvals(
        self, settlement_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, builtins.list[SettlementApproval]]:
        found: dict[uuid.UUID, builtins.list[SettlementApproval]] = defaultdict(builtins.list)
        if settlement_ids:
            stmt = (
                select(SettlementApproval)
                .where(SettlementApproval.settlement_id.in_(settlement_ids))
                .order_by(SettlementApproval.created_at, SettlementApproval.id)
            )
            for row in (await self.session.execute(stmt)).scalars():
                found[row.settlement_id].append(row)
        return found
