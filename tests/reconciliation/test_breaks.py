"""Provider confirmations the ledger cannot record become visible reconciliation breaks, never failed jobs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY
from sqlalchemy import select, text

from cbi_service.audit.models import AuditEvent
from cbi_service.entitlements import service
from tests.issuance.support import (
    approved_batch,
    assert_identity,
    balances,
    entitlements_of,
    fund,
    make_actors,
    release,
    seed_beneficiaries,
)
from tests.support import assert_problem, make_programme
from tests.webhooks.support import (
    apply_all,
    card_issued,
    deliver,
    entitlement,
    event_body,
    released_entitlements,
    stored_events,
)


def _breaks_counted(kind: str) -> float:
    return REGISTRY.get_sample_value("cbi_reconciliation_breaks_total", {"kind": kind}) or 0.0


async def _listed(client, headers, **params) -> list[dict]:
    response = await client.get("/v1/reconciliations/breaks", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def _audited(session_factory, break_id: str) -> list[AuditEvent]:
    async with session_factory() as session:
        found = await session.execute(
            select(AuditEvent).where(
                AuditEvent.action == "reconciliation_break.recorded", AuditEvent.resource_id == break_id
            )
        )
        return list(found.scalars())


async def _failed_then_budget_taken(client, api_key_factory, session_factory, mechanism="prepaid_card"):
    """An entitlement (a card load unless told) that failed, whose released budget a second batch then
    reserved in full."""
    actors = await make_actors(api_key_factory)
    provider = "vouchers" if mechanism == "voucher" else "cards"
    programme = await make_programme(client, actors, delivery_mechanism=mechanism, provider=provider)
    await fund(client, actors, programme["id"], "100000.00")
    first_person, second_person = await seed_beneficiaries(session_factory, programme["id"], 2)
    first_batch = await approved_batch(client, actors, programme["id"], beneficiary_ids=[str(first_person)])
    assert (await release(client, actors, first_batch["id"])).status_code == 200
    (failed,) = await entitlements_of(session_factory, first_batch["id"])
    early = datetime.now(UTC) - timedelta(minutes=2)
    body = event_body("entitlement.failed", failed.id, reason="timeout", retryable=True, timestamp=early.isoformat())
    assert (await deliver(client, provider, body)).status_code == 202
    await apply_all(session_factory)
    assert (await entitlement(session_factory, failed.id)).status == "failed"
    await approved_batch(client, actors, programme["id"], beneficiary_ids=[str(second_person)], cycle="2026-12")
    figures = await balances(client, actors, programme["id"])
    assert (figures["available"], figures["committed"]) == ("0.00", "100000.00")
    return actors, programme, failed


async def test_a_late_load_after_a_failure_whose_budget_was_taken_is_a_break(client, api_key_factory, session_factory):
    actors, programme, failed = await _failed_then_budget_taken(client, api_key_factory, session_factory)
    counted = _breaks_counted("issued_after_failure")

    assert (await deliver(client, "cards", card_issued(failed.id, provider_ref="prv-late"))).status_code == 202
    await apply_all(session_factory)

    late = (await stored_events(session_factory))[-1]
    assert (late.status, late.attempts) == ("refused", 1), "refused at once, not failed after retries"
    assert "reconciliation break" in (late.detail or "")
    assert (await entitlement(session_factory, failed.id)).status == "failed"
    figures = await balances(client, actors, programme["id"])
    assert (figures["available"], figures["committed"], figures["disbursed"]) == ("0.00", "100000.00", "0.00")
    assert_identity(figures)

    (found,) = await _listed(client, actors.finance)
    assert found["kind"] == "issued_after_failure"
    assert (found["entitlement_id"], found["webhook_event_id"]) == (str(failed.id), str(late.id))
    assert (found["provider"], found["provider_ref"], found["entitlement_status"]) == ("cards", "prv-late", "failed")
    assert found["amount"] == {"amount": "100000.00", "currency": "COP"}
    assert found["ledger_movement"] == {"from": "available", "to": "disbursed", "amount": found["amount"]}
    assert found["available"] == {"amount": "0.00", "currency": "COP"}
    assert await _audited(session_factory, found["id"])
    assert _breaks_counted("issued_after_failure") == counted + 1
    metrics = await client.get("/metrics")
    assert 'cbi_reconciliation_breaks_total{kind="issued_after_failure"}' in metrics.text

    again = card_issued(failed.id, provider_ref="prv-late")
    assert (await deliver(client, "cards", again)).status_code == 202
    await apply_all(session_factory)
    assert len(await _listed(client, actors.auditor)) == 1, "another report of the same load is the same break"
    assert _breaks_counted("issued_after_failure") == counted + 1


async def test_a_load_confirmed_after_a_cancel_before_issue_is_a_break(client, api_key_factory, session_factory):
    actors, _, failed = await _failed_then_budget_taken(client, api_key_factory, session_factory)
    async with session_factory.begin() as session:  # cancelled while failed: nothing left to release
        await session.execute(text("UPDATE entitlements SET status = 'cancelled' WHERE id = :id"), {"id": failed.id})
    assert (await deliver(client, "cards", card_issued(failed.id))).status_code == 202
    await apply_all(session_factory)
    (found,) = await _listed(client, actors.finance, kind="issued_after_cancel")
    assert (found["entitlement_id"], found["entitlement_status"]) == (str(failed.id), "cancelled")
    assert (await stored_events(session_factory))[-1].status == "refused"
    assert await _listed(client, actors.finance, kind="issued_after_failure") == []


async def test_a_redemption_stamped_before_an_applied_expiry_is_a_break(client, api_key_factory, session_factory):
    released = await released_entitlements(client, api_key_factory, session_factory, count=1, voucher_validity_days=7)
    (voucher,) = released.entitlements
    issued_at = datetime.now(UTC) - timedelta(days=8)
    body = event_body("entitlement.issued", voucher.id, voucher_code="V-1", timestamp=issued_at.isoformat())
    await deliver(client, "vouchers", body)
    await apply_all(session_factory)
    assert await service.expire_due_vouchers(session_factory) == (1, 1)
    counted = _breaks_counted("redeemed_after_expiry")

    def redemption(amount: str, at: datetime) -> bytes:
        money = {"amount": amount, "currency": "COP"}
        return event_body("voucher.redeemed", voucher.id, amount=money, merchant="Tienda", timestamp=at.isoformat())

    await deliver(client, "vouchers", redemption("30000.00", issued_at + timedelta(days=5)))
    await deliver(client, "vouchers", redemption("20000.00", datetime.now(UTC)))  # after the expiry: not valid
    await apply_all(session_factory)

    before_expiry, after_expiry = (await stored_events(session_factory))[-2:]
    assert before_expiry.status == after_expiry.status == "refused"
    assert "reconciliation break" in (before_expiry.detail or "")
    assert "reconciliation break" not in (after_expiry.detail or "")
    (found,) = await _listed(client, released.actors.auditor, provider="vouchers")
    assert (found["kind"], found["webhook_event_id"]) == ("redeemed_after_expiry", str(before_expiry.id))
    assert found["ledger_movement"] == {
        "from": "available",
        "to": "redeemed",
        "amount": {"amount": "30000.00", "currency": "COP"},
    }
    assert _breaks_counted("redeemed_after_expiry") == counted + 1
    assert (await entitlement(session_factory, voucher.id)).status == "expired"
    figures = await balances(client, released.actors, released.programme["id"])
    assert (figures["returned"], figures["redeemed"]) == ("100000.00", "0.00")


def _redemption(voucher_id, amount: str) -> bytes:
    money = {"amount": amount, "currency": "COP"}
    return event_body("voucher.redeemed", voucher_id, amount=money, merchant="Tienda", provider_ref="prv-spent")


async def test_a_redemption_after_a_failure_whose_budget_was_taken_is_a_break(client, api_key_factory, session_factory):
    actors, programme, failed = await _failed_then_budget_taken(
        client, api_key_factory, session_factory, mechanism="voucher"
    )
    before = await balances(client, actors, programme["id"])
    counted = _breaks_counted("redeemed_after_failure")

    # The provider had issued the voucher after all, and it is spent in two purchases.
    for amount in ("30000.00", "20000.00"):
        assert (await deliver(client, "vouchers", _redemption(failed.id, amount))).status_code == 202
    await apply_all(session_factory)

    first, second = (await stored_events(session_factory))[-2:]
    for event in (first, second):
        assert (event.status, event.attempts) == ("refused", 1), "refused at once, not failed after retries"
        assert "reconciliation break (redeemed_after_failure)" in (event.detail or "")
    kept = await entitlement(session_factory, failed.id)
    assert (kept.status, kept.redeemed_minor) == ("failed", 0)
    after = await balances(client, actors, programme["id"])
    assert after == before, "the ledger cannot record the redemption: nothing moves"
    assert_identity(after)

    found = await _listed(client, actors.auditor, kind="redeemed_after_failure")
    assert [item["webhook_event_id"] for item in found] == [str(first.id), str(second.id)]
    assert [item["amount"]["amount"] for item in found] == ["30000.00", "20000.00"]
    for item in found:
        assert (item["entitlement_id"], item["entitlement_status"]) == (str(failed.id), "failed")
        assert (item["provider"], item["provider_ref"], item["event_type"]) == (
            "vouchers",
            "prv-spent",
            "voucher.redeemed",
        )
        assert item["ledger_movement"] == {"from": "available", "to": "redeemed", "amount": item["amount"]}
        assert item["available"] == {"amount": "0.00", "currency": "COP"}
        assert await _audited(session_factory, item["id"])
    assert _breaks_counted("redeemed_after_failure") == counted + 2
    metrics = await client.get("/metrics")
    assert 'cbi_reconciliation_breaks_total{kind="redeemed_after_failure"}' in metrics.text


async def test_a_redemption_after_a_failure_is_posted_while_the_budget_holds(client, api_key_factory, session_factory):
    released = await released_entitlements(client, api_key_factory, session_factory, count=1)
    (voucher,) = released.entitlements
    failure = event_body("entitlement.failed", voucher.id, reason="timeout", retryable=True)
    await deliver(client, "vouchers", failure)
    await apply_all(session_factory)
    assert (await entitlement(session_factory, voucher.id)).status == "failed"

    await deliver(client, "vouchers", _redemption(voucher.id, "30000.00"))
    await apply_all(session_factory)

    assert (await stored_events(session_factory))[-1].status == "applied"
    spent = await entitlement(session_factory, voucher.id)
    assert (spent.status, spent.redeemed_minor) == ("redeemed", 3_000_000)
    figures = await balances(client, released.actors, released.programme["id"])
    assert (figures["committed"], figures["disbursed"], figures["redeemed"]) == ("0.00", "100000.00", "30000.00")
    assert_identity(figures)
    assert await _listed(client, released.actors.finance) == []


async def test_an_expiry_after_a_failure_changes_nothing(client, api_key_factory, session_factory):
    actors, programme, failed = await _failed_then_budget_taken(
        client, api_key_factory, session_factory, mechanism="voucher"
    )
    before = await balances(client, actors, programme["id"])

    assert (await deliver(client, "vouchers", event_body("voucher.expired", failed.id))).status_code == 202
    await apply_all(session_factory)

    expiry = (await stored_events(session_factory))[-1]
    assert (expiry.status, expiry.attempts) == ("ignored", 1), expiry.detail
    assert (await entitlement(session_factory, failed.id)).status == "failed"
    assert await balances(client, actors, programme["id"]) == before, "its budget went back when it failed"
    assert await _listed(client, actors.finance) == []


async def test_breaks_page_and_are_for_finance_and_auditors(client, api_key_factory, session_factory):
    actors, _, failed = await _failed_then_budget_taken(client, api_key_factory, session_factory)
    await deliver(client, "cards", card_issued(failed.id))
    await apply_all(session_factory)
    first = await client.get("/v1/reconciliations/breaks", params={"limit": 1}, headers=actors.finance)
    assert len(first.json()["items"]) == 1
    assert first.json()["next_cursor"] is None
    assert await _listed(client, actors.finance, provider="vouchers") == []
    assert_problem(await client.get("/v1/reconciliations/breaks", headers=actors.officer), 403)
    assert_problem(await client.get("/v1/reconciliations/breaks", params={"kind": "lost"}, headers=actors.finance), 422)
