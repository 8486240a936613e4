"""Stored events move entitlements and the ledger exactly once, forwards only, whatever order they arrive in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY
from sqlalchemy import select, text

from cbi_service.auth.roles import Principal, Role
from cbi_service.batches import service as batches
from cbi_service.batches.schemas import ApprovalCreate, BatchCreate
from cbi_service.entitlements.models import Entitlement, EntitlementEvent
from cbi_service.webhooks import service
from cbi_service.webhooks.repository import WebhookRepository
from tests.issuance.support import (
    approved_batch,
    assert_identity,
    balances,
    entitlements_of,
    fund,
    make_actors,
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


def _redeemed(entitlement_id: uuid.UUID, amount: str, **data: object) -> bytes:
    return event_body(
        "voucher.redeemed", entitlement_id, amount={"amount": amount, "currency": "COP"}, merchant="Tienda 7", **data
    )


def _issued_voucher(entitlement_id: uuid.UUID, **data: object) -> bytes:
    return event_body("entitlement.issued", entitlement_id, voucher_code="VCH-1234-5678", **data)


async def _history(session_factory, entitlement_id: uuid.UUID) -> list[str]:
    async with session_factory() as session:
        rows = await session.execute(
            select(EntitlementEvent.to_status)
            .where(EntitlementEvent.entitlement_id == entitlement_id)
            .order_by(EntitlementEvent.id)
        )
        return list(rows.scalars())


async def test_a_card_load_is_applied_to_the_entitlement_and_the_ledger(client, api_key_factory, session_factory):
    released = await released_entitlements(client, api_key_factory, session_factory, mechanism="prepaid_card")
    first = released.entitlements[0]
    applied_before = _applied_count("cards")
    response = await deliver(client, "cards", card_issued(first.id, provider_ref="prv-77"))
    assert response.status_code == 202, response.text
    assert (await entitlement(session_factory, first.id)).status == "pending", "nothing is applied before the worker"

    await apply_all(session_factory)

    loaded = await entitlement(session_factory, first.id)
    assert (loaded.status, loaded.provider_ref, loaded.card_token, loaded.card_last4) == (
        "issued",
        "prv-77",
        "tok_123",
        "4242",
    )
    (event,) = await stored_events(session_factory)
    assert (event.status, event.attempts) == ("applied", 1)
    assert _applied_count("cards") == applied_before + 1
    figures = await balances(client, released.actors, released.programme["id"])
    assert (figures["committed"], figures["disbursed"]) == ("100000.00", "100000.00")
    assert_identity(figures)


async def test_a_failed_load_returns_the_money_to_the_budget(client, api_key_factory, session_factory):
    released = await released_entitlements(client, api_key_factory, session_factory, mechanism="prepaid_card")
    first = released.entitlements[0]
    body = event_body("entitlement.failed", first.id, reason="card_blocked", retryable=False)
    assert (await deliver(client, "cards", body)).status_code == 202
    await apply_all(session_factory)
    failed = await entitlement(session_factory, first.id)
    assert (failed.status, failed.failure_reason, failed.failure_retryable) == ("failed", "card_blocked", False)
    figures = await balances(client, released.actors, released.programme["id"])
    assert (figures["committed"], figures["disbursed"]) == ("100000.00", "0.00")
    assert_identity(figures)


async def test_the_same_webhook_id_three_times_has_one_effect(client, api_key_factory, session_factory):
    released = await released_entitlements(client, api_key_factory, session_factory)
    first = released.entitlements[0]
    await deliver(client, "vouchers", _issued_voucher(first.id), webhook_id="msg_issue")
    await apply_all(session_factory)
    redemption = _redeemed(first.id, "30000.00")
    answers = []
    for _ in range(3):
        answers.append(await deliver(client, "vouchers", redemption, webhook_id="msg_redeem"))
        await apply_all(session_factory)
    assert [a.status_code for a in answers] == [202, 200, 200]
    assert [a.json()["status"] for a in answers] == ["received", "applied", "applied"]
    voucher = await entitlement(session_factory, first.id)
    assert (voucher.status, voucher.redeemed_minor) == ("redeemed", 3_000_000)
    assert await _history(session_factory, first.id) == ["issued", "redeemed"]
    figures = await balances(client, released.actors, released.programme["id"])
    assert (figures["disbursed"], figures["redeemed"]) == ("100000.00", "30000.00")


async def test_partial_redemptions_never_exceed_the_voucher(client, api_key_factory, session_factory):
    released = await released_entitlements(client, api_key_factory, session_factory)
    first = released.entitlements[0]
    await deliver(client, "vouchers", _issued_voucher(first.id))
    for amount in ("60000.00", "30000.00", "20000.00", "10000.00"):
        await deliver(client, "vouchers", _redeemed(first.id, amount))
        await apply_all(session_factory)
    voucher = await entitlement(session_factory, first.id)
    assert (voucher.status, voucher.redeemed_minor) == ("redeemed", 10_000_000)
    statuses = [e.status for e in await stored_events(session_factory)]
    assert statuses == ["applied", "applied", "applied", "refused", "applied"]
    auditor = await api_key_factory("auditor")
    listed = await client.get("/v1/webhooks/events", params={"status": "refused"}, headers=auditor)
    assert listed.status_code == 200, listed.text
    (refused,) = listed.json()["items"]
    assert (refused["entitlement_id"], refused["type"], refused["status"]) == (
        str(first.id),
        "voucher.redeemed",
        "refused",
    )
    assert "exceeds" in refused["detail"]
    figures = await balances(client, released.actors, released.programme["id"])
    assert (figures["disbursed"], figures["redeemed"]) == ("100000.00", "100000.00")
    assert_identity(figures)


async def test_a_late_issue_after_redemption_changes_nothing(client, api_key_factory, session_factory):
    released = await released_entitlements(client, api_key_factory, session_factory)
    first = released.entitlements[0]
    now = datetime.now(UTC)
    await deliver(client, "vouchers", _redeemed(first.id, "25000.00", timestamp=now.isoformat()))
    await apply_all(session_factory)
    late = (now - timedelta(seconds=30)).isoformat()
    await deliver(client, "vouchers", _issued_voucher(first.id, timestamp=late))
    await apply_all(session_factory)
    voucher = await entitlement(session_factory, first.id)
    assert (voucher.status, voucher.redeemed_minor) == ("redeemed", 2_500_000)
    assert voucher.voucher_code == "VCH-1234-5678", "a late issue still fills in the voucher code"
    assert [e.status for e in await stored_events(session_factory)] == ["applied", "ignored"]
    figures = await balances(client, released.actors, released.programme["id"])
    assert (figures["disbursed"], figures["redeemed"]) == ("100000.00", "25000.00")
    assert_identity(figures)


async def test_events_waiting_together_are_applied_in_the_order_they_happened(client, api_key_factory, session_factory):
    """Redemptions, then the expiry, delivered backwards before the worker runs: nothing is lost."""
    released = await released_entitlements(client, api_key_factory, session_factory)
    first = released.entitlements[0]
    start = datetime.now(UTC) - timedelta(minutes=3)
    stream = [
        _issued_voucher(first.id, timestamp=start.isoformat()),
        _redeemed(first.id, "10000.00", timestamp=(start + timedelta(minutes=1)).isoformat()),
        _redeemed(first.id, "15000.00", timestamp=(start + timedelta(minutes=2)).isoformat()),
        event_body("voucher.expired", first.id, timestamp=(start + timedelta(minutes=3)).isoformat()),
    ]
    for body in reversed(stream):
        assert (await deliver(client, "vouchers", body)).status_code == 202
    await apply_all(session_factory)
    voucher = await entitlement(session_factory, first.id)
    assert (voucher.status, voucher.redeemed_minor) == ("expired", 2_500_000)
    figures = await balances(client, released.actors, released.programme["id"])
    assert (figures["disbursed"], figures["redeemed"], figures["returned"]) == ("25000.00", "25000.00", "75000.00")
    assert_identity(figures)


async def test_a_provider_cannot_move_another_providers_entitlements(client, api_key_factory, session_factory):
    released = await released_entitlements(client, api_key_factory, session_factory, mechanism="prepaid_card")
    first = released.entitlements[0]
    body = event_body("entitlement.failed", first.id, reason="forged", retryable=False)
    assert (await deliver(client, "vouchers", body)).status_code == 202
    await apply_all(session_factory)
    assert (await entitlement(session_factory, first.id)).status == "pending"
    (event,) = await stored_events(session_factory)
    assert event.status == "refused"
    assert "cards" in (event.detail or "")


async def test_a_redemption_in_another_currency_is_refused(client, api_key_factory, session_factory):
    released = await released_entitlements(client, api_key_factory, session_factory)
    first = released.entitlements[0]
    await deliver(client, "vouchers", _issued_voucher(first.id))
    body = event_body("voucher.redeemed", first.id, amount={"amount": "10.00", "currency": "USD"}, merchant="Tienda 7")
    await deliver(client, "vouchers", body)
    await apply_all(session_factory)
    assert (await entitlement(session_factory, first.id)).redeemed_minor == 0
    assert [e.status for e in await stored_events(session_factory)] == ["applied", "refused"]


async def test_an_event_that_overtakes_its_entitlement_is_kept_and_applied_once_it_exists(
    client, api_key_factory, session_factory
):
    """The provider answers before the transaction creating the entitlement has committed."""
    actors = await make_actors(api_key_factory)
    programme = await make_programme(client, actors, delivery_mechanism="voucher", provider="vouchers")
    await fund(client, actors, programme["id"], "1000000.00")
    await seed_beneficiaries(session_factory, programme["id"], 1)
    officer, first, second, finance = (
        Principal(uuid.uuid4(), name, frozenset({role}))
        for name, role in [("o", Role.programme_officer), ("a1", Role.approver), ("a2", Role.approver),
                           ("f", Role.finance)]
    )  # fmt: skip
    before = _unmatched_count()
    async with session_factory() as creating:
        data = BatchCreate.model_validate(
            {"programme_id": programme["id"], "name": "N", "cycle": "2026-11",
             "amount": {"amount": "100000.00", "currency": "COP"}}
        )  # fmt: skip
        batch = await batches.create_batch(creating, officer, data)
        await batches.submit_batch(creating, officer, batch.id)
        for approver in (first, second):
            await batches.decide_batch(creating, approver, batch.id, ApprovalCreate(decision="approve"))
        await batches.release_batch(creating, finance, batch.id)
        (created,) = await _entitlement_ids(creating, batch.id)

        assert (await deliver(client, "vouchers", _issued_voucher(created), webhook_id="msg_early")).status_code == 202
        await apply_all(session_factory)
        (event,) = await stored_events(session_factory)
        assert event.status == "unmatched"
        assert _unmatched_count() == before + 1
        listed = await client.get("/v1/webhooks/unmatched", headers=actors.auditor)
        assert listed.status_code == 200, listed.text
        (item,) = listed.json()["items"]
        assert (item["webhook_id"], item["entitlement_id"], item["type"]) == (
            "msg_early",
            str(created),
            "entitlement.issued",
        )
        assert "voucher_code" not in item, "the review list carries no voucher or card data"
        await creating.commit()

    async with session_factory.begin() as session:
        assert await WebhookRepository(session).requeue_matched() == 1
    await apply_all(session_factory)
    voucher = await entitlement(session_factory, created)
    assert (voucher.status, voucher.voucher_code) == ("issued", "VCH-1234-5678")
    (event,) = await stored_events(session_factory)
    assert (event.status, event.attempts) == ("applied", 2)
    assert (await client.get("/v1/webhooks/unmatched", headers=actors.auditor)).json()["items"] == []


def _applied_count(provider: str) -> float:
    labels = {"provider": provider, "type": "entitlement.issued", "outcome": "applied"}
    return REGISTRY.get_sample_value("cbi_webhook_events_applied_total", labels) or 0.0


def _unmatched_count() -> float:
    labels = {"provider": "vouchers", "type": "entitlement.issued"}
    return REGISTRY.get_sample_value("cbi_webhook_events_unmatched_total", labels) or 0.0


async def _entitlement_ids(session, batch_id: uuid.UUID) -> list[uuid.UUID]:
    return list((await session.execute(select(Entitlement.id).where(Entitlement.batch_id == batch_id))).scalars())


async def test_the_unmatched_list_pages_and_filters_by_provider(client, api_key_factory, session_factory):
    for n in range(3):
        await deliver(client, "vouchers", _issued_voucher(uuid.uuid4()), webhook_id=f"msg_v{n}")
    await deliver(client, "cards", card_issued(uuid.uuid4()), webhook_id="msg_c0")
    await apply_all(session_factory)
    finance = await api_key_factory("finance")
    first = await client.get("/v1/webhooks/unmatched", params={"limit": 2}, headers=finance)
    assert [i["webhook_id"] for i in first.json()["items"]] == ["msg_v0", "msg_v1"]
    rest = await client.get(
        "/v1/webhooks/unmatched", params={"limit": 2, "cursor": first.json()["next_cursor"]}, headers=finance
    )
    assert [i["webhook_id"] for i in rest.json()["items"]] == ["msg_v2", "msg_c0"]
    assert rest.json()["next_cursor"] is None
    cards = await client.get("/v1/webhooks/unmatched", params={"provider": "cards"}, headers=finance)
    assert [i["webhook_id"] for i in cards.json()["items"]] == ["msg_c0"]
    assert_problem(await client.get("/v1/webhooks/unmatched", params={"cursor": "garbage"}, headers=finance), 422)
    assert_problem(await client.get("/v1/webhooks/events", params={"status": "lost"}, headers=finance), 422)
    everything = await client.get("/v1/webhooks/events", params={"status": "unmatched"}, headers=finance)
    assert len(everything.json()["items"]) == 4


async def test_an_event_that_keeps_failing_is_set_aside_without_blocking_the_queue(
    client, api_key_factory, session_factory
):
    """A stored event this version cannot apply (as after a downgrade) ends `failed`, and the rest flows."""
    released = await released_entitlements(client, api_key_factory, session_factory)
    first, second = released.entitlements
    early = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    await deliver(client, "vouchers", _issued_voucher(first.id, timestamp=early), webhook_id="msg_poison")
    await deliver(client, "vouchers", _issued_voucher(second.id), webhook_id="msg_fine")
    async with session_factory.begin() as session:
        await session.execute(
            text(
                "UPDATE webhook_events SET event = jsonb_set(event, '{type}', '\"voucher.exploded\"')"
                " WHERE webhook_id = 'msg_poison'"
            )
        )
    for _ in range(5):
        await apply_all(session_factory)
    poison, fine = await stored_events(session_factory)
    assert (poison.status, poison.attempts, poison.detail) == ("failed", 5, "error: ValueError")
    assert fine.status == "applied"
    assert (await entitlement(session_factory, second.id)).status == "issued"


async def test_events_for_a_batch_not_yet_released_are_refused(client, api_key_factory, session_factory):
    actors = await make_actors(api_key_factory)
    programme = await make_programme(client, actors, delivery_mechanism="voucher", provider="vouchers")
    await fund(client, actors, programme["id"], "1000000.00")
    await seed_beneficiaries(session_factory, programme["id"], 1)
    batch = await approved_batch(client, actors, programme["id"])
    (waiting,) = await entitlements_of(session_factory, batch["id"])
    await deliver(client, "vouchers", _issued_voucher(waiting.id))
    await apply_all(session_factory)
    (event,) = await stored_events(session_factory)
    assert event.status == "refused"
    assert "approved" in (event.detail or "")
    assert (await entitlement(session_factory, waiting.id)).status == "pending"
    figures = await balances(client, actors, programme["id"])
    assert (figures["committed"], figures["disbursed"]) == ("100000.00", "0.00")


async def test_a_chunk_out_of_time_leaves_the_rest_queued_in_order(
    client, api_key_factory, session_factory, monkeypatch
):
    """Ledger locks are held until a chunk commits, so a slow chunk stops early; every event still applies."""
    released = await released_entitlements(client, api_key_factory, session_factory)
    first = released.entitlements[0]
    start = datetime.now(UTC) - timedelta(minutes=1)
    await deliver(client, "vouchers", _issued_voucher(first.id, timestamp=start.isoformat()))
    for n, amount in enumerate(("10000.00", "20000.00", "30000.00"), 1):
        at = (start + timedelta(seconds=n)).isoformat()
        await deliver(client, "vouchers", _redeemed(first.id, amount, timestamp=at))
    monkeypatch.setattr(service, "CHUNK_SECONDS", 0.0)
    runs = [await service.apply_pending(session_factory) for _ in range(4)]
    assert [(run.claimed, run.left) for run in runs] == [(4, 2), (2, 1), (1, 0), (0, 0)]
    voucher = await entitlement(session_factory, first.id)
    assert (voucher.status, voucher.redeemed_minor) == ("redeemed", 6_000_000)
    assert [e.status for e in await stored_events(session_factory)] == ["applied"] * 4
