"""`cbi-service dedup train` and `dedup sweep`, run as an operator runs them."""

from __future__ import annotations

from sqlalchemy import select

from cbi_service.beneficiaries.models import Beneficiary
from cbi_service.dedup import service
from cbi_service.dedup.models import DedupModel, DedupSweep
from cbi_service.dedup.training import MIN_RECORDS
from tests.cli.support import cli, cli_env, raw_key
from tests.dedup.support import hand_model, insert_people, registry_records


async def test_train_refuses_a_registry_too_small_to_learn_from(database_url, api_key_factory, session_factory):
    await insert_people(session_factory, [record for _, record in registry_records(50)])
    admin = await api_key_factory("admin")

    result = cli("dedup", "train", env=cli_env(DATABASE_URL=database_url, CBI_API_KEY=raw_key(admin)))

    assert result.returncode == 1
    assert f"needs at least {MIN_RECORDS} matchable records" in result.stderr
    assert "the registry has 50" in result.stderr
    async with session_factory() as session:
        assert (await session.execute(select(DedupModel))).first() is None


async def test_train_learns_stores_and_activates_a_model(database_url, api_key_factory, session_factory):
    await insert_people(session_factory, [r for _, r in registry_records(1200, seed=2, duplicate_share=0.3)])
    admin = await api_key_factory("admin")
    registrar = await api_key_factory("registrar")
    env = cli_env(DATABASE_URL=database_url, CBI_API_KEY=raw_key(registrar))
    assert cli("dedup", "train", env=env).returncode == 1  # an admin's decision

    result = cli("dedup", "train", "--version", "cli-1", env=env | {"CBI_API_KEY": raw_key(admin)}, timeout=300)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("trained model cli-1 on 1200 records in ")
    assert lines[0].endswith(" s; now active")
    assert any(line.split()[0] == "documents" and "same_number +" in line for line in lines[2:])
    assert len(lines) == 2 + 7
    async with session_factory() as session:
        model = await service.active_model(session)
    assert model.version == "cli-1"
    assert model.trained["records"] == 1200


async def test_sweep_runs_with_progress_and_resumes(database_url, api_key_factory, session_factory):
    async with session_factory.begin() as session:
        await service.store_model(session, None, hand_model())
    ids = await insert_people(session_factory, [record for _, record in registry_records(300)])
    registrar = await api_key_factory("registrar")
    env = cli_env(DATABASE_URL=database_url, CBI_API_KEY=raw_key(registrar))

    result = cli("dedup", "sweep", "--workers", "1", env=env)

    assert result.returncode == 0, result.stderr
    async with session_factory() as session:
        (sweep,) = (await session.execute(select(DedupSweep))).scalars().all()
        statuses = set((await session.execute(select(Beneficiary.status))).scalars())
    assert (sweep.status, sweep.records) == ("completed", len(ids))
    assert result.stdout.strip() == (
        f"sweep {sweep.id}: completed; 300 records, {sweep.pairs_compared} pairs compared, {sweep.pairs_matched}"
        f" at or above 0.6, {sweep.clusters} clusters, {sweep.adjudications_opened} adjudications opened"
        f" ({sweep.pairs_sent_to_adjudication} pairs sent)"
    )
    assert "chunks 1/1" in result.stderr
    assert sweep.adjudications_opened > 0
    assert statuses == {"active"}

    again = cli("dedup", "sweep", "--resume", str(sweep.id), env=env)
    assert again.returncode == 0, again.stderr
    assert f"sweep {sweep.id}: completed" in again.stdout  # finished already: nothing more to do

    auditor = await api_key_factory("auditor")
    refused = cli("dedup", "sweep", env=env | {"CBI_API_KEY": raw_key(auditor)})
    assert refused.returncode == 1
    assert "registrar" in refused.stderr
