"""The ledger postings disbursement makes, each named after the business event that causes it.

Money moves through a programme's accounts as: available → committed (the last approval reserves a
batch; a retry re-reserves one entitlement) → disbursed (issue) → redeemed (spent at a merchant); a
failure or cancel before issue releases the reservation back to available, and an expired or cancelled
voucher returns its unspent part to available. Every call runs in the caller's transaction, so a state
change and its posting commit together or not at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.entitlements.models import Entitlement
from cbi_service.ledger_api import service as ledger
from cbi_service.programmes.models import Programme


async def available_minor(session: AsyncSession, programme: Programme) -> int:
    return (await ledger.programme_balances(session, programme)).available


async def reserve_batch(session: AsyncSession, programme: Programme, batch_id: uuid.UUID, amount: int) -> None:
    await ledger.reserve(session, programme, batch_id, amount)


async def release_batch(session: AsyncSession, programme: Programme, batch_id: uuid.UUID, amount: int) -> None:
    if amount > 0:
        await ledger.release_reservation(session, programme, batch_id, amount)


async def reserve_entitlement(session: AsyncSession, programme: Programme, entitlement: Entitlement) -> None:
    await ledger.reserve(session, programme, entitlement.id, entitlement.amount_minor)


async def release_entitlement(session: AsyncSession, programme: Programme, entitlement: Entitlement) -> None:
    """Failed or cancelled before issue: its share of the reservation goes back to available."""
    await ledger.release_reservation(session, programme, entitlement.id, entitlement.amount_minor)


async def disburse_entitlement(session: AsyncSession, programme: Programme, entitlement: Entitlement) -> None:
    await ledger.disburse(session, programme, entitlement.id, entitlement.amount_minor)


async def disburse_many(session: AsyncSession, items: Sequence[tuple[Programme, Entitlement]]) -> None:
    """One bulk posting for a chunk of issues (accounts locked once): what keeps issuance fast at scale."""
    await ledger.disburse_many(session, [(programme, e.id, e.amount_minor) for programme, e in items])


async def redeem_entitlement(
    session: AsyncSession, programme: Programme, entitlement: Entitlement, amount: int
) -> None:
    await ledger.redeem(session, programme, entitlement.id, amount)


async def return_entitlement(
    session: AsyncSession, programme: Programme, entitlement: Entitlement, amount: int, reason: str
) -> None:
    """Issued money coming back (expired or cancelled voucher): counted in the programme's `returned`."""
    if amount > 0:
        await ledger.return_to_budget(session, programme, entitlement.id, amount, reason)
