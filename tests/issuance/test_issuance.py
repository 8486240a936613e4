"""The issuance worker against the simulator: chunks, declines, transient and permanent faults."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

import asyncpg
import httpx

from cbi_service.issuance.providers import get_provider
from cbi_service.issuance.service import instruction_of, poll_overdue
from cbi_service.jobs.worker import Worker
from cbi_service.kit.settings import Settings
from cbi_service.programmes.models import Programme
from tests.conftest import TEST_WEBHOOK_SECRET, libpq_url
from tests.issuance.support import (
    assert_identity,
    balances,
    counters,
    create_batch,
    drain,
    entitlements_of,
    fund,
    make_actors,
    provider_settings,
    release,
    released_batch,
    seed_beneficiaries,
    set_beneficiary,
)
from tests.support import make_programme


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


async def _submitted_batch(client, api_key_factory, session_factory, count):
    """A funded programme and a submitted batch of `count` people at 1000.00 each: (actors, programme, batch,
    people)."""
    actors = await make_actors(api_key_factory)
    programme = await make_programme(client, actors)
    await fund(client, actors, programme["id"], "1000000.00")
    people = await seed_beneficiaries(session_factory, programme["id"], count)
    batch = await create_batch(client, actors, programme["id"], amount="1000.00")
    assert (await client.post(f"/v1/payment-batches/{batch['id']}/submit", headers=actors.officer)).status_code == 200
    return actors, programme, batch, people


async def _approve_and_release(client, actors, batch_id):
    for approver in (actors.approver1, actors.approver2):
        response = await client.post(
            f"/v1/payment-batches/{batch_id}/approvals", json={"decision": "approve"}, headers=approver
        )
        assert response.status_code == 200, response.text
    assert (await release(client, actors, batch_id)).status_code == 200


async def test_a_person_deactivated_after_submit_is_not_paid(
    client, api_key_factory, session_factory, settings, simulator
):
    actors, programme, batch, people = await _submitted_batch(client, api_key_factory, session_factory, 3)
    registrar = await api_key_factory("registrar", name="registrar")
    gone = people[0]
    deactivated = await client.post(f"/v1/beneficiaries/{gone}/deactivate", headers=registrar)
    assert deactivated.json()["status"] == "inactive"
    await _approve_and_release(client, actors, batch["id"])
    await drain(session_factory, settings, batch["id"])

    (withheld,) = [e for e in await entitlements_of(session_factory, batch["id"]) if e.beneficiary_id == gone]
    detail = (await client.get(f"/v1/entitlements/{withheld.id}", headers=actors.auditor)).json()
    assert detail["status"] == "cancelled"
    assert detail["history"][-1] == {
        **detail["history"][-1],
        "status": "cancelled",
        "actor": "worker:cards",
        "detail": {"reason": "beneficiary not active"},
    }
    view = (await client.get(f"/v1/payment-batches/{batch['id']}", headers=actors.auditor)).json()
    assert (view["status"], view["counts"]) == ("completed", {"issued": 2, "cancelled": 1})
    assert view["excluded"] == [
        {"beneficiary_id": str(gone), "reason": "not_active", "entitlement_id": str(withheld.id)}
    ]
    assert view["excluded_count"] == 1
    seen = counters(simulator)
    assert str(withheld.id) not in seen["instructions_received"]
    assert (seen["card_loads"], seen["cancelled"]) == (2, 1)
    figures = await balances(client, actors, programme["id"])
    assert (figures["disbursed"], figures["committed"], figures["available"]) == ("2000.00", "0.00", "998000.00")
    assert_identity(figures)


async def test_a_deactivation_in_flight_during_issuance_is_waited_for(
    client, api_key_factory, session_factory, settings, simulator, database_url
):
    """The worker reads the statuses under a share lock: a deactivation not yet committed when the chunk is
    claimed holds it back until the deactivation commits, and then the person is not paid."""
    actors, programme, batch, people = await _submitted_batch(client, api_key_factory, session_factory, 2)
    await _approve_and_release(client, actors, batch["id"])
    gone = people[1]
    conn = await asyncpg.connect(libpq_url(database_url))
    try:
        await conn.execute("BEGIN")
        await conn.execute("UPDATE beneficiaries SET status = 'inactive' WHERE id = $1", gone)
        issuing = asyncio.create_task(drain(session_factory, settings, batch["id"]))
        await asyncio.sleep(1.0)
        assert not issuing.done()
        assert counters(simulator)["instruction_items_received"] == 0
        await conn.execute("COMMIT")
        await issuing
    finally:
        await conn.close()
    by_person = {e.beneficiary_id: e for e in await entitlements_of(session_factory, batch["id"])}
    assert (by_person[people[0]].status, by_person[gone].status) == ("issued", "cancelled")
    assert counters(simulator)["card_loads"] == 1
    assert_identity(await balances(client, actors, programme["id"]))


async def test_a_deactivated_person_the_provider_already_paid_is_recorded_as_paid(
    client, api_key_factory, session_factory, settings, simulator
):
    """An earlier send whose answer was lost reached the provider, which issued it: it can no longer be
    cancelled, so the worker records what the provider did instead of pretending it did not happen."""
    actors, programme, batch, people = await _submitted_batch(client, api_key_factory, session_factory, 2)
    await _approve_and_release(client, actors, batch["id"])
    (early,) = [e for e in await entitlements_of(session_factory, batch["id"]) if e.beneficiary_id == people[0]]
    provider = get_provider(settings, "cards")
    async with session_factory() as session:
        row = await session.get(Programme, uuid.UUID(programme["id"]))
        assert row is not None
        (accepted,) = await provider.issue([instruction_of(early, row)])
    assert accepted.accepted
    for _ in range(50):
        if (await provider.status(early.id)).status == "issued":
            break
        await asyncio.sleep(0.1)
    await set_beneficiary(session_factory, people[0], status="inactive")
    await drain(session_factory, settings, batch["id"])
    by_person = {e.beneficiary_id: e for e in await entitlements_of(session_factory, batch["id"])}
    assert {e.status for e in by_person.values()} == {"issued"}
    assert by_person[people[0]].provider_ref == accepted.provider_ref
    assert counters(simulator)["card_loads"] == 2
    figures = await balances(client, actors, programme["id"])
    assert (figures["disbursed"], figures["committed"]) == ("2000.00", "0.00")
    assert_identity(figures)
