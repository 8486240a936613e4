"""`cbi-service dedup train` and `dedup sweep`, run as an operator runs them."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select

from cbi_service.beneficiaries.models import Beneficiary
from cbi_service.dedup import service
from cbi_service.dedup.comparisons import COMPARISONS
from cbi_service.dedup.models import DedupModel, DedupSweep
from cbi_service.dedup.settings import DedupSettings
from cbi_service.dedup.training import MIN_RECORDS
from tests.cli.support import cli, cli_env, invoke, raw_key
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


async def test_train_learns_stores_and_activates_a_model(database_url, api_key_factory, session_factory, monkeypatch):
    """What the command does around Splink: every matchable record in, the model stored, activated and
    printed. (Splink's estimation itself, a minute on a thousand records and not always converging, is
    `training`'s to test; here it is a model made by hand from the records it is given.)"""
    from cbi_service.dedup import training

    ids = await insert_people(session_factory, [r for _, r in registry_records(MIN_RECORDS + 20)])
    await insert_people(session_factory, [r for _, r in registry_records(30, seed=8)], status="duplicate")
    given: list[list[str]] = []

    def learn(records, *, version, seed=1):
        given.append([ident for ident, _ in records])
        return replace(hand_model(version), trained={"records": len(records), "engine": "by hand"})

    monkeypatch.setattr(training, "train", learn)
    admin = await api_key_factory("admin")
    registrar = await api_key_factory("registrar")
    assert (await invoke("dedup", "train", "--api-key", raw_key(registrar), DATABASE_URL=database_url)).exit_code == 1

    result = await invoke(
        "dedup", "train", "--version", "cli-1", "--api-key", raw_key(admin), DATABASE_URL=database_url
    )

    assert result.exit_code == 0, result.output
    assert given == [[str(i) for i in ids]]  # the matchable ones only, in id order
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"trained model cli-1 on {MIN_RECORDS + 20} records in ")
    assert lines[0].endswith(" s; now active")
    assert lines[1] == "prior (two records of the registry being one person): 0.0005"
    weight = hand_model().weights[3][1]
    assert lines[5] == (
        f"  documents      same_number {weight:+.2f}, one_edit {hand_model().weights[3][2]:+.2f},"
        f" two_edits {hand_model().weights[3][3]:+.2f}, other_number_same_type {hand_model().weights[3][4]:+.2f}"
    )
    assert len(lines) == 2 + len(COMPARISONS)
    async with session_factory() as session:
        model = await service.active_model(session)
    assert (model.version, model.trained["records"]) == ("cli-1", MIN_RECORDS + 20)


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
        f" at or above {DedupSettings().review_threshold}, {sweep.clusters} clusters,"
        f" {sweep.adjudications_opened} adjudications opened"
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
