"""The ledger postings the entitlement state machine makes: one per business event, keyed by it."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import select

from cbi_service.accounting import service as ledger_service
from cbi_service.entitlements.models import Entitlement
from cbi_service.entitlements.service import mark_expired, mark_failed, mark_issued, mark_redeemed
from cbi_service.programmes.models import Programme
from ledger import schema
from tests.entitlements.support import in_transaction
from tests.issuance.support import (
    assert_identity,
    balances,
)


async def _keys(session_factory, programme_id: str) -> list[str]:
    t = schema.transactions
    async with session_factory() as session:
        stmt = select(t.c.key).where(t.c.key.startswith(f"prog:{programme_id}:")).order_by(t.c.posted_at, t.c.seq)
        return [key.removeprefix(f"prog:{programme_id}:") for key in (await session.execute(stmt)).scalars()]


async def test_every_posting_is_keyed_by_its_business_event(client, session_factory, voucher_batch):
    actors, programme, batch, (first, _, _) = voucher_batch
    e = first.id
    await in_transaction(session_factory, mark_failed, e, "issuer_unavailable", True)
    await in_transaction(session_factory, mark_issued, e, "prv-1", voucher_code="LATE-ISSU-0001")  # failed → issued
    # two purchases of the same amount are two events
    assert (await in_transaction(session_factory, mark_redeemed, e, 3_000_000, "Tienda 1")).applied
    assert (await in_transaction(session_factory, mark_redeemed, e, 3_000_000, "Tienda 1")).applied
    assert (await in_transaction(session_factory, mark_expired, e)).applied
    keys = [k for k in await _keys(session_factory, programme["id"]) if not k.startswith("funding:")]
    assert keys == [
        f"reservation:{batch['id']}:approved",
        f"release:{e}:failure-1",
        f"reservation:{e}:failure-1",
        f"disbursement:{e}:issued",
        f"redemption:{e}:after-0",
        f"redemption:{e}:after-3000000",
        f"return:{e}:expired",
    ]
    figures = await balances(client, actors, programme["id"])
    assert (figures["redeemed"], figures["returned"]) == ("60000.00", "40000.00")
    assert_identity(figures)


async def test_an_expiry_after_a_failure_posts_nothing_even_while_the_budget_holds(
    client, session_factory, voucher_batch
):
    actors, programme, batch, (first, _, _) = voucher_batch
    await in_transaction(session_factory, mark_failed, first.id, "issuer_unavailable", True)
    before = await balances(client, actors, programme["id"])
    expiry = await in_transaction(session_factory, mark_expired, first.id)
    assert (expiry.outcome, expiry.status) == ("noop", "failed")
    keys = [k for k in await _keys(session_factory, programme["id"]) if not k.startswith("funding:")]
    assert keys == [f"reservation:{batch['id']}:approved", f"release:{first.id}:failure-1"]
    assert await balances(client, actors, programme["id"]) == before


async def test_a_posting_the_ledger_already_holds_is_refused_not_made_twice(client, session_factory, voucher_batch):
    actors, programme, _batch, (first, _, _) = voucher_batch
    # The ledger got ahead of the entitlement (its disbursement is posted, its status still pending).
    async with session_factory.begin() as session:
        row = await session.get(Programme, uuid.UUID(programme["id"]))
        await ledger_service.disburse(session, row, first.id, first.amount_minor)
    with pytest.raises(ledger_service.LedgerOutOfStep):
        await in_transaction(session_factory, mark_issued, first.id, "prv-1", voucher_code="AAAA-BBBB-CCCC")
    figures = await balances(client, actors, programme["id"])
    assert figures["disbursed"] == "100000.00"
    assert_identity(figures)
    async with session_factory() as session:
        assert (await session.get(Entitlement, first.id)).status == "pending"


async def test_concurrent_redemptions_of_one_voucher_both_post(client, session_factory, voucher_batch):
    actors, programme, _batch, (first, _, _) = voucher_batch
    await in_transaction(session_factory, mark_issued, first.id, "prv-1", voucher_code="AAAA-BBBB-CCCC")
    results = await asyncio.gather(
        *(in_transaction(session_factory, mark_redeemed, first.id, 1_000, f"Tienda {n}") for n in range(2))
    )
    assert all(r.applied for r in results)
    figures = await balances(client, actors, programme["id"])
    assert figures["redeemed"] == "20.00"
    assert_identity(figures)
