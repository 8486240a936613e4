"""The registry-wide sweep's engine: Splink over every matchable record, in chunks, on DuckDB or Spark.

The records are laid out once as Splink input rows (`training.splink_row`), numbered in the order of their
ids (time-ordered, so the older record of a pair is always on the left). Splink compares the pairs the
online blocking keys give (`training.prediction_rules`) and scores them with the active model's m and u
as they are (`training.prediction_settings`): the same weights as registrations, without their rules
on top (a shared document, two automatic candidates), since a sweep only opens adjudications. The left
side is split into chunks by Splink's own hashing (`predict_chunk`), so the caller can commit each
chunk's result before the next and a restarted sweep goes on where it stopped.

Levels are the service's (`comparisons.gammas`), always with the newer record as the probe and the older
as the candidate, as a registration compares them. On DuckDB the level function reads the records by
their number from memory (`PairLevels`), once per pair: Splink's SQL asks for a pair's levels once per
comparison level (some twenty times), and decoding two JSON profiles for each ask cost more than the
comparison itself. With more than one worker, chunks run in worker processes, each on its own DuckDB
over the same Parquet file: Python level functions hold the GIL, so one process uses one core. On Spark
the level function is the profile-based `sql_levels`, a Python UDF, so executors need nothing but the
rows; both compute the digits with the same `gammas`.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import os
import sys
import uuid
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cbi_service.dedup.comparisons import gammas, sql_levels
from cbi_service.dedup.embedded_engine import duckdb_connection
from cbi_service.dedup.model import MatchModel
from cbi_service.dedup.normalize import MatchRecord
from cbi_service.dedup.training import LEVELS_FUNCTION, splink_row

SWEEP_LEVELS_FUNCTION = "cbi_sweep_levels"
# The newer record (right, higher number) is the probe, as in a registration.
DUCKDB_LEVELS_SQL = f"{SWEEP_LEVELS_FUNCTION}(unique_id_r, unique_id_l)"
SPARK_LEVELS_SQL = f"{LEVELS_FUNCTION}(profile_r, profile_l)"
# DuckDB's own memory in a worker (its tables and the pairs of a chunk); past it, it spills to disk.
DUCKDB_MEMORY_LIMIT = "768MiB"
CHUNK_RECORDS = 50_000  # left-side records per chunk: a chunk's pairs fit in memory, progress moves often
_PAIR_CACHE = 200_000

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FoundPair:
    """A pair at or above the review threshold: `high_id` is the newer record (the one a registration
    would have flagged), `low_id` the older it matches."""

    low_id: uuid.UUID
    high_id: uuid.UUID
    match_probability: float
    match_weight: float
    matched_on: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ChunkResult:
    chunk: int
    pairs_compared: int
    pairs: list[FoundPair]


def chunk_count(records: int) -> int:
    """Chunks of the left side for `records` (none for an empty registry: nothing to compare)."""
    return math.ceil(records / CHUNK_RECORDS)


def levels_digits(probe: MatchRecord, candidate: MatchRecord) -> str:
    """One digit per comparison, as `comparisons.sql_levels` gives them for the same two profiles."""
    return "".join(str(level) for level in gammas(probe, candidate).levels)


class InputWriter:
    """Splink's input rows for pages of (id, stored profile), given in id order, into a Parquet file; the
    row's number is its `unique_id`, so the older record of a pair is always the left one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records = 0
        self.digest = hashlib.sha256()
        self._writer: Any = None

    def write(self, page: list[tuple[uuid.UUID, dict[str, Any]]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = []
        for ident, profile in page:
            row = splink_row(str(ident), MatchRecord.from_profile(profile))
            row["beneficiary_id"], row["unique_id"] = row["unique_id"], self.records
            self.digest.update(ident.bytes)
            rows.append(row)
            self.records += 1
        table = pa.Table.from_pylist(rows, schema=input_schema())
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema)
        self._writer.write_table(table)

    def close(self) -> None:
        import pyarrow.parquet as pq

        if self._writer is None:
            pq.write_table(input_schema().empty_table(), self.path)
        else:
            self._writer.close()


def input_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("unique_id", pa.int64()),
            ("beneficiary_id", pa.string()),
            ("profile", pa.string()),
            ("given_tf", pa.string()),
            ("family_tf", pa.string()),
            ("given_code", pa.string()),
            ("family_code", pa.string()),
            ("birth", pa.string()),
            ("birth_year", pa.int32()),
            ("birth_key", pa.string()),
            ("document", pa.string()),
            ("phone", pa.string()),
            ("sex", pa.string()),
            ("nationality", pa.string()),
            ("keys", pa.list_(pa.string())),
        ]
    )


