"""The issuance worker against the simulator: chunks, declines, transient and permanent faults."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import httpx

from cbi_service.disbursement.dispatch import poll_overdue
from cbi_service.jobs.worker import Worker
from cbi_service.kit.settings import Settings
from tests.conftest import TEST_WEBHOOK_SECRET
from tests.disbursement.support import (
    assert_identity,
    balances,
    counters,
    drain,
    entitlements_of,
    provider_settings,
    released_batch,
)


def _faults(simulator, **faults):
    httpx.patch(f"{simulator.base_url}/admin/faults", json=faults).raise_for_status()


async def test_every_entitlement_issued_once_in_chunks(client, api_key_factory, session_factory, settings, simulator):
    actors, programme, batch = await released_batch(client, api_key_factory, session_factory, 250, amount="1000.00")
    await drain(session_factory, settings, batch["id"])
    seen = counters(simulator)
    assert seen["card_loads"] == 250
    assert seen["keys_received_more_than_once"] == 0
    assert seen["issued_minor"] == {"COP": 250 * 100_000}
    entitlements = await entitlements_of(session_factory, batch["id"])
    assert {e.status for e in entitlements} == {"issued"}
    assert all(e.card_token and e.card_last4 and e.provider_ref for e in entitlements)
    detail = (await client.get(f"/v1/payment-batches/{batch['id']}", headers=actors.auditor)).json()
    assert (detail["status"], detail["counts"]) == ("completed", {"issued": 250})
    figures = await balances(client, actors, programme["id"])
    assert (figures["disbursed"], figures["committed"]) == ("250000.00", "0.00")
    assert_identity(figures)


async def test_declines_fail_and_return_the_money(client, api_key_factory, session_factory, settings, simulator):
    _faults(simulator, decline_rate=0.3, failure_rate=0.3)
    actors, programme, batch = await released_batch(client, api_key_factory, session_factory, 200, amount="1000.00")
    await drain(session_factory, settings, batch["id"])
    entitlements = await entitlements_of(session_factory, batch["id"])
    failed = [e for e in entitlements if e.status == "failed"]
    issued = [e for e in entitlements if e.status == "issued"]
    assert failed
    assert issued
    assert len(failed) + len(issued) == 200
    assert all(e.failure_reason for e in failed)
    assert counters(simulator)["card_loads"] == len(issued)
    figures = await balances(client, actors, programme["id"])
    assert figures["disbursed"] == f"{len(issued) * 1000}.00"
    assert figures["committed"] == "0.00"
    assert_identity(figures)


async def test_timeouts_are_resent_under_the_same_key_and_paid_once(
    client, api_key_factory, session_factory, database_url, simulator
):
    """Every call acts and then hangs past the client's timeout until the provider heals: the outcome of
    the first sends is unknown to us, so they are sent again, and the provider pays each key once."""
    _faults(simulator, timeout_rate=1.0, hang_seconds=2)
    settings: Settings = provider_settings(database_url, simulator.base_url, TEST_WEBHOOK_SECRET, chunk_size=25)
    for provider in settings.providers.values():
        provider["timeout_seconds"] = 0.3
    actors, programme, batch = await released_batch(client, api_key_factory, session_factory, 100, amount="1000.00")

    async def heal() -> None:
        await asyncio.sleep(1.5)
        await asyncio.to_thread(_faults, simulator, timeout_rate=0.0)

    await asyncio.gather(drain(session_factory, settings, batch["id"], timeout=60), heal())
    seen = counters(simulator)
    assert seen["keys_received_more_than_once"] >= 25
    assert seen["card_loads"] == 100
    assert seen["distinct_cards_loaded"] == 100
    assert_identity(await balances(client, actors, programme["id"]))


async def test_a_refused_request_fails_its_chunk_without_retrying(
    client, api_key_factory, session_factory, database_url, simulator
):
    settings = provider_settings(database_url, f"{simulator.base_url}/missing", TEST_WEBHOOK_SECRET)
    actors, programme, batch = await released_batch(client, api_key_factory, session_factory, 5, amount="1000.00")
    await drain(session_factory, settings, batch["id"])
    entitlements = await entitlements_of(session_factory, batch["id"])
    assert {(e.status, e.failure_retryable) for e in entitlements} == {("failed", False)}
    assert counters(simulator)["instruction_items_received"] == 0
    figures = await balances(client, actors, programme["id"])
    assert (figures["available"], figures["committed"]) == ("100000000.00", "0.00")


async def test_status_poll_passes_over_a_provider_no_longer_configured(
    client, api_key_factory, session_factory, settings, simulator
):
    """Entitlements of a provider removed from the configuration wait for it; the poll goes on."""
    _, _, batch = await released_batch(client, api_key_factory, session_factory, 5, amount="1000.00")
    await Worker(session_factory, SimpleNamespace(settings=settings)).run_until_idle()
    await asyncio.sleep(settings.provider_status_poll_seconds)
    assert await poll_overdue(session_factory, settings.model_copy(update={"providers": {}})) == 0
    assert {e.status for e in await entitlements_of(session_factory, batch["id"])} == {"submitted"}
    await drain(session_factory, settings, batch["id"])
    assert {e.status for e in await entitlements_of(session_factory, batch["id"])} == {"issued"}
