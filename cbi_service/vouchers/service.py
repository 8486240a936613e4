"""Printing a batch's paper vouchers (§14 Printing), audited.

The vouchers are read a chunk at a time in id order, their holders' names opened for that chunk only
(by `beneficiaries`, which hands out the given names and family initial, never the rest), and drawn
onto the sheets in a worker thread so the event loop keeps serving while segno encodes the QR codes.
Only `issued` vouchers are printed: a redeemed, expired or cancelled one is worth nothing on paper.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.audit.service import record_audit
from cbi_service.auth.roles import Principal
from cbi_service.batches import service as batches
from cbi_service.beneficiaries import service as beneficiaries
from cbi_service.entitlements import service as entitlements
from cbi_service.kit.errors import Conflict
from cbi_service.programmes.service import get_programme
from cbi_service.vouchers.sheets import VoucherFace, VoucherSheets

PRINT_CHUNK = 500
"""Vouchers read, named and drawn per step: what the request holds of them besides the sheets."""
MECHANISM = "paper_voucher"
PRINTED = "batch.vouchers_printed"


@dataclass(frozen=True, slots=True)
class PrintedVouchers:
    pdf: bytes
    count: int


async def print_vouchers(session: AsyncSession, principal: Principal, batch_id: uuid.UUID) -> PrintedVouchers:
    """The sheets of every issued voucher of the batch; 409 for a batch of another mechanism, or with no
    voucher issued yet. The audit event counts them and names nobody."""
    batch = await batches.get_batch(session, batch_id)
    programme = await get_programme(session, batch.programme_id)
    if programme.delivery_mechanism != MECHANISM:
        raise Conflict(
            "Only a paper-voucher batch has vouchers to print; "
            f"this one's programme delivers {programme.delivery_mechanism}."
        )
    sheets = VoucherSheets(f"{programme.name}: {batch.name}")
    after: uuid.UUID | None = None
    while chunk := await entitlements.printable_vouchers(session, batch.id, after_id=after, limit=PRINT_CHUNK):
        holders = await beneficiaries.holder_names(session, [voucher.beneficiary_id for voucher in chunk])
        faces = [
            VoucherFace(
                token=voucher.token,
                code=voucher.code,
                amount_minor=voucher.amount_minor,
                currency=voucher.currency,
                expires_at=voucher.expires_at,
                programme=programme.name,
                holder=holders.get(voucher.beneficiary_id),
            )
            for voucher in chunk
        ]
        await asyncio.to_thread(sheets.add, faces)
        after = chunk[-1].id
    if sheets.count == 0:
        raise Conflict(f"The batch has no issued vouchers to print yet (it is {batch.status}).")
    pdf = await asyncio.to_thread(sheets.output)
    await record_audit(session, principal, PRINTED, "payment_batch", batch.id, None, {"count": sheets.count})
    return PrintedVouchers(pdf=pdf, count=sheets.count)