class PairLevels:
    """DuckDB's level function over record numbers: the records decoded once, each pair's digits kept
    while Splink's SQL asks for them again (the asks for one vector of pairs come one after the other)."""

    def __init__(self, records: list[MatchRecord]) -> None:
        self.records = records
        self.cache: dict[int, str] = {}

    def __call__(self, probes: Any, candidates: Any) -> Any:
        import pyarrow as pa

        records, cache = self.records, self.cache
        if len(cache) > _PAIR_CACHE:
            cache.clear()
        out = []
        for probe, candidate in zip(probes.to_numpy().tolist(), candidates.to_numpy().tolist(), strict=True):
            key = (probe << 32) | candidate
            digits = cache.get(key)
            if digits is None:
                digits = cache[key] = levels_digits(records[probe], records[candidate])
            out.append(digits)
        return pa.array(out, pa.string())


class Sweeper(ABC):
    """Runs chunks of one sweep on one engine; `chunk(k)` returns chunk k's compared count and pairs."""

    def __init__(self, linker: Any, model: MatchModel, threshold: float, chunks: int) -> None:
        self.linker = linker
        self.model = model
        self.threshold = threshold
        self.chunks = chunks

    @abstractmethod
    def records(self, numbers: Iterable[int]) -> dict[int, MatchRecord]:
        """The match records of these input rows (by number)."""

    @abstractmethod
    def beneficiary_id(self, number: int) -> str:
        """The id of the person an input row (by number) is."""

    def chunk(self, number: int) -> ChunkResult:
        inference = self.linker.inference
        window = (number, self.chunks)
        blocked = inference.compute_blocked_pairs_for_predict_chunk(left_chunk=window)
        compared = count_rows(blocked)
        predicted = inference.predict_chunk(
            left_chunk=window, threshold_match_probability=self.threshold, warning_mode="never"
        )
        frame = predicted.as_pandas_dataframe()
        predicted.drop_table_from_database_and_remove_from_cache()
        blocked.drop_table_from_database_and_remove_from_cache()
        lows = [int(v) for v in frame["unique_id_l"]]
        highs = [int(v) for v in frame["unique_id_r"]]
        records = self.records({*lows, *highs})
        pairs = []
        for low, high, probability, weight in zip(
            lows, highs, frame["match_probability"], frame["match_weight"], strict=True
        ):
            probe, candidate = records[high], records[low]
            score = self.model.score(probe, candidate, gammas(probe, candidate))
            pairs.append(
                FoundPair(
                    low_id=uuid.UUID(self.beneficiary_id(low)),
                    high_id=uuid.UUID(self.beneficiary_id(high)),
                    match_probability=float(probability),
                    match_weight=float(weight),
                    matched_on=tuple(score.agreeing),
                )
            )
        return ChunkResult(number, compared, pairs)


def count_rows(frame: Any) -> int:
    """Rows of a Splink table, counted by its engine."""
    if type(frame).__name__.startswith("Spark"):
        return int(frame.as_spark_dataframe().count())
    return int(frame.as_duckdbpyrelation().count("*").fetchall()[0][0])


def _register_tf(linker: Any, db_api: Any, model: MatchModel, spark: Any = None) -> None:
    """The model's frequencies as Splink's lookups (Spark is told the schema: a table may be empty)."""
    from cbi_service.dedup.training import term_frequency_tables

    for column, frame in term_frequency_tables(model).items():
        table = frame if spark is None else spark.createDataFrame(frame, f"{column} string, tf_{column} double")
        linker.table_management.register_term_frequency_lookup(db_api.register(table), column)


