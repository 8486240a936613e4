"""B5: ledger export of 1,000,000 entries in CSV, Parquet and XLSX, and offline verification of the files.

The service (`cbi-service serve`, worker off) runs as its own OS process on a fresh database of the
PostgreSQL server in DATABASE_URL; entries are loaded beforehand through the ledger's bulk posting API
(two-entry transfers among 1,000 accounts, 10,000 per call). For each format the export is downloaded
over HTTP to a file while the server's resident memory is sampled every 50 ms; the figures are wall time,
throughput and peak RSS, each format on a freshly started server. The CSV and Parquet files are checked by
`cbi-service ledger verify` (a separate process, as an auditor would run it), timed.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python benchmarks/b5_export.py [--entries N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    PeakMemory,
    free_port,
    libpq,
    machine,
    new_api_key,
    scratch_database,
    start_service,
    stop_processes,
    wait_http,
)
from cbi_service.auth.roles import Role  # noqa: E402
from cbi_service.kit.db import make_engine  # noqa: E402
from cbi_service.kit.settings import Settings  # noqa: E402
from ledger import EntrySpec, Ledger, TransactionSpec  # noqa: E402

ACCOUNTS = 1_000
PER_CALL = 10_000
FORMATS = ("csv", "parquet", "xlsx")
MEMORY_TARGET = 200 * 2**20


async def load(db_url: str, entries: int) -> float:
    """Post entries/2 transfers through `Ledger.post_many`; returns the seconds it took."""
    settings = Settings(database_url=db_url)
    assert settings.async_database_url
    engine = make_engine(settings.async_database_url, settings)
    rng = random.Random(5)
    started = time.perf_counter()
    try:
        async with engine.begin() as conn:
            ledger = Ledger(conn)
            funding = await ledger.create_account("bench:funding", "COP", "equity")
            accounts = [await ledger.create_account(f"bench:acct:{i:04d}", "COP", "asset") for i in range(ACCOUNTS)]
        transfers = entries // 2
        for first in range(0, transfers, PER_CALL):
            specs = []
            for n in range(first, min(first + PER_CALL, transfers)):
                source = funding if n < ACCOUNTS else rng.choice(accounts)
                target = accounts[n % ACCOUNTS]
                if target.id == source.id:
                    target = funding
                amount = rng.randrange(1, 50_000_00)
                specs.append(
                    TransactionSpec(
                        key=f"bench-{n}",
                        entries=[EntrySpec(source.id, -amount), EntrySpec(target.id, amount)],
                        kind="transfer",
                        references={"batch": str(first // PER_CALL)},
                    )
                )
            async with engine.begin() as conn:
                await Ledger(conn).post_many(specs)
    finally:
        await engine.dispose()
    return time.perf_counter() - started


async def api_key(db_url: str) -> dict[str, str]:
    _, raw = await new_api_key(db_url, "bench auditor", Role.auditor)
    return {"Authorization": f"Bearer {raw}"}


async def download(base: str, headers: dict[str, str], fmt: str, path: Path, pid: int) -> tuple[float, int]:
    """(seconds, peak RSS of the server) for one export streamed to `path`."""
    sampler = PeakMemory(pid, 0.05, tree=False)
    sampler.start()
    started = time.perf_counter()
    async with (
        httpx.AsyncClient(base_url=base, timeout=None) as http,
        http.stream("GET", "/v1/ledger/export", params={"format": fmt}, headers=headers) as response,
    ):
        response.raise_for_status()
        with path.open("wb") as file:
            async for chunk in response.aiter_raw():
                file.write(chunk)
    elapsed = time.perf_counter() - started
    sampler.running = False
    sampler.join()
    return elapsed, sampler.peak


def verify(path: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cbi_service", "ledger", "verify", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"verify failed: {done.stderr.strip()}")
    return elapsed, done.stdout.strip()


async def run(entries: int, server_url: str) -> None:
    async with scratch_database(libpq(server_url, "postgres"), f"cbi_b5_{uuid.uuid4().hex[:8]}") as db_url:
        await measure(entries, db_url)


async def measure(entries: int, db_url: str) -> None:
    service: subprocess.Popen[bytes] | None = None
    try:
        load_seconds = await load(db_url, entries)
        headers = await api_key(db_url)
        env = {**os.environ, "DATABASE_URL": db_url, "CBI_LOG_LEVEL": "WARNING", "CBI_LOG_FORMAT": "json"}
        print("B5 ledger export")
        print(f"  machine: {machine()}")
        print(f"  loaded {entries:,} entries ({entries // 2:,} transfers) in {load_seconds:.1f} s")
        print(
            f"  peak RSS of the server process, each format on a fresh server; target under {MEMORY_TARGET >> 20} MiB"
        )
        verify_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        with tempfile.TemporaryDirectory(prefix="cbi-b5-") as tmp:
            for fmt in FORMATS:
                port = free_port()
                service = start_service(port, env)
                base = f"http://127.0.0.1:{port}"
                await wait_http(f"{base}/healthz")
                idle = psutil.Process(service.pid).memory_info().rss
                path = Path(tmp) / f"ledger.{fmt}"
                seconds, peak = await download(base, headers, fmt, path, service.pid)
                stop_processes([service], 30)
                service = None
                verdict = "ok" if peak < MEMORY_TARGET else "OVER TARGET"
                print(
                    f"  export {fmt:8} {seconds:7.1f} s  {entries / seconds:9,.0f} entries/s  "
                    f"{path.stat().st_size / 2**20:7.1f} MiB  peak RSS {peak / 2**20:5.0f} MiB "
                    f"(idle {idle / 2**20:.0f}) {verdict}"
                )
            for fmt in ("csv", "parquet"):
                seconds, summary = await asyncio.to_thread(verify, Path(tmp) / f"ledger.{fmt}", verify_env)
                outcome = summary.split(": ", 1)[1]
                print(f"  verify {fmt:8} {seconds:7.1f} s  {entries / seconds:9,.0f} entries/s  ({outcome})")
    finally:
        if service is not None:
            stop_processes([service], 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000, help="ledger entries to export (even)")
    args = parser.parse_args()
    server_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    asyncio.run(run(args.entries, server_url))


if __name__ == "__main__":
    main()
