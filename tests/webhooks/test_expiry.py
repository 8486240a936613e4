"""Vouchers left unspent past the programme's validity expire by themselves; the remainder goes back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from cbi_service.entitlements import service
from cbi_service.jobs.worker import Worker
from tests.issuance.support import assert_identity, balances
from tests.webhooks.support import (
    apply_all,
    deliver,
    entitlement,
    event_body,
    released_entitlements,
    stored_events,
)


def _issued(entitlement_id, at: datetime) -> bytes:
    return event_body(
        "entitlement.issued", entitlement_id, voucher_code=f"V-{entitlement_id.hex[:6]}", timestamp=at.isoformat()
    )


def _redeemed(entitlement_id, amount: str) -> bytes:
    return event_body(
        "voucher.redeemed", entitlement_id, amount={"amount": amount, "currency": "COP"}, merchant="Mercado"
    )


async def test_the_expiry_job_returns_what_is_left_of_due_vouchers(client, api_key_factory, session_factory, settings):
    released = await released_entitlements(client, api_key_factory, session_factory, count=4, voucher_validity_days=7)
    partly_spent, fresh, spent, untouched = released.entitlements
    eight_days_ago = datetime.now(UTC) - timedelta(days=8)
    for target, at in [(partly_spent, eight_days_ago), (fresh, datetime.now(UTC)), (spent, eight_days_ago),
                       (untouched, eight_days_ago)]:  # fmt: skip
        assert (await deliver(client, "vouchers", _issued(target.id, at))).status_code == 202
    await deliver(client, "vouchers", _redeemed(partly_spent.id, "30000.00"))
    await deliver(client, "vouchers", _redeemed(spent.id, "100000.00"))
    await apply_all(session_factory)
    assert (await entitlement(session_factory, untouched.id)).expires_at == eight_days_ago + timedelta(days=7)

    worker = Worker(session_factory, SimpleNamespace(settings=settings))
    await worker.schedule_periodic()
    await worker.run_until_idle()

    statuses = {e.id: (await entitlement(session_factory, e.id)).status for e in released.entitlements}
    assert statuses == {partly_spent.id: "expired", fresh.id: "issued", spent.id: "redeemed", untouched.id: "expired"}
    assert (await entitlement(session_factory, partly_spent.id)).redeemed_minor == 3_000_000
    figures = await balances(client, released.actors, released.programme["id"])
    assert figures["returned"] == "170000.00"
    assert (figures["disbursed"], figures["redeemed"]) == ("230000.00", "130000.00")
    assert_identity(figures)

    found, expired = await service.expire_due_vouchers(session_factory)
    assert (found, expired) == (0, 0), "a second run finds nothing due"


async def test_expiry_by_the_provider_or_by_the_job_whichever_comes_first(client, api_key_factory, session_factory):
    released = await released_entitlements(client, api_key_factory, session_factory, count=2, voucher_validity_days=7)
    by_provider, by_job = released.entitlements
    long_ago = datetime.now(UTC) - timedelta(days=30)
    for target in (by_provider, by_job):
        await deliver(client, "vouchers", _issued(target.id, long_ago))
    await deliver(client, "vouchers", event_body("voucher.expired", by_provider.id), webhook_id="msg_provider_first")
    await apply_all(session_factory)

    assert await service.expire_due_vouchers(session_factory) == (1, 1)
    await deliver(client, "vouchers", event_body("voucher.expired", by_job.id), webhook_id="msg_provider_late")
    await deliver(client, "vouchers", _redeemed(by_job.id, "1000.00"), webhook_id="msg_spent_too_late")
    await apply_all(session_factory)

    outcomes = {e.webhook_id: e.status for e in await stored_events(session_factory)}
    assert outcomes["msg_provider_first"] == "applied"
    assert outcomes["msg_provider_late"] == "ignored"
    assert outcomes["msg_spent_too_late"] == "refused", "spending an expired voucher is kept for review"
    figures = await balances(client, released.actors, released.programme["id"])
    assert (figures["returned"], figures["disbursed"], figures["redeemed"]) == ("200000.00", "0.00", "0.00")
    assert_identity(figures)


async def test_programmes_without_a_validity_never_expire_vouchers(client, api_key_factory, session_factory):
    released = await released_entitlements(client, api_key_factory, session_factory, count=1)
    (voucher,) = released.entitlements
    await deliver(client, "vouchers", _issued(voucher.id, datetime.now(UTC) - timedelta(days=3650)))
    await apply_all(session_factory)
    assert await service.expire_due_vouchers(session_factory) == (0, 0)
    assert (await entitlement(session_factory, voucher.id)).status == "issued"
