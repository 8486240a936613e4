"""Stored match models: one active at a time, read once per version, the shipped one until one is trained;
and Splink scoring with a stored model's m and u gives the model's own weights."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cbi_service.dedup import service, sweeps
from cbi_service.dedup.comparisons import gammas, sql_levels
from cbi_service.dedup.models import DedupModel
from cbi_service.dedup.repository import ModelRepository
from cbi_service.kit.errors import Conflict
from cbi_service.kit.ids import new_id
from tests.dedup.support import hand_model, registry_records


async def test_storing_a_model_makes_it_the_only_active_one(session_factory, monkeypatch):
    shipped = hand_model("shipped")
    monkeypatch.setattr(service, "default_model", lambda: shipped)
    async with session_factory() as session:
        assert await service.active_model(session) is shipped

    async with session_factory.begin() as session:
        await service.store_model(session, None, hand_model("v1"))
    async with session_factory() as session:
        first = await service.active_model(session)
        assert first.version == "v1"
        assert await service.active_model(session) is first  # parsed once per version, then kept

    async with session_factory.begin() as session:
        await service.store_model(session, None, hand_model("v2", prior=0.001))
    async with session_factory() as session:
        second = await service.active_model(session)
        rows = (await session.execute(select(DedupModel).order_by(DedupModel.version))).scalars().all()
    assert (second.version, second.prior) == ("v2", 0.001)
    assert [(row.version, row.active) for row in rows] == [("v1", False), ("v2", True)]
    assert rows[1].trained == {"by": "hand"}

    async with session_factory.begin() as session:
        await ModelRepository(session).activate("v1")
    async with session_factory() as session:
        assert (await service.active_model(session)).version == "v1"

    with pytest.raises(Conflict):
        async with session_factory.begin() as session:
            await service.store_model(session, None, hand_model("v1"))


async def test_the_database_refuses_two_active_models(session_factory):
    async with session_factory.begin() as session:
        await service.store_model(session, None, hand_model("v1"))
    second = DedupModel(version="v2", artefact=hand_model("v2").to_json(), trained={}, active=True)
    async with session_factory() as session:
        with pytest.raises(IntegrityError):
            await ModelRepository(session).add(second)


def test_splink_scores_pairs_with_the_models_own_weights(tmp_path):
    """Splink's match weight of every pair it finds is what the model gives the same pair online."""
    model = hand_model()
    labelled = registry_records(600, seed=9)
    ids = [new_id() for _ in labelled]
    records = dict(zip(ids, [record for _, record in labelled], strict=True))
    path = tmp_path / "records.parquet"
    writer = sweeps.InputWriter(path)
    writer.write([(ident, record.to_profile()) for ident, record in records.items()])
    writer.close()
    plan = sweeps.SweepPlan(path, model, 0.01, 2)
    pairs = [pair for result in sweeps.run_chunks(plan, [1, 2]) for pair in result.pairs]
    assert len(pairs) > 50
    for pair in pairs:
        probe, candidate = records[pair.high_id], records[pair.low_id]
        score = model.score(probe, candidate, gammas(probe, candidate))
        assert pair.match_weight == pytest.approx(score.match_weight, abs=1e-9)
        assert pair.match_probability == pytest.approx(score.probability, abs=1e-9)
        assert pair.match_probability >= 0.01
        assert pair.matched_on == tuple(score.agreeing)


def test_the_sweeps_level_function_gives_the_digits_of_sql_levels():
    """DuckDB sweeps read records by number, Spark and training read profiles: the same digits."""
    records = [record for _, record in registry_records(400, seed=4)]
    levels = sweeps.PairLevels(records)
    import json

    import pyarrow as pa

    probes = list(range(1, 400))
    candidates = [(i * 7919) % 400 for i in probes]
    digits = levels(pa.array(probes, pa.int64()), pa.array(candidates, pa.int64())).to_pylist()
    profiles = [json.dumps(r.to_profile()) for r in records]
    assert digits == [sql_levels(profiles[p], profiles[c]) for p, c in zip(probes, candidates, strict=True)]
    assert len(set(digits)) > 10


async def test_registrations_are_scored_by_the_active_model(client, api_key_factory, session_factory):
    from dataclasses import replace

    from cbi_service.dedup.model import default_model
    from tests.beneficiaries.support import person_body

    headers = await api_key_factory("registrar")
    await client.post("/v1/beneficiaries", json=person_body(), headers=headers)
    written_short = person_body(given_names="M. José", documents=[], phone=None, external_ref=None)
    before = (await client.post("/v1/dedup/check", json=written_short, headers=headers)).json()
    assert before["status"] != "unique"

    sceptical = replace(default_model(), version="sceptical", prior=1e-12)  # hardly anyone is anyone else
    async with session_factory.begin() as session:
        await service.store_model(session, None, sceptical)
    after = (await client.post("/v1/dedup/check", json=written_short, headers=headers)).json()
    assert after == {"status": "unique", "matches": [], "registries": [{"registry": "internal", "status": "checked"}]}
