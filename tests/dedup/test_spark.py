"""The cluster engine: the same sweep on Spark `local[2]` finds the same pairs as on DuckDB."""

from __future__ import annotations

import pytest

from cbi_service.dedup import sweeps
from cbi_service.kit.ids import new_id
from tests.dedup.support import hand_model, registry_records


@pytest.mark.slow
def test_spark_finds_the_pairs_duckdb_finds(tmp_path):
    labelled = registry_records(1500, seed=21)
    path = tmp_path / "records.parquet"
    writer = sweeps.InputWriter(path)
    writer.write([(new_id(), record.to_profile()) for _, record in labelled])
    writer.close()
    model, chunks = hand_model(), 3

    def swept(engine: str) -> tuple[dict[tuple[str, str], float], int, dict[tuple[str, str], tuple[str, ...]]]:
        plan = sweeps.SweepPlan(path, model, 0.6, chunks, engine=engine, spark_master="local[2]")
        results = list(sweeps.run_chunks(plan, list(range(1, chunks + 1))))
        pairs = [pair for result in results for pair in result.pairs]
        found = {(str(p.low_id), str(p.high_id)): p.match_probability for p in pairs}
        return (
            found,
            sum(r.pairs_compared for r in results),
            {k: p.matched_on for k, p in zip(found, pairs, strict=True)},
        )

    duckdb_pairs, duckdb_compared, duckdb_on = swept("duckdb")
    spark_pairs, spark_compared, spark_on = swept("spark")
    assert len(duckdb_pairs) > 100
    assert spark_pairs.keys() == duckdb_pairs.keys()
    assert spark_compared == duckdb_compared
    for pair, probability in duckdb_pairs.items():
        assert spark_pairs[pair] == pytest.approx(probability, abs=1e-9)
    assert spark_on == duckdb_on
