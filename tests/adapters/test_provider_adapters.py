"""The built-in HTTP adapters against the simulator running as a separate process."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from uuid import UUID, uuid4

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from adapters.providers import (
    IssueInstruction,
    PermanentProviderError,
    ProviderAdapter,
    TransientProviderError,
    build_provider,
)
from adapters.simulator import SimulatorAdmin
from tests.adapters.support import ProviderConfig, WebhookReceiver, new_secret


def instructions(
    count: int, *, amount_minor: int = 150_000_00, beneficiary: str | None = None
) -> list[IssueInstruction]:
    return [
        IssueInstruction(
            entitlement_id=uuid4(),
            beneficiary_ref=beneficiary or f"ben_{uuid4().hex[:12]}",
            amount_minor=amount_minor,
            currency="COP",
            programme_ref="prog_mpc_2026",
            voucher_validity_days=30,
        )
        for _ in range(count)
    ]


async def test_same_entitlement_sent_many_times_is_issued_once(
    card_adapter: ProviderAdapter, admin: SimulatorAdmin, receiver: WebhookReceiver
) -> None:
    chunk = instructions(20)
    first = await card_adapter.issue(chunk)
    replays = await asyncio.gather(*(card_adapter.issue(chunk) for _ in range(4)))

    assert all(outcome.accepted for outcome in first)
    for replay in replays:
        assert [o.provider_ref for o in replay] == [o.provider_ref for o in first]
    counters = await admin.drained()
    assert counters["card_loads"] == 20
    assert counters["webhooks_emitted"] == 20
    assert (counters["instruction_items_received"], counters["keys_received_more_than_once"]) == (100, 20)
    per_key = (await admin.counters())["instructions_received"]
    assert per_key == {str(item.entitlement_id): 5 for item in chunk}
    issued = Counter(w.payload["data"]["entitlement_id"] for w in await receiver.wait_for_accepted(20))
    assert issued == {str(item.entitlement_id): 1 for item in chunk}


async def test_a_key_reused_for_a_different_instruction_is_declined(
    card_adapter: ProviderAdapter, admin: SimulatorAdmin
) -> None:
    (original,) = instructions(1)
    (accepted,) = await card_adapter.issue([original])
    altered = IssueInstruction(
        entitlement_id=original.entitlement_id,
        beneficiary_ref=original.beneficiary_ref,
        amount_minor=original.amount_minor + 1,
        currency=original.currency,
        programme_ref=original.programme_ref,
    )
    (conflict,) = await card_adapter.issue([altered])

    assert not conflict.accepted
    assert conflict.error_code == "idempotency_conflict"
    assert conflict.provider_ref == accepted.provider_ref
    assert (await admin.drained())["card_loads"] == 1


async def test_a_bad_item_is_declined_without_failing_its_chunk(
    card_adapter: ProviderAdapter, admin: SimulatorAdmin
) -> None:
    good, bad, zero = instructions(3)
    bad = IssueInstruction(bad.entitlement_id, bad.beneficiary_ref, 100, "ZZZ", bad.programme_ref)
    zero = IssueInstruction(zero.entitlement_id, zero.beneficiary_ref, 0, "COP", zero.programme_ref)

    outcomes = await card_adapter.issue([good, bad, zero])

    assert [o.entitlement_id for o in outcomes] == [good.entitlement_id, bad.entitlement_id, zero.entitlement_id]
    assert [o.accepted for o in outcomes] == [True, False, False]
    assert [o.error_code for o in outcomes] == [None, "invalid_currency", "invalid_amount"]
    assert not outcomes[1].retryable
    assert (await admin.drained())["card_loads"] == 1


async def test_card_webhooks_are_signed_and_map_to_token_and_last_four(
    card_adapter: ProviderAdapter, admin: SimulatorAdmin, receiver: WebhookReceiver, webhook_secret: str
) -> None:
    chunk = instructions(2, beneficiary="ben_same_person") + instructions(1)
    await card_adapter.issue(chunk)
    await admin.drained()
    webhooks = await receiver.wait_for_accepted(3)

    assert len(receiver.all_requests) == 3
    other_secret = new_secret()
    for webhook in webhooks:
        assert webhook.verified
        assert webhook.headers["webhook-id"].startswith("msg_")
        assert Webhook(webhook_secret).verify(webhook.body, webhook.headers) == webhook.payload
        with pytest.raises(WebhookVerificationError):
            Webhook(other_secret).verify(webhook.body, webhook.headers)
    events = {e.entitlement_id: e for e in (card_adapter.parse_event(w.payload) for w in webhooks)}
    for item in chunk:
        event = events[item.entitlement_id]
        status = await card_adapter.status(item.entitlement_id)
        assert event.type == "entitlement.issued"
        assert event.timestamp.tzinfo is not None
        assert (event.card_token, event.card_last4) == (status.card_token, status.card_last4)
        assert event.card_last4 is not None
        assert len(event.card_last4) == 4
        assert event.card_last4.isdigit()
        assert status.status == "issued"
        assert status.provider_ref == event.provider_ref
    same_person = [events[item.entitlement_id].card_token for item in chunk[:2]]
    assert same_person[0] == same_person[1] != events[chunk[2].entitlement_id].card_token
    counters = await admin.counters()
    assert (counters["card_loads"], counters["distinct_cards_loaded"]) == (3, 2)
    assert counters["issued_minor"] == {"COP": 3 * 150_000_00}


async def test_voucher_is_issued_redeemed_in_parts_and_expired(
    voucher_adapter: ProviderAdapter, admin: SimulatorAdmin, receiver: WebhookReceiver
) -> None:
    first, second = instructions(2, amount_minor=50_000_00)
    await voucher_adapter.issue([first, second])
    await admin.drained()
    status = await voucher_adapter.status(first.entitlement_id)
    assert status.status == "issued"
    assert status.voucher_code is not None
    assert status.expires_at is not None
    code = status.voucher_code

    await admin.redeem(code, 20_000_00, "Tienda La Esperanza")
    with pytest.raises(Exception, match="409"):
        await admin.redeem(code, 40_000_00, "Tienda La Esperanza")
    assert (await voucher_adapter.status(first.entitlement_id)).remaining_minor == 30_000_00
    await admin.expire(code)
    await admin.drained()

    events = [voucher_adapter.parse_event(w.payload) for w in await receiver.wait_for_accepted(4)]
    mine = [e for e in events if e.entitlement_id == first.entitlement_id]
    assert [e.type for e in mine] == ["entitlement.issued", "voucher.redeemed", "voucher.expired"]
    redeemed = mine[1]
    assert (redeemed.amount_minor, redeemed.currency, redeemed.merchant) == (
        20_000_00,
        "COP",
        "Tienda La Esperanza",
    )
    assert mine[0].voucher_code == code
    expired = await voucher_adapter.status(first.entitlement_id)
    assert (expired.status, expired.remaining_minor) == ("expired", 30_000_00)


async def test_cancel_rules(
    card_adapter: ProviderAdapter, voucher_adapter: ProviderAdapter, admin: SimulatorAdmin
) -> None:
    card, unused_voucher, used_voucher = instructions(3)
    (card_outcome,) = await card_adapter.issue([card])
    await voucher_adapter.issue([unused_voucher, used_voucher])
    await admin.drained()
    used = await voucher_adapter.status(used_voucher.entitlement_id)
    assert used.voucher_code is not None
    await admin.redeem(used.voucher_code, 1, "Mercado Central")

    loaded = await card_adapter.cancel(card.entitlement_id, card_outcome.provider_ref)
    voided = await voucher_adapter.cancel(unused_voucher.entitlement_id, None)
    spent = await voucher_adapter.cancel(used_voucher.entitlement_id, used.provider_ref)
    again = await voucher_adapter.cancel(unused_voucher.entitlement_id, None)
    mismatch = await voucher_adapter.cancel(unused_voucher.entitlement_id, "prv_someone_else")

    assert (loaded.cancelled, loaded.status, loaded.error_code) == (False, "issued", "not_cancellable_issued")
    assert (voided.cancelled, voided.status) == (True, "cancelled")
    assert (spent.cancelled, spent.status) == (False, "issued")
    assert (again.cancelled, again.status) == (True, "cancelled")
    assert (mismatch.cancelled, mismatch.error_code) == (False, "provider_ref_mismatch")
    (reissue,) = await voucher_adapter.issue([unused_voucher])
    assert (reissue.accepted, reissue.error_code) == (False, "instruction_cancelled")


async def test_cancel_before_the_instruction_arrives_prevents_its_issue(
    card_adapter: ProviderAdapter, admin: SimulatorAdmin
) -> None:
    (late,) = instructions(1)
    assert not (await card_adapter.status(late.entitlement_id)).found

    cancelled = await card_adapter.cancel(late.entitlement_id, None)
    (outcome,) = await card_adapter.issue([late])

    assert (cancelled.cancelled, cancelled.status) == (True, "cancelled")
    assert (outcome.accepted, outcome.error_code) == (False, "instruction_cancelled")
    assert (await card_adapter.status(late.entitlement_id)).status == "cancelled"
    assert (await admin.drained())["card_loads"] == 0


async def test_server_errors_are_transient_and_change_nothing(
    card_adapter: ProviderAdapter, admin: SimulatorAdmin
) -> None:
    await admin.set_faults(failure_rate=1.0)
    with pytest.raises(TransientProviderError) as raised:
        await card_adapter.issue(instructions(3))
    with pytest.raises(TransientProviderError):
        await card_adapter.status(uuid4())

    assert raised.value.status_code in {500, 502, 503}
    assert (await admin.counters())["distinct_keys"] == 0


async def test_an_outage_answers_503_until_it_ends(card_adapter: ProviderAdapter, admin: SimulatorAdmin) -> None:
    chunk = instructions(2)
    await admin.outage(0.6)
    with pytest.raises(TransientProviderError) as raised:
        await card_adapter.issue(chunk)
    assert raised.value.status_code == 503
    assert raised.value.retry_after == 1

    await asyncio.sleep(0.7)
    assert all(o.accepted for o in await card_adapter.issue(chunk))
    assert (await admin.drained())["card_loads"] == 2


async def test_client_errors_are_permanent(provider_config: ProviderConfig, admin: SimulatorAdmin) -> None:
    intruder = build_provider("acme_cards", provider_config("prepaid_card", api_key="wrong-key"))
    try:
        with pytest.raises(PermanentProviderError) as raised:
            await intruder.issue(instructions(1))
        with pytest.raises(PermanentProviderError):
            await intruder.cancel(uuid4(), None)
    finally:
        await intruder.aclose()

    assert (raised.value.status_code, raised.value.error_code) == (401, "unauthorized")
    assert not isinstance(raised.value, TransientProviderError)
    assert (await admin.counters())["distinct_keys"] == 0


async def test_a_request_the_provider_cannot_parse_is_permanent(
    card_adapter: ProviderAdapter, admin: SimulatorAdmin
) -> None:
    (item,) = instructions(1)
    oversized = IssueInstruction(item.entitlement_id, "x" * 500, 1_00, "COP", "prog")

    with pytest.raises(PermanentProviderError) as raised:
        await card_adapter.issue([oversized])

    assert (raised.value.status_code, raised.value.error_code) == (422, "invalid_request")
    assert "beneficiary_ref" in str(raised.value)
    assert (await admin.counters())["distinct_keys"] == 0


async def test_a_timeout_is_transient_although_the_provider_acted(
    provider_config: ProviderConfig, admin: SimulatorAdmin, receiver: WebhookReceiver
) -> None:
    impatient = build_provider("acme_cards", provider_config("prepaid_card", timeout_seconds=0.3))
    (item,) = instructions(1)
    await admin.set_faults(timeout_rate=1.0, hang_seconds=1)
    try:
        with pytest.raises(TransientProviderError) as raised:
            await impatient.issue([item])
        await admin.set_faults(timeout_rate=0.0)
        status = await impatient.status(item.entitlement_id)
        (resent,) = await impatient.issue([item])
    finally:
        await impatient.aclose()

    assert raised.value.error_code == "timeout"
    assert status.found
    assert resent.provider_ref == status.provider_ref
    assert (await admin.drained())["card_loads"] == 1
    assert (await admin.counters())["instructions_received"] == {str(item.entitlement_id): 2}
    assert len(await receiver.wait_for_accepted(1)) == 1


async def test_an_unreachable_provider_is_transient(provider_config: ProviderConfig) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    adapter = build_provider("gone", provider_config("voucher", base_url=f"http://127.0.0.1:{port}"))
    try:
        with pytest.raises(TransientProviderError) as raised:
            await adapter.issue(instructions(1))
    finally:
        await adapter.aclose()
    assert raised.value.error_code == "connection_error"


async def test_declines_arrive_as_failed_events_and_the_same_key_can_be_retried(
    card_adapter: ProviderAdapter, admin: SimulatorAdmin, receiver: WebhookReceiver
) -> None:
    chunk = instructions(5)
    await admin.set_faults(decline_rate=1.0)
    assert all(o.accepted for o in await card_adapter.issue(chunk))
    await admin.drained()
    failures = [card_adapter.parse_event(w.payload) for w in await receiver.wait_for_accepted(5)]
    assert {e.type for e in failures} == {"entitlement.failed"}
    assert all(e.reason and isinstance(e.retryable, bool) for e in failures)
    assert (await card_adapter.status(chunk[0].entitlement_id)).status == "failed"

    await admin.set_faults(decline_rate=0.0)
    retried = await card_adapter.issue(chunk)
    counters = await admin.drained()

    assert [o.provider_ref for o in retried] == [
        next(e.provider_ref for e in failures if e.entitlement_id == item.entitlement_id) for item in chunk
    ]
    assert (counters["failed"], counters["card_loads"]) == (5, 5)
    assert {(await card_adapter.status(item.entitlement_id)).status for item in chunk} == {"issued"}


async def test_duplicate_webhooks_reuse_the_webhook_id(
    card_adapter: ProviderAdapter, admin: SimulatorAdmin, receiver: WebhookReceiver
) -> None:
    await admin.set_faults(duplicate_rate=1.0)
    await card_adapter.issue(instructions(10))
    counters = await admin.drained()

    webhooks = await receiver.wait_for_accepted(20)
    assert (counters["webhooks_emitted"], counters["webhooks_duplicated"], counters["webhooks_sent"]) == (10, 10, 20)
    assert set(Counter(w.msg_id for w in webhooks).values()) == {2}
    assert all(w.verified for w in webhooks)


async def test_reordering_delivers_a_redemption_before_its_issue(
    voucher_adapter: ProviderAdapter, admin: SimulatorAdmin, receiver: WebhookReceiver
) -> None:
    chunk = instructions(30, amount_minor=10_000_00)
    # A window much longer than the loop below takes on a loaded machine: some issue is still held when its
    # voucher is spent, so its redemption can overtake it.
    await admin.set_faults(reorder=True, reorder_window_ms=3000)
    await voucher_adapter.issue(chunk)
    for item in chunk:
        while (status := await voucher_adapter.status(item.entitlement_id)).voucher_code is None:
            await asyncio.sleep(0.005)
        await admin.redeem(status.voucher_code, 10_000_00, "Supermercado Popular")
    await admin.drained()

    arrival = [voucher_adapter.parse_event(w.payload) for w in await receiver.wait_for_accepted(60)]
    first_seen: dict[UUID, str] = {}
    for event in arrival:
        first_seen.setdefault(event.entitlement_id, event.type)
    assert "voucher.redeemed" in first_seen.values()


async def test_failed_deliveries_are_retried_with_the_same_webhook_id(
    card_adapter: ProviderAdapter, admin: SimulatorAdmin, receiver: WebhookReceiver
) -> None:
    receiver.fail_next(2)
    (item,) = instructions(1)
    await card_adapter.issue([item])
    counters = await admin.drained()

    attempts = receiver.all_requests
    assert [a.answered for a in attempts] == [500, 500, 204]
    assert len({a.msg_id for a in attempts}) == 1
    assert all(a.verified for a in attempts)
    assert (counters["webhook_attempts_failed"], counters["webhooks_sent"]) == (2, 1)


async def test_chunks_larger_than_configured_are_refused_locally(provider_config: ProviderConfig) -> None:
    adapter = build_provider("acme_cards", provider_config("prepaid_card", chunk_size=2))
    try:
        assert adapter.chunk_size == 2
        assert await adapter.issue([]) == []
        with pytest.raises(ValueError, match="chunk_size"):
            await adapter.issue(instructions(3))
    finally:
        await adapter.aclose()