class DuckDBSweeper(Sweeper):
    """Splink on an embedded DuckDB of its own; the records it scores held compactly in memory.

    The input rows go straight from the Parquet file into a DuckDB table (no Python copy of them); the
    match records are decoded a batch at a time, their name tokens interned (names repeat, so a million
    records share a few thousand strings); DuckDB's memory is bounded and spills to disk beyond it.
    """

    def __init__(
        self, path: Path, model: MatchModel, threshold: float, chunks: int, *, threads: int = 1,
        memory_limit: str = DUCKDB_MEMORY_LIMIT,
    ) -> None:  # fmt: skip
        import pyarrow.parquet as pq
        from splink import DuckDBAPI, Linker

        from cbi_service.dedup.training import prediction_settings

        source = pq.ParquetFile(path)
        # A million long-lived objects: the cyclic collector would scan them again and again as they are
        # made (it doubled the time), and after, in every collection; they hold no cycles.
        gc.disable()
        try:
            self._records = [
                _compact(MatchRecord.from_profile(json.loads(profile)))
                for batch in source.iter_batches(batch_size=20_000, columns=["profile"])
                for profile in batch.column(0).to_pylist()
            ]
        finally:
            gc.enable()
        gc.freeze()
        self._ids = source.read(columns=["beneficiary_id"]).column(0).combine_chunks()
        connection = self._connection = duckdb_connection(threads=threads, memory_limit=memory_limit)
        levels: Any = PairLevels(self._records)
        connection.create_function(
            SWEEP_LEVELS_FUNCTION, levels, ["BIGINT", "BIGINT"], "VARCHAR", type="arrow", side_effects=False
        )
        columns = [name for name in source.schema_arrow.names if name not in {"profile", "beneficiary_id"}]
        connection.read_parquet(str(path)).select(*columns).create("sweep_records")
        db_api = DuckDBAPI(connection)
        settings = prediction_settings(model, "duckdb", levels_sql=DUCKDB_LEVELS_SQL)
        linker = Linker(db_api.register("sweep_records"), settings, log_level=logging.WARNING)
        _register_tf(linker, db_api, model)
        super().__init__(linker, model, threshold, chunks)

    def records(self, numbers: Iterable[int]) -> dict[int, MatchRecord]:
        return {n: self._records[n] for n in numbers}

    def beneficiary_id(self, number: int) -> str:
        return str(self._ids[number].as_py())

    def close(self) -> None:
        """Give the records back to the collector (a sweep run inside a long-lived process)."""
        self._connection.close()
        self._records = []
        gc.unfreeze()


def _compact(record: MatchRecord) -> MatchRecord:
    intern = sys.intern
    return replace(
        record,
        given=tuple(intern(t) for t in record.given),
        family=tuple(intern(t) for t in record.family),
        sex=intern(record.sex),
        nationality=intern(record.nationality) if record.nationality else None,
    )


class SparkSweeper(Sweeper):
    """Splink's SparkAPI on `master` (local[N] or a cluster URL); the level function a Python UDF."""

    def __init__(self, path: Path, model: MatchModel, threshold: float, chunks: int, *, master: str) -> None:
        import pandas as pd
        from pyspark.sql import SparkSession
        from pyspark.sql.types import StringType
        from splink import Linker, SparkAPI

        from cbi_service.dedup.training import prediction_settings

        builder = (
            SparkSession.builder.master(master)
            .appName("cbi-dedup-sweep")
            .config("spark.sql.shuffle.partitions", "8")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        )
        if master.startswith("local"):  # executors are this machine's: this interpreter, with the service
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        spark = builder.getOrCreate()
        spark.udf.register(LEVELS_FUNCTION, sql_levels, StringType())
        self.spark = spark
        local = pd.read_parquet(path)
        self._profiles: list[str] = local["profile"].tolist()
        self._ids: list[str] = local["beneficiary_id"].tolist()
        # Lineage broken by persisting: a checkpoint directory would have to be shared storage on a cluster.
        api: Any = SparkAPI
        db_api = api(spark_session=spark, break_lineage_method="persist", register_udfs_automatically=False)
        frame = db_api.register(spark.createDataFrame(local.drop(columns=["beneficiary_id"])))
        del local
        settings = prediction_settings(model, "spark", levels_sql=SPARK_LEVELS_SQL)
        linker = Linker(frame, settings, log_level=logging.WARNING)
        _register_tf(linker, db_api, model, spark)
        super().__init__(linker, model, threshold, chunks)

    def records(self, numbers: Iterable[int]) -> dict[int, MatchRecord]:
        return {n: MatchRecord.from_profile(json.loads(self._profiles[n])) for n in numbers}

    def beneficiary_id(self, number: int) -> str:
        return self._ids[number]


