"""Registry-wide sweeps: adjudications only for pairs not already decided, never a status changed, and a
sweep stopped part-way goes on to the same result without sending a pair twice."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select, update

from cbi_service.beneficiaries.models import Adjudication, AdjudicationPair, Beneficiary
from cbi_service.beneficiaries.personal import open_profile
from cbi_service.beneficiaries.repository import AdjudicationRepository
from cbi_service.dedup import service, sweeps
from cbi_service.dedup.models import DedupSweep, DedupSweepPair
from cbi_service.dedup.settings import DedupSettings
from cbi_service.jobs.service import JobInterrupted
from cbi_service.kit.crypto import keyring
from tests.dedup.support import hand_model, insert_people, registry_records
from tests.support import assert_problem, make_programme, run_jobs


@pytest.fixture
async def model(session_factory):
    async with session_factory.begin() as session:
        await service.store_model(session, None, hand_model())
    return hand_model()


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 40 records, so a few hundred records make several chunks."""
    monkeypatch.setattr(sweeps, "CHUNK_RECORDS", 40)


@pytest.fixture
async def registry(session_factory) -> dict[uuid.UUID, int]:
    """240 stored people, about a fifth of them registered twice: id -> the person it belongs to."""
    labelled = registry_records(240)
    ids = await insert_people(session_factory, [record for _, record in labelled])
    return {ident: person for ident, (person, _) in zip(ids, labelled, strict=True)}


async def _statuses(session_factory) -> dict[uuid.UUID, tuple[str, uuid.UUID | None]]:
    async with session_factory() as session:
        rows = await session.execute(select(Beneficiary.id, Beneficiary.status, Beneficiary.duplicate_of))
        return {row.id: (row.status, row.duplicate_of) for row in rows}


async def _rows(session_factory, model: Any) -> list[Any]:
    async with session_factory() as session:
        return list((await session.execute(select(model))).scalars())


async def _sweep_pairs(session_factory, sweep_id: str) -> set[tuple[uuid.UUID, uuid.UUID]]:
    async with session_factory() as session:
        rows = await session.execute(
            select(DedupSweepPair.low_id, DedupSweepPair.high_id).where(DedupSweepPair.sweep_id == uuid.UUID(sweep_id))
        )
        return {(row.low_id, row.high_id) for row in rows}


async def _start(client, headers, **body: Any) -> str:
    response = await client.post("/v1/dedup/sweeps", json=body, headers=headers)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "queued"
    return str(response.json()["id"])


