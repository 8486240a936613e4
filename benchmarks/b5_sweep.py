"""B5 sweep: a registry-wide dedup sweep of a labelled synthetic registry, time, memory, precision/recall.

1. Creates a database, migrates it and COPYs `--records` labelled synthetic people (registry_generator:
   households, a share registered twice with corruptions) into `beneficiaries`, sealed as registration
   stores them; the person each record belongs to is kept beside them in `bench_labels`, the label.
2. Stores the match model the sweep scores with: the shipped one if the service has it, else one trained
   with `training.train` on the first `--train-records` records, its prior scaled to the registry's size
   (the chance that two records picked at random are one person falls as the registry grows).
3. Runs `cbi-service dedup sweep` as its own process (the code path of POST /v1/dedup/sweeps' job), and
   prints its wall time, the peak resident memory of it and its worker processes (sampled), candidate pairs
   per record, pairs at or above the review threshold, and their precision and recall against the labels.
4. With `--spark-records N`, on a registry of N records: the sweep on Spark local[2] and on DuckDB, and
   whether both found the same pairs.

Target at 1,000,000 records on 2 cores: <= 10 minutes, peak <= 4 GiB.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/b5_sweep.py --records 1000000 --spark-records 20000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import date
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from registry_generator import FastRegistry

from benchmarks.common import (
    ROOT,
    SEALED_COLUMNS,
    PeakMemory,
    bench_keyring,
    libpq,
    machine,
    new_api_key,
    scratch_database,
    sealed_values,
)
from cbi_service.auth.roles import Role
from cbi_service.beneficiaries.personal import Personal
from cbi_service.kit.ids import new_id

COLUMNS = (
    "id", "status", "sex", "nationality", "location_country", "household_size", "consent_date", "consent_purpose",
    "registered_by", *SEALED_COLUMNS,
)  # fmt: skip
COPY_BATCH = 50_000


async def load(url: str, records: int, seed: int, registrar: uuid.UUID) -> tuple[float, list[tuple[str, object]]]:
    """COPY the registry in; returns the seconds it took and the first records (for training)."""
    started = time.perf_counter()
    sample: list[tuple[str, object]] = []
    ring = await bench_keyring(url)
    conn = await asyncpg.connect(url)
    try:
        # The labels beside the registry (its references are sealed): who each record really is.
        await conn.execute("CREATE TABLE bench_labels (id uuid PRIMARY KEY, person text NOT NULL)")
        labels: list[tuple[object, str]] = []
        rows: list[tuple[object, ...]] = []
        for person, record in FastRegistry(seed).records(records):
            ident = new_id()
            if len(sample) < 20_000:
                sample.append((str(ident), record))
            personal = Personal(
                " ".join(record.given) or "x", " ".join(record.family) or "x", record.date_of_birth, record.phone,
                f"p{person}", [],
            )  # fmt: skip
            rows.append((
                ident, "active", record.sex, record.nationality or "VE", "CO", 1, date(2026, 11, 1), "benchmark",
                registrar, *sealed_values(ring, ident, personal, record),
            ))  # fmt: skip
            labels.append((ident, f"p{person}"))
            if len(rows) == COPY_BATCH:
                await conn.copy_records_to_table("beneficiaries", records=rows, columns=COLUMNS)
                await conn.copy_records_to_table("bench_labels", records=labels, columns=("id", "person"))
                rows, labels = [], []
        if rows:
            await conn.copy_records_to_table("beneficiaries", records=rows, columns=COLUMNS)
            await conn.copy_records_to_table("bench_labels", records=labels, columns=("id", "person"))
        await conn.execute("VACUUM (ANALYZE) beneficiaries")
    finally:
        await conn.close()
    return time.perf_counter() - started, sample


async def store_model(url: str, sample: list[tuple[str, object]], train_records: int, registry: int) -> str:
    """The shipped model if there is one, else one trained on the sample; returns what was used."""
    from dataclasses import replace

    from cbi_service.dedup.model import default_model
    from cbi_service.dedup.service import store_model as store
    from cbi_service.dedup.training import train
    from cbi_service.kit.db import make_session_factory
    from cbi_service.kit.settings import to_asyncpg_url

    try:
        default_model()
    except FileNotFoundError:
        pass
    else:
        return "the shipped model"
    started = time.perf_counter()
    trained = await asyncio.to_thread(train, sample[:train_records], version="b5-sample")  # type: ignore[arg-type]
    model = replace(trained, prior=trained.prior * train_records / registry)
    seconds = time.perf_counter() - started
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(to_asyncpg_url(url))
    try:
        async with make_session_factory(engine).begin() as session:
            await store(session, None, model)
    finally:
        await engine.dispose()
    return (
        f"trained on {train_records} records in {seconds:.0f}s (prior {trained.prior:.3g} scaled to"
        f" {model.prior:.3g} for {registry} records)"
    )


STDERR: list[Path] = []  # --stderr FILE: where the sweeps' own log goes


def sweep(url: str, key: str, *args: str) -> tuple[float, int, str]:
    """`cbi-service dedup sweep` as its own process: (seconds, peak RSS of its tree in bytes, stdout)."""
    env = {**os.environ, "DATABASE_URL": url, "CBI_API_KEY": key, "CBI_LOG_FORMAT": "console"}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "cbi_service", "dedup", "sweep", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    memory = PeakMemory(process.pid, 0.2, tree=True)
    memory.start()
    out, err = process.communicate()
    memory.running = False
    seconds = time.perf_counter() - started
    if STDERR:
        with STDERR[0].open("a") as log:
            log.write(err)
    if process.returncode != 0:
        raise SystemExit(f"dedup sweep failed ({process.returncode}):\n{err}")
    progress = [line for line in err.splitlines() if "chunks" in line]
    if progress:
        print(f"  last progress line: {progress[-1].strip()}")
    return seconds, memory.peak, out.strip()


async def quality(url: str, sweep_id: uuid.UUID) -> tuple[int, int, int]:
    """(pairs found, of them one person's, pairs of one person in the registry), on the labels."""
    conn = await asyncpg.connect(url)
    try:
        found = await conn.fetchval("SELECT count(*) FROM dedup_sweep_pairs WHERE sweep_id = $1", sweep_id)
        right = await conn.fetchval(
            """SELECT count(*) FROM dedup_sweep_pairs AS p
               JOIN beneficiaries AS l ON l.id = p.low_id JOIN beneficiaries AS h ON h.id = p.high_id
               JOIN bench_labels AS lp ON lp.id = l.id JOIN bench_labels AS hp ON hp.id = h.id
               WHERE p.sweep_id = $1 AND lp.person = hp.person""",
            sweep_id,
        )
        true = await conn.fetchval(
            "SELECT coalesce(sum(n * (n - 1) / 2), 0) FROM"
            " (SELECT count(*) AS n FROM bench_labels GROUP BY person) AS people"
        )
    finally:
        await conn.close()
    return int(found), int(right), int(true)


async def sweep_pairs(url: str, sweep_id: uuid.UUID) -> set[tuple[uuid.UUID, uuid.UUID]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT low_id, high_id FROM dedup_sweep_pairs WHERE sweep_id = $1", sweep_id)
    finally:
        await conn.close()
    return {(row["low_id"], row["high_id"]) for row in rows}


async def latest_sweep(url: str) -> tuple[uuid.UUID, int, int]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow("SELECT id, records, pairs_compared FROM dedup_sweeps ORDER BY id DESC LIMIT 1")
    finally:
        await conn.close()
    return row["id"], row["records"], row["pairs_compared"]


async def registry(admin_url: str, records: int, args: argparse.Namespace, name: str) -> None:
    async with scratch_database(admin_url, name) as url:
        registrar, key = await new_api_key(url, "b5-registrar", Role.registrar)
        loaded, sample = await load(url, records, args.seed, registrar)
        print(f"\nregistry: {records} records loaded with COPY in {loaded:.0f}s")
        print(f"model: {await store_model(url, sample, min(args.train_records, records), records)}")
        del sample
        if name.endswith("spark"):
            seconds, peak, _ = sweep(url, key, "--engine", "spark", "--spark-master", "local[2]")
            spark_id, _, _ = await latest_sweep(url)
            print(f"spark local[2]: {seconds:.0f}s, peak {peak / 2**30:.2f} GiB")
        seconds, peak, out = sweep(url, key, "--workers", str(args.workers))
        sweep_id, swept, compared = await latest_sweep(url)
        found, right, true = await quality(url, sweep_id)
        print(f"duckdb ({args.workers} workers): {out}")
        print(f"time: {seconds:.0f}s (target <= 600s at 1,000,000); peak RSS {peak / 2**30:.2f} GiB (target <= 4)")
        print(f"candidate pairs per record: {compared / max(swept, 1):.2f}")
        print(f"pairs at or above the review threshold: {found}; of one person: {right}; true pairs: {true}")
        print(f"precision {right / max(found, 1):.4f}, recall {right / max(true, 1):.4f}")
        if name.endswith("spark"):
            same = await sweep_pairs(url, spark_id) == await sweep_pairs(url, sweep_id)
            print(f"spark and duckdb found the same pairs: {same}")


async def run(args: argparse.Namespace) -> None:
    admin_url = libpq(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    print(f"machine: {machine()}")
    suffix = uuid.uuid4().hex[:8]
    await registry(admin_url, args.records, args, f"cbi_b5_{suffix}")
    if args.spark_records:
        await registry(admin_url, args.spark_records, args, f"cbi_b5_{suffix}_spark")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--spark-records", type=int, default=20_000, help="0: no Spark run")
    parser.add_argument("--train-records", type=int, default=5_000)
    parser.add_argument("--workers", type=int, default=2, help="DuckDB worker processes")
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--stderr", type=Path, help="append the sweeps' own log (per chunk timings) to this file")
    args = parser.parse_args()
    if args.stderr:
        STDERR.append(args.stderr)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