# Worker processes: each builds its DuckDB sweeper once, then runs the chunks it is handed.
_worker: DuckDBSweeper | None = None


def _start_worker(path: str, artefact: dict[str, Any], threshold: float, chunks: int) -> None:
    global _worker  # noqa: PLW0603 - one sweeper per worker process
    _worker = DuckDBSweeper(Path(path), MatchModel.from_json(artefact), threshold, chunks)


def _run_in_worker(number: int) -> ChunkResult:
    assert _worker is not None
    return _worker.chunk(number)


@dataclass
class SweepPlan:
    """What a sweep runs: its input file, model, threshold, chunks, and where."""

    path: Path
    model: MatchModel
    threshold: float
    chunks: int
    engine: str = "duckdb"
    workers: int = 1
    spark_master: str = "local[2]"


def run_chunks(plan: SweepPlan, pending: list[int]) -> Generator[ChunkResult, None, None]:
    """Chunk results as they finish (in any order with several workers); a consumer that stops early
    leaves no worker behind."""
    if not pending:
        return
    if plan.engine == "spark":
        spark = SparkSweeper(plan.path, plan.model, plan.threshold, plan.chunks, master=plan.spark_master)
        try:
            for number in pending:
                yield spark.chunk(number)
        finally:
            spark.spark.stop()
        return
    workers = min(plan.workers, len(pending))
    if workers <= 1:
        sweeper = DuckDBSweeper(plan.path, plan.model, plan.threshold, plan.chunks, threads=max(1, os.cpu_count() or 1))
        try:
            for number in pending:
                yield sweeper.chunk(number)
        finally:
            sweeper.close()
        return
    yield from _in_processes(plan, pending, workers)


def _in_processes(plan: SweepPlan, pending: list[int], workers: int) -> Iterator[ChunkResult]:
    """Every chunk queued at once, so a worker starts its next chunk while the caller commits a result."""
    import multiprocessing
    from concurrent.futures import as_completed

    context = multiprocessing.get_context("spawn")  # the caller runs an event loop and threads: no fork
    init = (str(plan.path), plan.model.to_json(), plan.threshold, plan.chunks)
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=init)
    try:
        for future in as_completed([pool.submit(_run_in_worker, number) for number in pending]):
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def cluster_count(pairs: list[tuple[str, str]]) -> int:
    """Connected components (of two records or more) among the pairs, by Splink's clustering on DuckDB."""
    if not pairs:
        return 0
    import pandas as pd
    from splink import DuckDBAPI
    from splink.clustering import cluster_pairwise_predictions_at_threshold

    edges = pd.DataFrame(pairs, columns=["unique_id_l", "unique_id_r"])
    nodes = pd.DataFrame({"unique_id": pd.unique(edges[["unique_id_l", "unique_id_r"]].to_numpy().ravel())})
    connection = duckdb_connection()
    clusters: Any = cluster_pairwise_predictions_at_threshold(nodes, edges, DuckDBAPI(connection), "unique_id")
    # Every node is in a pair, so every cluster has two records or more.
    count = int(clusters.as_pandas_dataframe()["cluster_id"].nunique())
    connection.close()
    return count