async def test_a_sweep_opens_adjudications_for_duplicates_and_changes_no_status(
    client, api_key_factory, session_factory, settings, model, small_chunks, registry
):
    registrar = await api_key_factory("registrar")
    # One pair of the same person already went to adjudication at registration: the sweep must not send it.
    by_person: dict[int, list[uuid.UUID]] = {}
    for ident, person in registry.items():
        by_person.setdefault(person, []).append(ident)
    first_twice = next(ids for ids in by_person.values() if len(ids) == 2)
    older, newer = sorted(first_twice)
    async with session_factory.begin() as session:
        await AdjudicationRepository(session).open(
            newer, [{"beneficiary_id": str(older), "registry": "internal", "score": 0.9, "matched_on": ["phone"]}]
        )
    before = await _statuses(session_factory)

    sweep_id = await _start(client, registrar)
    await run_jobs(session_factory, settings)

    report = (await client.get(f"/v1/dedup/sweeps/{sweep_id}", headers=registrar)).json()
    assert report["status"] == "completed", report
    assert report["records"] == len(registry)
    assert report["progress"] == {"chunks_done": 6, "chunks_total": 6}
    assert report["model_version"] == model.version
    assert report["review_threshold"] == DedupSettings().review_threshold
    assert await _statuses(session_factory) == before  # not one status (nor duplicate_of) changed
    pairs = await _sweep_pairs(session_factory, sweep_id)
    assert report["pairs_matched"] == len(pairs) > 0
    assert report["pairs_compared"] >= len(pairs)
    true_pairs = {(a, b) for a, b in pairs if registry[a] == registry[b]}
    assert len(true_pairs) >= 0.9 * sum(len(ids) * (len(ids) - 1) // 2 for ids in by_person.values())
    assert 0 < report["clusters"] <= len(pairs)

    adjudications = [a for a in await _rows(session_factory, Adjudication) if a.beneficiary_id != newer]
    claimed = await _rows(session_factory, AdjudicationPair)
    assert (older, newer) not in {(c.low_id, c.high_id) for c in claimed}
    assert len(claimed) == report["pairs_sent_to_adjudication"] == len(pairs) - ((older, newer) in pairs)
    assert report["adjudications_opened"] == len(adjudications)
    for adjudication in adjudications:
        assert adjudication.status == "open"
        matched = {uuid.UUID(m["beneficiary_id"]) for m in adjudication.matches}
        # The newer record is the one under review, the older ones its matches, best first.
        assert all(other < adjudication.beneficiary_id for other in matched)
        assert {(m, adjudication.beneficiary_id) for m in matched} <= pairs
        scores = [m["score"] for m in adjudication.matches]
        assert scores == sorted(scores, reverse=True)
        assert all(m["sweep_id"] == sweep_id and m["registry"] == "internal" for m in adjudication.matches)
    listed = (await client.get("/v1/adjudications?status=open", headers=registrar)).json()["items"]
    assert len(listed) == len(adjudications) + 1

    # The same sweep again finds the same pairs and sends none of them again.
    again = await _start(client, registrar)
    await run_jobs(session_factory, settings)
    second = (await client.get(f"/v1/dedup/sweeps/{again}", headers=registrar)).json()
    assert await _sweep_pairs(session_factory, again) == pairs
    assert (second["adjudications_opened"], second["pairs_sent_to_adjudication"]) == (0, 0)
    assert await _statuses(session_factory) == before
    listed = (await client.get("/v1/dedup/sweeps", headers=registrar)).json()["items"]
    assert [s["id"] for s in listed] == [sweep_id, again]


async def test_decided_pairs_and_people_no_longer_matchable_are_not_sent(
    client, api_key_factory, session_factory, settings, model, small_chunks, registry
):
    admin = await api_key_factory("admin")
    first = await _start(client, admin)
    await run_jobs(session_factory, settings)
    pairs = await _sweep_pairs(session_factory, first)
    (adjudication, *_) = await _rows(session_factory, Adjudication)
    other = uuid.UUID(adjudication.matches[0]["beneficiary_id"])
    decided = await client.post(
        f"/v1/adjudications/{adjudication.id}/decision", json={"decision": "not_duplicate"}, headers=admin
    )
    assert decided.status_code == 200, decided.text
    # A new record identical to the reviewed one: its pair with the person judged different is new.
    async with session_factory() as session:
        person = await session.get(Beneficiary, adjudication.beneficiary_id)
        assert person is not None
        ring = await keyring(session)
        record = open_profile(ring, person.id, person.key_version, person.data_key, person.profile)  # type: ignore[arg-type]
    (copy,) = await insert_people(session_factory, [record])
    second = await _start(client, admin)
    await run_jobs(session_factory, settings)
    found = await _sweep_pairs(session_factory, second)
    assert (adjudication.beneficiary_id, copy) in found
    assert pairs <= found
    claimed = {(c.low_id, c.high_id) for c in await _rows(session_factory, AdjudicationPair)}
    assert (other, adjudication.beneficiary_id) in claimed  # decided: still claimed once, never again
    report = (await client.get(f"/v1/dedup/sweeps/{second}", headers=admin)).json()
    assert report["pairs_sent_to_adjudication"] == len(found - pairs) > 0
    open_for_copy = [a for a in await _rows(session_factory, Adjudication) if a.beneficiary_id == copy]
    assert [a.status for a in open_for_copy] == ["open"]


async def test_a_sweep_stopped_or_failed_part_way_resumes_to_the_same_result(
    client, api_key_factory, session_factory, settings, model, small_chunks, registry, monkeypatch
):
    admin = await api_key_factory("admin")
    async with session_factory.begin() as session:
        sweep = await service.start_sweep(session, _Actor(), None, enqueue_job=False)
    stops = iter([False, True])  # stop after the second committed chunk, as a worker asked to stop does

    def checkpoint() -> None:
        if next(stops, False):
            raise JobInterrupted

    with pytest.raises(JobInterrupted):
        await service.run_sweep(session_factory, sweep.id, service.SweepRun(checkpoint=checkpoint))
    async with session_factory() as session:
        stopped = await session.get(DedupSweep, sweep.id)
    assert stopped is not None
    assert (stopped.status, len(stopped.chunks_done)) == ("running", 2)

    # Then a crash inside a chunk, before it commits: what it had found is rolled back with it.
    real = service.registry().open_adjudications
    calls = Counter[str]()

    async def crash_on_second(session, sweep_id, pairs):
        calls["open"] += 1
        opened = await real(session, sweep_id, pairs)
        if calls["open"] == 2:
            raise RuntimeError("worker died")
        return opened

    monkeypatch.setattr(service.registry(), "open_adjudications", crash_on_second)
    with pytest.raises(RuntimeError):
        await service.run_sweep(session_factory, sweep.id, service.SweepRun())
    monkeypatch.undo()
    monkeypatch.setattr(sweeps, "CHUNK_RECORDS", 40)
    async with session_factory() as session:
        crashed = await session.get(DedupSweep, sweep.id)
    assert crashed is not None
    assert len(crashed.chunks_done) == 3

    await service.run_sweep(session_factory, sweep.id, service.SweepRun())
    resumed = (await client.get(f"/v1/dedup/sweeps/{sweep.id}", headers=admin)).json()
    assert resumed["status"] == "completed"

    # A sweep run straight through on the same registry finds exactly the same pairs and counts.
    clean = await _start(client, admin)
    await run_jobs(session_factory, settings)
    straight = (await client.get(f"/v1/dedup/sweeps/{clean}", headers=admin)).json()
    assert await _sweep_pairs(session_factory, str(sweep.id)) == await _sweep_pairs(session_factory, clean)
    for field in ("records", "pairs_compared", "pairs_matched", "clusters"):
        assert resumed[field] == straight[field], field
    assert straight["pairs_sent_to_adjudication"] == 0
    # No pair was sent twice: every claimed pair is one match of one adjudication, and back.
    adjudications = await _rows(session_factory, Adjudication)
    matches = [(uuid.UUID(m["beneficiary_id"]), a.beneficiary_id) for a in adjudications for m in a.matches]
    assert len(matches) == len(set(matches)) == resumed["pairs_sent_to_adjudication"]
    assert resumed["adjudications_opened"] == len(adjudications)
    async with session_factory() as session:
        claimed = (await session.execute(select(func.count()).select_from(AdjudicationPair))).scalar_one()
    assert claimed == len(matches)


async def test_a_programme_sweep_compares_its_enrolled_people_only(
    client, api_key_factory, session_factory, settings, model, registry
):
    admin = await api_key_factory("admin")
    officer = await api_key_factory("programme_officer")
    programme = await make_programme(client, admin)
    people = sorted(registry)[:100]
    enrolled = await client.post(
        f"/v1/programmes/{programme['id']}/enrolments", json={"beneficiary_ids": [str(i) for i in people]},
        headers=officer,
    )  # fmt: skip
    assert enrolled.status_code == 200, enrolled.text
    sweep_id = await _start(client, admin, programme_id=programme["id"])
    await run_jobs(session_factory, settings)
    report = (await client.get(f"/v1/dedup/sweeps/{sweep_id}", headers=admin)).json()
    assert (report["status"], report["records"], report["programme_id"]) == ("completed", 100, programme["id"])
    assert all(a in people and b in people for a, b in await _sweep_pairs(session_factory, sweep_id))

    nobody = await make_programme(client, admin, name="Nobody enrolled yet")
    empty = await _start(client, admin, programme_id=nobody["id"])
    await run_jobs(session_factory, settings)
    report = (await client.get(f"/v1/dedup/sweeps/{empty}", headers=admin)).json()
    assert (report["status"], report["records"], report["pairs_compared"], report["clusters"]) == ("completed", 0, 0, 0)
    assert report["progress"] == {"chunks_done": 0, "chunks_total": 0}


async def test_sweep_requests_are_checked(client, api_key_factory):
    admin = await api_key_factory("admin")
    unknown = await client.post("/v1/dedup/sweeps", json={"programme_id": str(uuid.uuid4())}, headers=admin)
    assert assert_problem(unknown, 422)["errors"][0]["field"] == "programme_id"
    assert_problem(await client.post("/v1/dedup/sweeps", json={"engine": "oracle"}, headers=admin), 422)
    assert_problem(await client.post("/v1/dedup/sweeps", json={"colour": "red"}, headers=admin), 422)
    assert_problem(await client.get(f"/v1/dedup/sweeps/{uuid.uuid4()}", headers=admin), 404)
    replayed = [
        await client.post("/v1/dedup/sweeps", json={}, headers={**admin, "Idempotency-Key": "sweep-1"})
        for _ in range(2)
    ]
    assert replayed[0].json() == replayed[1].json()


class _Actor:
    id = uuid.UUID("00000000-0000-7000-8000-0000000000aa")
    name = "test operator"


async def test_a_sweep_resumed_after_its_records_changed_starts_its_chunks_over(
    client, api_key_factory, session_factory, settings, model, small_chunks, registry
):
    admin = await api_key_factory("admin")
    async with session_factory.begin() as session:
        sweep = await service.start_sweep(session, _Actor(), None, enqueue_job=False)

    def stop_after_one() -> None:
        raise JobInterrupted

    with pytest.raises(JobInterrupted):
        await service.run_sweep(session_factory, sweep.id, service.SweepRun(checkpoint=stop_after_one))
    # Someone leaves the registry meanwhile: every later row number, and so every chunk, shifts.
    async with session_factory.begin() as session:
        first = (await session.execute(select(Beneficiary.id).order_by(Beneficiary.created_at).limit(1))).scalar_one()
        await session.execute(update(Beneficiary).where(Beneficiary.id == first).values(status="inactive"))

    await service.run_sweep(session_factory, sweep.id, service.SweepRun())
    resumed = (await client.get(f"/v1/dedup/sweeps/{sweep.id}", headers=admin)).json()
    clean = await _start(client, admin)
    await run_jobs(session_factory, settings)
    straight = (await client.get(f"/v1/dedup/sweeps/{clean}", headers=admin)).json()
    assert resumed["records"] == len(registry) - 1
    for field in ("records", "pairs_compared", "pairs_matched", "clusters"):
        assert resumed[field] == straight[field], field
    assert await _sweep_pairs(session_factory, str(sweep.id)) == await _sweep_pairs(session_factory, clean)
