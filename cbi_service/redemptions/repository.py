"""Redemption records. An offline sync writes its scans in one statement whatever their number, the unique
index on (merchant, device, local id) deciding which are new: a scan already synced is left as it was."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ARRAY, BigInteger, DateTime, Row, Text, Uuid, any_, bindparam, insert, select, text

from cbi_service.kit.repository import Repository
from cbi_service.redemptions.models import VoucherRedemption

_UUIDS = ARRAY(Uuid())
_TEXTS = ARRAY(Text())
_INSERT_SCANS = text(
    """
    INSERT INTO voucher_redemptions AS r
           (id, merchant_id, voucher_id, currency, amount_minor, status, channel, device_id, local_id,
            scanned_at, reason)
    SELECT v.id, :merchant, v.voucher, v.currency, v.amount, v.status, 'offline', :device, v.local_id,
           v.scanned_at, v.reason
      FROM unnest(:ids, :vouchers, :currencies, :amounts, :statuses, :local_ids, :scanned, :reasons)
           AS v(id, voucher, currency, amount, status, local_id, scanned_at, reason)
    ON CONFLICT (merchant_id, device_id, local_id) DO NOTHING
    RETURNING r.local_id
    """
).bindparams(
    bindparam("ids", type_=_UUIDS),
    bindparam("vouchers", type_=_UUIDS),
    bindparam("amounts", type_=ARRAY(BigInteger())),
    bindparam("scanned", type_=ARRAY(DateTime(timezone=True))),
    *(bindparam(name, type_=_TEXTS) for name in ("currencies", "statuses", "local_ids", "reasons")),
)
"""One statement records a sync's scans; `uq_voucher_redemptions_device_item` turns away those synced before."""
_CONFLICTS = text(
    """
    UPDATE voucher_redemptions AS r SET status = 'conflict', reason = v.reason
      FROM unnest(:ids, :reasons) AS v(id, reason)
     WHERE r.id = v.id AND r.id = ANY (:ids)
    """
).bindparams(bindparam("ids", type_=_UUIDS), bindparam("reasons", type_=_TEXTS))


@dataclass(frozen=True)
class Scan:
    """One scan of a sync as it is first recorded: `accepted` until its voucher says otherwise, or
    `rejected` with its reason."""

    id: uuid.UUID
    local_id: str
    voucher_id: uuid.UUID | None
    currency: str
    amount_minor: int
    status: str
    scanned_at: datetime
    reason: str | None


class OnlineRecord(NamedTuple):
    """An online redemption as recorded: accepted when it is written."""

    id: uuid.UUID
    merchant_id: uuid.UUID
    voucher_id: uuid.UUID
    currency: str
    amount_minor: int
    scanned_at: datetime


class RedemptionRepository(Repository[VoucherRedemption]):
    model = VoucherRedemption
    server_set = ("created_at",)

    async def insert_scans(self, merchant_id: uuid.UUID, device_id: str, scans: Sequence[Scan]) -> set[str]:
        """Record the scans the device had not synced before; returns their local ids."""
        params: dict[str, Any] = {
            "merchant": merchant_id,
            "device": device_id,
            "ids": [s.id for s in scans],
            "vouchers": [s.voucher_id for s in scans],
            "currencies": [s.currency for s in scans],
            "amounts": [s.amount_minor for s in scans],
            "statuses": [s.status for s in scans],
            "local_ids": [s.local_id for s in scans],
            "scanned": [s.scanned_at for s in scans],
            "reasons": [s.reason for s in scans],
        }
        return set((await self.session.execute(_INSERT_SCANS, params)).scalars())

    async def record_online(self, redemptions: Sequence[OnlineRecord]) -> None:
        """Online redemptions, accepted: one INSERT however many, nothing read back."""
        if redemptions:
            rows = [{**r._asdict(), "status": "accepted", "channel": "online"} for r in redemptions]
            await self.session.execute(insert(VoucherRedemption), rows)

    async def mark_conflicts(self, reasons: dict[uuid.UUID, str]) -> None:
        if reasons:
            await self.session.execute(_CONFLICTS, {"ids": list(reasons), "reasons": list(reasons.values())})

    async def synced(
        self, merchant_id: uuid.UUID, device_id: str, local_ids: Sequence[str]
    ) -> builtins.list[Row[str | None, uuid.UUID, str, str | None]]:
        """(local_id, id, status, reason) of the device's scans among `local_ids` synced before."""
        stmt = select(
            VoucherRedemption.local_id, VoucherRedemption.id, VoucherRedemption.status, VoucherRedemption.reason
        ).where(
            VoucherRedemption.merchant_id == merchant_id,
            VoucherRedemption.device_id == device_id,
            VoucherRedemption.local_id == any_(bindparam("local_ids", list(local_ids), type_=_TEXTS)),
        )
        return list((await self.session.execute(stmt)).all())

    async def list(
        self,
        *,
        after_id: uuid.UUID | None,
        limit: int,
        merchant_id: uuid.UUID | None,
        status: str | None,
        voucher_id: uuid.UUID | None,
    ) -> Sequence[VoucherRedemption]:
        stmt = select(VoucherRedemption)
        if merchant_id is not None:
            stmt = stmt.where(VoucherRedemption.merchant_id == merchant_id)
        if status is not None:
            stmt = stmt.where(VoucherRedemption.status == status)
        if voucher_id is not None:
            stmt = stmt.where(VoucherRedemption.voucher_id == voucher_id)
        return await self.page(stmt, after_id, limit)
