"""The ledger postings payments make, each named after the business event that causes it.

Money moves through a programme's accounts as: available → committed (the last approval reserves a
batch; a retry re-reserves one entitlement) → disbursed (issue) → redeemed (spent at a merchant); a
failure or cancel before issue releases the reservation back to available, and an expired or cancelled
voucher returns its unspent part to available. Every call runs in the caller's transaction, so a state
change and its posting commit together or not at all.

Each posting's ledger key names its event with facts the caller holds under the batch's or the
entitlement's row lock, so it is the same in any retry of the unit of work and different for every
other event:

    batch reserved on approval          reservation:{batch}:approved
    approved batch cancelled            release:{batch}:cancelled
    entitlement's k-th failure          release:{entitlement}:failure-{k}
    re-reserved after its k-th failure  reservation:{entitlement}:failure-{k}
    cancelled before issue              release:{entitlement}:cancelled
    issued                              disbursement:{entitlement}:issued
    redemption when n minor units       redemption:{entitlement}:after-{n}
    were already redeemed
    redemption at a merchant the        redemption:{entitlement}:at-{redemption}
    agency pays (a paper voucher)
    expired or cancelled voucher        return:{entitlement}:expired | cancelled
    merchant settlement paid            settlement:{settlement}:paid

k counts the entitlement's status changes to `failed` in its history, which the caller (the entitlement's
owner) passes as `failures`; n is its `redeemed_minor`, which every redemption raises. The functions taking
an entitlement must be called before its state changes (the current status and history are part of the
event).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.accounting import service as ledger
from cbi_service.accounting.service import MerchantPayment, MerchantRedemption, ProgrammeRef

__all__ = ["MerchantPayment", "MerchantRedemption"]


class PaidEntitlement(Protocol):
    """What a posting needs of an entitlement: the subject of its keys and the amounts it moves."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def amount_minor(self) -> int: ...

    @property
    def redeemed_minor(self) -> int: ...


async def available_minor(session: AsyncSession, programme: ProgrammeRef) -> int:
    return (await ledger.programme_balances(session, programme)).available


async def reserve_batch(session: AsyncSession, programme: ProgrammeRef, batch_id: uuid.UUID, amount: int) -> None:
    await ledger.reserve(session, programme, batch_id, amount, event="approved")


async def release_batch_reservation(
    session: AsyncSession, programme: ProgrammeRef, batch_id: uuid.UUID, amount: int
) -> None:
    """An approved batch cancelled: what is still reserved for it goes back to available."""
    if amount > 0:
        await ledger.release_reservation(session, programme, batch_id, amount, event="cancelled")


async def reserve_after_failure(
    session: AsyncSession, programme: ProgrammeRef, entitlement: PaidEntitlement, *, failures: int
) -> None:
    """A failed entitlement is sent again (retry, or a late `issued`): its amount is reserved again."""
    await ledger.reserve(session, programme, entitlement.id, entitlement.amount_minor, event=f"failure-{failures}")


async def release_on_failure(
    session: AsyncSession, programme: ProgrammeRef, entitlement: PaidEntitlement, *, failures: int
) -> None:
    """Failed before issue: its share of the reservation goes back to available (`failures`: those before)."""
    failure = failures + 1
    await ledger.release_reservation(
        session, programme, entitlement.id, entitlement.amount_minor, event=f"failure-{failure}"
    )


async def release_on_cancel(session: AsyncSession, programme: ProgrammeRef, entitlement: PaidEntitlement) -> None:
    """Cancelled before issue: its share of the reservation goes back to available."""
    await ledger.release_reservation(session, programme, entitlement.id, entitlement.amount_minor, event="cancelled")


async def disburse_entitlement(session: AsyncSession, programme: ProgrammeRef, entitlement: PaidEntitlement) -> None:
    await ledger.disburse(session, programme, entitlement.id, entitlement.amount_minor)


async def disburse_many(session: AsyncSession, items: Sequence[tuple[ProgrammeRef, PaidEntitlement]]) -> None:
    """One bulk posting for a chunk of issues (accounts locked once): what keeps issuance fast at scale."""
    await ledger.disburse_many(session, [(programme, e.id, e.amount_minor) for programme, e in items])


async def redeem_entitlement(
    session: AsyncSession, programme: ProgrammeRef, entitlement: PaidEntitlement, amount: int
) -> None:
    await ledger.redeem(session, programme, entitlement.id, amount, event=f"after-{entitlement.redeemed_minor}")


async def redeem_at_merchants(session: AsyncSession, redemptions: Sequence[MerchantRedemption]) -> None:
    """Paper vouchers spent at merchants: disbursed -> each merchant's payable, one bulk posting. The
    redemption's own id names the event: the caller records each redemption once, under the voucher's lock."""
    await ledger.redeem_at_merchants(session, redemptions)


async def pay_merchant(
    session: AsyncSession,
    payments: Sequence[MerchantPayment],
    merchant_id: uuid.UUID,
    settlement_id: uuid.UUID,
    bank_reference: str,
) -> None:
    """A merchant settlement paid by the bank: each programme's payable -> bank. The caller moves the
    settlement to `paid` under its row lock, once."""
    await ledger.pay_merchant(session, payments, merchant_id, settlement_id, bank_reference)


async def return_entitlement(
    session: AsyncSession, programme: ProgrammeRef, entitlement: PaidEntitlement, amount: int, reason: str
) -> None:
    """Issued money coming back (expired or cancelled voucher): counted in the programme's `returned`."""
    if amount > 0:
        await ledger.return_to_budget(session, programme, entitlement.id, amount, reason)
