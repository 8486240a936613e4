"""Submit, approvals, release, reject, cancel and follow-up: every rule of the maker-checker cycle."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import func, select

from cbi_service.entitlements.service import mark_expired, mark_failed, mark_issued
from cbi_service.issuance.service import ISSUE_JOB, LANES
from cbi_service.jobs.models import Job
from tests.issuance.support import (
    approved_batch,
    assert_identity,
    balances,
    create_batch,
    entitlements_of,
    fund,
    make_actors,
    release,
    seed_beneficiaries,
    set_beneficiary,
)
from tests.support import assert_problem, make_programme


async def _issue_jobs(session_factory) -> int:
    async with session_factory() as session:
        return int(await session.scalar(select(func.count()).select_from(Job).where(Job.kind == ISSUE_JOB)) or 0)


async def test_submit_freezes_the_list_and_prices_from_current_households(client, api_key_factory, session_factory):
    actors = await make_actors(api_key_factory)
    programme = await make_programme(client, actors)
    await fund(client, actors, programme["id"], "10000000.00")
    people = await seed_beneficiaries(session_factory, programme["id"], 4)
    rule = {"base": {"amount": "10000.00", "currency": "COP"}, "per_member": {"amount": "10000.00", "currency": "COP"}}
    batch = await create_batch(client, actors, programme["id"], amount_rule=rule)
    assert batch["total"]["amount"] == "140000.00"
    await set_beneficiary(session_factory, people[0], status="inactive")
    await set_beneficiary(session_factory, people[1], household_size=5)
    response = await client.post(f"/v1/payment-batches/{batch['id']}/submit", headers=actors.officer)
    assert response.status_code == 200, response.text
    submitted = response.json()
    assert submitted["status"] == "pending_approval"
    assert submitted["beneficiary_count"] == 3
    assert submitted["total"]["amount"] == "150000.00"  # 60k + 40k + 50k
    assert submitted["counts"] == {"pending": 3, "cancelled": 1}
    assert submitted["excluded"] == [{"beneficiary_id": str(people[0]), "reason": "not_active", "entitlement_id": None}]
    assert submitted["approvals_needed"] == 2
    assert submitted["submitted_at"] is not None
    assert_problem(await client.post(f"/v1/payment-batches/{batch['id']}/submit", headers=actors.officer), 409)


async def test_submit_refuses_an_empty_batch_or_one_above_the_budget(client, api_key_factory, session_factory):
    actors = await make_actors(api_key_factory)
    programme = await make_programme(client, actors)
    await fund(client, actors, programme["id"], "150000.00")
    await seed_beneficiaries(session_factory, programme["id"], 2)
    batch = await create_batch(client, actors, programme["id"], amount="100000.00")
    problem = assert_problem(
        await client.post(f"/v1/payment-batches/{batch['id']}/submit", headers=actors.officer), 409
    )
    assert problem["available_minor"] == 15_000_000
    empty = await create_batch(client, actors, programme["id"])
    assert empty["beneficiary_count"] == 0
    assert_problem(await client.post(f"/v1/payment-batches/{empty['id']}/submit", headers=actors.officer), 409)
    detail = await client.get(f"/v1/payment-batches/{batch['id']}", headers=actors.auditor)
    assert detail.json()["status"] == "draft"


async def test_distinct_approvers_never_the_creator_and_the_last_one_reserves(client, api_key_factory, session_factory):
    actors = await make_actors(api_key_factory)
    maker = await api_key_factory("programme_officer", "approver", name="officer-and-approver")
    programme = await make_programme(client, actors)
    await fund(client, actors, programme["id"], "1000000.00")
    await seed_beneficiaries(session_factory, programme["id"], 3)
    body = {
        "programme_id": programme["id"],
        "name": "B",
        "cycle": "2026-11",
        "amount": {"amount": "100000.00", "currency": "COP"},
    }
    batch = (await client.post("/v1/payment-batches", json=body, headers=maker)).json()
    url = f"/v1/payment-batches/{batch['id']}"
    assert_problem(await client.post(f"{url}/approvals", json={"decision": "approve"}, headers=actors.approver1), 409)
    assert (await client.post(f"{url}/submit", headers=maker)).status_code == 200
    assert_problem(await client.post(f"{url}/approvals", json={"decision": "approve"}, headers=maker), 403)
    first = await client.post(
        f"{url}/approvals", json={"decision": "approve", "comment": "ok"}, headers=actors.approver1
    )
    assert first.status_code == 200
    assert first.json()["status"] == "pending_approval"
    assert [(a["approver_name"], a["decision"], a["comment"]) for a in first.json()["approvals"]] == [
        ("approver-1", "approve", "ok")
    ]
    assert_problem(await client.post(f"{url}/approvals", json={"decision": "approve"}, headers=actors.approver1), 409)
    assert (await balances(client, actors, programme["id"]))["committed"] == "0.00"
    second = await client.post(f"{url}/approvals", json={"decision": "approve"}, headers=actors.approver2)
    assert second.json()["status"] == "approved"
    assert second.json()["approved_at"] is not None
    figures = await balances(client, actors, programme["id"])
    assert figures["committed"] == "300000.00"
    assert figures["available"] == "700000.00"
    assert_identity(figures)
    assert_problem(await client.post(f"{url}/approvals", json={"decision": "approve"}, headers=actors.approver3), 409)


async def test_approval_bands_set_how_many_approvers(client, api_key_factory, session_factory):
    actors = await make_actors(api_key_factory)
    bands = [{"up_to": "100000.00", "approvals_required": 1}, {"up_to": "1000000.00", "approvals_required": 3}]
    programme = await make_programme(client, actors, approval_bands=bands)
    await fund(client, actors, programme["id"], "5000000.00")
    await seed_beneficiaries(session_factory, programme["id"], 6)
    needed = {}
    for cycle, amount in (("c1", "10000.00"), ("c2", "100000.00"), ("c3", "200000.00")):
        batch = await create_batch(client, actors, programme["id"], amount=amount, cycle=cycle)
        response = await client.post(f"/v1/payment-batches/{batch['id']}/submit", headers=actors.officer)
        needed[cycle] = response.json()["approvals_needed"]
    assert needed == {"c1": 1, "c2": 3, "c3": 3}  # 60k; 600k; 1.2M above the last band
    one = (
        await client.get("/v1/payment-batches", params={"status": "pending_approval"}, headers=actors.auditor)
    ).json()
    small = next(b for b in one["items"] if b["cycle"] == "c1")
    response = await client.post(
        f"/v1/payment-batches/{small['id']}/approvals", json={"decision": "approve"}, headers=actors.approver1
    )
    assert response.json()["status"] == "approved"


async def test_reject_ends_the_batch_and_frees_the_cycle(client, api_key_factory, session_factory):
    actors = await make_actors(api_key_factory)
    programme = await make_programme(client, actors)
    await fund(client, actors, programme["id"], "1000000.00")
    await seed_beneficiaries(session_factory, programme["id"], 3)
    batch = await create_batch(client, actors, programme["id"])
    url = f"/v1/payment-batches/{batch['id']}"
    await client.post(f"{url}/submit", headers=actors.officer)
    await client.post(f"{url}/approvals", json={"decision": "approve"}, headers=actors.approver1)
    rejected = await client.post(
        f"{url}/approvals", json={"decision": "reject", "comment": "wrong list"}, headers=actors.approver2
    )
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["counts"] == {"cancelled": 3}
    assert rejected.json()["closed_at"] is not None
    assert_problem(await client.post(f"{url}/approvals", json={"decision": "approve"}, headers=actors.approver3), 409)
    assert (await balances(client, actors, programme["id"]))["available"] == "1000000.00"
    again = await create_batch(client, actors, programme["id"])
    assert again["beneficiary_count"] == 3


async def test_release_needs_finance_outside_the_batch_and_an_idempotency_key(client, api_key_factory, session_factory):
    actors = await make_actors(api_key_factory)
    programme = await make_programme(client, actors)
    await fund(client, actors, programme["id"], "1000000.00")
    await seed_beneficiaries(session_factory, programme["id"], 3)
    approver_finance = await api_key_factory("approver", "finance", name="approver-finance")
    batch = await create_batch(client, actors, programme["id"])
    url = f"/v1/payment-batches/{batch['id']}"
    await client.post(f"{url}/submit", headers=actors.officer)
    await client.post(f"{url}/approvals", json={"decision": "approve"}, headers=actors.approver1)
    await client.post(f"{url}/approvals", json={"decision": "approve"}, headers=approver_finance)
    assert_problem(await client.post(f"{url}/release", headers=actors.finance), 422)
    assert_problem(await client.post(f"{url}/release", headers={**approver_finance, "Idempotency-Key": "r1"}), 403)
    released = await release(client, actors, batch["id"])
    assert released.status_code == 200, released.text
    assert released.json()["status"] == "processing"
    assert released.json()["released_at"] is not None
    replay = await release(client, actors, batch["id"])
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.json() == released.json()
    assert await _issue_jobs(session_factory) == LANES
    assert_problem(await client.post(f"{url}/cancel", headers=actors.officer), 409)
    creator_finance = await api_key_factory("programme_officer", "finance", name="officer-finance")
    mine = (
        await client.post(
            "/v1/payment-batches",
            headers=creator_finance,
            json={
                "programme_id": programme["id"],
                "name": "M",
                "cycle": "c3",
                "amount": {"amount": "1000.00", "currency": "COP"},
            },
        )
    ).json()
    await client.post(f"/v1/payment-batches/{mine['id']}/submit", headers=creator_finance)
    for approver in (actors.approver1, actors.approver2):
        await client.post(f"/v1/payment-batches/{mine['id']}/approvals", json={"decision": "approve"}, headers=approver)
    assert_problem(
        await client.post(
            f"/v1/payment-batches/{mine['id']}/release", headers={**creator_finance, "Idempotency-Key": "r2"}
        ),
        403,
    )


async def test_a_refused_release_stays_refused_under_its_key(client, api_key_factory, session_factory):
    """The key's first answer was 409 (not yet approved): once approved, the same request replays the 409
    and releases nothing; a new key releases."""
    actors = await make_actors(api_key_factory)
    programme = await make_programme(client, actors)
    await fund(client, actors, programme["id"], "1000000.00")
    await seed_beneficiaries(session_factory, programme["id"], 2)
    batch = await create_batch(client, actors, programme["id"])
    url = f"/v1/payment-batches/{batch['id']}"
    assert (await client.post(f"{url}/submit", headers=actors.officer)).status_code == 200
    keyed = {**actors.finance, "Idempotency-Key": "early-release"}
    early = await client.post(f"{url}/release", headers=keyed)
    assert "pending_approval" in assert_problem(early, 409)["detail"]
    for approver in (actors.approver1, actors.approver2):
        await client.post(f"{url}/approvals", json={"decision": "approve"}, headers=approver)
    replay = await client.post(f"{url}/release", headers=keyed)
    assert_problem(replay, 409)
    assert (replay.content, replay.headers.get("Idempotent-Replayed")) == (early.content, "true")
    assert (await client.get(url, headers=actors.auditor)).json()["status"] == "approved"
    assert await _issue_jobs(session_factory) == 0
    released = await client.post(f"{url}/release", headers={**actors.finance, "Idempotency-Key": "on-time"})
    assert released.json()["status"] == "processing"


async def test_cancel_before_release_gives_back_the_reservation(client, api_key_factory, session_factory):
    actors = await make_actors(api_key_factory)
    programme = await make_programme(client, actors)
    await fund(client, actors, programme["id"], "1000000.00")
    await seed_beneficiaries(session_factory, programme["id"], 3)
    draft = await create_batch(client, actors, programme["id"], cycle="draft")
    cancelled = await client.post(f"/v1/payment-batches/{draft['id']}/cancel", headers=actors.officer)
    assert cancelled.json()["status"] == "cancelled"
    batch = await approved_batch(client, actors, programme["id"])
    assert (await balances(client, actors, programme["id"]))["committed"] == "300000.00"
    response = await client.post(f"/v1/payment-batches/{batch['id']}/cancel", headers=actors.officer)
    assert response.json()["status"] == "cancelled"
    assert response.json()["counts"] == {"cancelled": 3}
    figures = await balances(client, actors, programme["id"])
    assert (figures["committed"], figures["available"]) == ("0.00", "1000000.00")
    assert_problem(await client.post(f"/v1/payment-batches/{batch['id']}/cancel", headers=actors.officer), 409)
    assert_problem(await release(client, actors, batch["id"]), 409)


async def test_concurrent_approvals_releases_and_cancels_each_have_one_effect(client, api_key_factory, session_factory):
    actors = await make_actors(api_key_factory)
    finance2 = await api_key_factory("finance", name="finance-2")
    programme = await make_programme(client, actors)
    await fund(client, actors, programme["id"], "10000000.00")
    await seed_beneficiaries(session_factory, programme["id"], 5)

    batch = await create_batch(client, actors, programme["id"], cycle="a")
    url = f"/v1/payment-batches/{batch['id']}"
    await client.post(f"{url}/submit", headers=actors.officer)
    await client.post(f"{url}/approvals", json={"decision": "approve"}, headers=actors.approver1)
    answers = await asyncio.gather(
        client.post(f"{url}/approvals", json={"decision": "approve"}, headers=actors.approver2),
        client.post(f"{url}/approvals", json={"decision": "approve"}, headers=actors.approver3),
    )
    assert sorted(r.status_code for r in answers) == [200, 409]
    assert (await balances(client, actors, programme["id"]))["committed"] == "500000.00"

    answers = await asyncio.gather(
        client.post(f"{url}/release", headers={**actors.finance, "Idempotency-Key": "x"}),
        client.post(f"{url}/release", headers={**finance2, "Idempotency-Key": "y"}),
    )
    assert sorted(r.status_code for r in answers) == [200, 409]
    assert await _issue_jobs(session_factory) == LANES

    other = await approved_batch(client, actors, programme["id"], cycle="b")
    answers = await asyncio.gather(
        *(client.post(f"/v1/payment-batches/{other['id']}/cancel", headers=actors.officer) for _ in range(3))
    )
    assert sorted(r.status_code for r in answers) == [200, 409, 409]
    figures = await balances(client, actors, programme["id"])
    assert figures["committed"] == "500000.00"
    assert figures["available"] == "9500000.00"
    assert_identity(figures)


async def test_follow_up_takes_failed_and_expired_people_still_active(client, api_key_factory, session_factory):
    actors = await make_actors(api_key_factory)
    programme = await make_programme(client, actors, delivery_mechanism="voucher", provider="vouchers")
    await fund(client, actors, programme["id"], "1000000.00")
    await seed_beneficiaries(session_factory, programme["id"], 5)
    batch = await approved_batch(client, actors, programme["id"])
    assert_problem(await client.post(f"/v1/payment-batches/{batch['id']}/follow-up", headers=actors.officer), 409)
    assert (await release(client, actors, batch["id"])).status_code == 200
    failed, expired, issued, gone, left = await entitlements_of(session_factory, batch["id"])
    async with session_factory.begin() as session:
        await mark_failed(session, failed.id, "kyc_incomplete", False)
        await mark_issued(session, expired.id, "p-1", voucher_code="AAAA-BBBB-CCCC")
        await mark_expired(session, expired.id)
        await mark_issued(session, issued.id, "p-2", voucher_code="AAAA-BBBB-DDDD")
        await mark_failed(session, gone.id, "beneficiary_blocked", False)
        await mark_failed(session, left.id, "issuer_unavailable", True)
    await set_beneficiary(session_factory, gone.beneficiary_id, status="inactive")
    detail = (await client.get(f"/v1/payment-batches/{batch['id']}", headers=actors.auditor)).json()
    assert detail["status"] == "completed"
    assert detail["counts"] == {"failed": 3, "expired": 1, "issued": 1}
    response = await client.post(
        f"/v1/payment-batches/{batch['id']}/follow-up", json={"name": "Retry Nov"}, headers=actors.officer
    )
    assert response.status_code == 201, response.text
    follow = response.json()
    assert (follow["status"], follow["name"], follow["cycle"]) == ("draft", "Retry Nov", "2026-11")
    assert follow["follow_up_of"] == batch["id"]
    assert follow["beneficiary_count"] == 3
    ids = {e.beneficiary_id for e in await entitlements_of(session_factory, follow["id"])}
    assert ids == {failed.beneficiary_id, expired.beneficiary_id, left.beneficiary_id}
    assert follow["excluded"] == [
        {"beneficiary_id": str(gone.beneficiary_id), "reason": "not_active", "entitlement_id": None}
    ]
    assert_problem(await client.post(f"/v1/payment-batches/{uuid.uuid4()}/follow-up", headers=actors.officer), 404)
    retry = {**actors.finance, "Idempotency-Key": "retry"}
    problem = assert_problem(await client.post(f"/v1/entitlements/{left.id}/retry", headers=retry), 409)
    assert "live entitlement" in problem["detail"]
    retry["Idempotency-Key"] = "retry-2"
    problem = assert_problem(await client.post(f"/v1/entitlements/{gone.id}/retry", headers=retry), 409)
    assert "inactive" in problem["detail"]
