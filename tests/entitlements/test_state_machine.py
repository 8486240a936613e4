"""The entitlement state machine as the worker and the webhook inbox drive it: forwards only, with the
ledger following every step and the identity funded = available + committed + disbursed holding."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from cbi_service.audit.models import AuditEvent
from cbi_service.entitlements.service import (
    Issued,
    UnknownEntitlement,
    get_entitlement,
    mark_expired,
    mark_failed,
    mark_issued,
    mark_issued_many,
    mark_redeemed,
)
from tests.entitlements.support import in_transaction
from tests.issuance.support import (
    assert_identity,
    balances,
)


async def test_issue_redeem_in_parts_and_never_backwards(client, session_factory, voucher_batch):
    actors, programme, _batch, (first, _, _) = voucher_batch
    issued = await in_transaction(session_factory, mark_issued, first.id, "prv-1", voucher_code="ABCD-EFGH-JKLM")
    assert (issued.outcome, issued.previous_status, issued.status) == ("applied", "pending", "issued")
    figures = await balances(client, actors, programme["id"])
    assert (figures["committed"], figures["disbursed"]) == ("200000.00", "100000.00")
    assert_identity(figures)

    again = await in_transaction(session_factory, mark_issued, first.id, "prv-1", voucher_code="ABCD-EFGH-JKLM")
    assert again.outcome == "noop"
    assert (await in_transaction(session_factory, mark_failed, first.id, "late", True)).outcome == "noop"

    part = await in_transaction(session_factory, mark_redeemed, first.id, 3_000_000, "Tienda 1")
    assert (part.outcome, part.status) == ("applied", "redeemed")
    too_much = await in_transaction(session_factory, mark_redeemed, first.id, 7_000_001, "Tienda 2")
    assert too_much.outcome == "refused"
    assert "exceeds" in (too_much.detail or "")
    rest = await in_transaction(session_factory, mark_redeemed, first.id, 7_000_000, "Tienda 2")
    assert rest.applied
    assert (await in_transaction(session_factory, mark_expired, first.id)).outcome == "noop"
    assert (await in_transaction(session_factory, mark_issued, first.id, "prv-1")).outcome == "noop"

    async with session_factory() as session:
        view = await get_entitlement(session, first.id)
    assert view.status == "redeemed"
    assert (view.redeemed.amount, view.remaining.amount) == ("100000.00", "0.00")
    assert view.voucher_code == "ABCD-EFGH-JKLM"
    assert view.expires_at is not None
    assert view.issued_at is not None
    assert (view.expires_at - view.issued_at).days == 30
    assert [h.status for h in view.history or []] == ["pending", "issued", "redeemed", "redeemed"]
    figures = await balances(client, actors, programme["id"])
    assert (figures["disbursed"], figures["redeemed"]) == ("100000.00", "100000.00")
    assert_identity(figures)
    async with session_factory() as session:
        actions = list(
            (
                await session.execute(
                    select(AuditEvent.action).where(AuditEvent.resource_id == str(first.id)).order_by(AuditEvent.id)
                )
            ).scalars()
        )
    assert actions == ["entitlement.issued", "entitlement.redeemed", "entitlement.redeemed"]


async def test_out_of_order_events_and_failures_keep_the_books_right(client, session_factory, voucher_batch):
    actors, programme, batch, (first, second, third) = voucher_batch
    # a redemption that overtook its issue event: the issue is posted first
    early = await in_transaction(session_factory, mark_redeemed, first.id, 4_000_000, "Tienda")
    assert (early.previous_status, early.status) == ("pending", "redeemed")
    late = await in_transaction(session_factory, mark_issued, first.id, "prv-1", voucher_code="LATE-CODE-0001")
    assert late.outcome == "noop"
    expired = await in_transaction(session_factory, mark_expired, first.id)
    assert (expired.outcome, expired.status) == ("applied", "expired")
    assert (await in_transaction(session_factory, mark_redeemed, first.id, 100, "Tienda")).outcome == "refused"

    failed = await in_transaction(session_factory, mark_failed, second.id, "kyc_incomplete", False)
    assert (failed.status, failed.applied) == ("failed", True)
    assert (await in_transaction(session_factory, mark_failed, second.id, "again", False)).outcome == "noop"
    figures = await balances(client, actors, programme["id"])
    assert figures["available"] == "860000.00"  # 700k never reserved + 100k failed + 60k unspent
    assert figures["returned"] == "60000.00"
    assert_identity(figures)
    # the provider had issued after all (a reordered stream): reserve again and disburse
    revived = await in_transaction(session_factory, mark_issued, second.id, "prv-2", voucher_code="REVI-VED0-0002")
    assert (revived.previous_status, revived.status) == ("failed", "issued")
    figures = await balances(client, actors, programme["id"])
    assert figures["available"] == "760000.00"
    assert_identity(figures)

    detail = (await client.get(f"/v1/payment-batches/{batch['id']}", headers=actors.auditor)).json()
    assert detail["status"] == "processing"
    await in_transaction(session_factory, mark_issued, third.id, "prv-3", voucher_code="THRE-E000-0003")
    detail = (await client.get(f"/v1/payment-batches/{batch['id']}", headers=actors.auditor)).json()
    assert detail["status"] == "completed"
    assert detail["counts"] == {"expired": 1, "issued": 2}
    with pytest.raises(UnknownEntitlement):
        await in_transaction(session_factory, mark_issued, uuid.uuid4(), "prv-x")


async def test_a_chunk_of_confirmations_follows_the_same_rules(client, session_factory, voucher_batch):
    actors, programme, batch, (first, second, third) = voucher_batch
    await in_transaction(session_factory, mark_failed, third.id, "issuer_unavailable", True)
    unknown = uuid.uuid4()
    chunk = [
        Issued(first.id, "prv-1", voucher_code="AAAA-0000-0001"),
        Issued(first.id, "prv-1", voucher_code="AAAA-0000-0001"),
        Issued(second.id, "prv-2", voucher_code="AAAA-0000-0002"),
        Issued(third.id, "prv-3", voucher_code="AAAA-0000-0003"),
        Issued(unknown, "prv-x"),
    ]
    results = await in_transaction(session_factory, mark_issued_many, chunk, source="webhook:vouchers")
    assert unknown not in results
    assert {i: (r.outcome, r.previous_status) for i, r in results.items()} == {
        first.id: ("applied", "pending"),
        second.id: ("applied", "pending"),
        third.id: ("applied", "failed"),
    }
    again = await in_transaction(session_factory, mark_issued_many, chunk[:1], source="webhook:vouchers")
    assert again[first.id].outcome == "noop"
    async with session_factory() as session:
        view = await get_entitlement(session, first.id)
    assert (view.status, view.voucher_code, view.provider_ref) == ("issued", "AAAA-0000-0001", "prv-1")
    assert view.expires_at is not None
    assert [(h.status, h.actor) for h in view.history or []] == [("pending", None), ("issued", "webhook:vouchers")]
    figures = await balances(client, actors, programme["id"])
    assert (figures["disbursed"], figures["committed"], figures["available"]) == ("300000.00", "0.00", "700000.00")
    assert_identity(figures)
    detail = (await client.get(f"/v1/payment-batches/{batch['id']}", headers=actors.auditor)).json()
    assert (detail["status"], detail["counts"]) == ("completed", {"issued": 3})
