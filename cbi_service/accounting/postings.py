"""The ledger postings disbursement makes, each named after the business event that causes it.

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
    expired or cancelled voucher        return:{entitlement}:expired | cancelled

k counts the entitlement's status changes to `failed` in its history; n is its `redeemed_minor`, which
every redemption raises. The functions taking an entitlement must be called before its state changes
(the current status and history are part of the event).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.accounting import service as ledger
from cbi_service.entitlements.models import Entitlement
from cbi_service.entitlements.repository import EntitlementRepository
from cbi_service.programmes.models import Programme


async def available_minor(session: AsyncSession, programme: Programme) -> int:
    return (await ledger.programme_balances(session, programme)).available


async def reserve_batch(session: AsyncSession, programme: Programme, batch_id: uuid.UUID, amount: int) -> None:
    await ledger.reserve(session, programme, batch_id, amount, event="approved")


async def release_batch(session: AsyncSession, programme: Programme, batch_id: uuid.UUID, amount: int) -> None:
    """An approved batch cancelled: what is still reserved for it goes back to available."""
    if amount > 0:
        await ledger.release_reservation(session, programme, batch_id, amount, event="cancelled")


async def _failures(session: AsyncSession, entitlement: Entitlement) -> int:
    return await EntitlementRepository(session).count_events(entitlement.id, "failed")


async def reserve_after_failure(session: AsyncSession, programme: Programme, entitlement: Entitlement) -> None:
    """A failed entitlement is sent again (retry, or a late `issued`): its amount is reserved again."""
    failures = await _failures(session, entitlement)
    await ledger.reserve(session, programme, entitlement.id, entitlement.amount_minor, event=f"failure-{failures}")


async def release_on_failure(session: AsyncSession, programme: Programme, entitlement: Entitlement) -> None:
    """Failed before issue: its share of the reservation goes back to available."""
    failure = await _failures(session, entitlement) + 1
    await ledger.release_reservation(
        session, programme, entitlement.id, entitlement.amount_minor, event=f"failure-{failure}"
    )


async def release_on_cancel(session: AsyncSession, programme: Programme, entitlement: Entitlement) -> None:
    """Cancelled before issue: its share of the reservation goes back to available."""
    await ledger.release_reservation(session, programme, entitlement.id, entitlement.amount_minor, event="cancelled")


async def disburse_entitlement(session: AsyncSession, programme: Programme, entitlement: Entitlement) -> None:
    await ledger.disburse(session, programme, entitlement.id, entitlement.amount_minor)


async def disburse_many(session: AsyncSession, items: Sequence[tuple[Programme, Entitlement]]) -> None:
    """One bulk posting for a chunk of issues (accounts locked once): what keeps issuance fast at scale."""
    await ledger.disburse_many(session, [(programme, e.id, e.amount_minor) for programme, e in items])


async def redeem_entitlement(
    session: AsyncSession, programme: Programme, entitlement: Entitlement, amount: int
) -> None:
    await ledger.redeem(session, programme, entitlement.id, amount, event=f"after-{entitlement.redeemed_minor}")


async def return_entitlement(
    session: AsyncSession, programme: Programme, entitlement: Entitlement, amount: int, reason: str
) -> None:
    """Issued money coming back (expired or cancelled voucher): counted in the programme's `returned`."""
    if amount > 0:
        await ledger.return_to_budget(session, programme, entitlement.id, amount, reason)
